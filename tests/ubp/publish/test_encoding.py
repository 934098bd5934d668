"""The vectorised serialisers produce exactly Feast's bytes (no Spark, no store): entity keys, varints, float lists,
low-cardinality columns with nulls, and the timestamps the SQLite / Redis stores keep."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest


def test_entity_keys_and_int64_match_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from ubp.publish import encode_entity_keys
    from ubp.publish.encoding import _varints

    rng = np.random.default_rng(0)
    powers = (1 << np.arange(63)).astype(np.int64)
    vals = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64), powers, powers - 1, [0, -1]])
    assert _varints(vals, 0x20) == [Value(int64_val=int(v)).SerializeToString() for v in vals]
    want = [serialize_entity_key(EntityKey(join_keys=["sku"], entity_values=[Value(int64_val=int(v))]), 3)
            for v in vals[:500]]
    assert encode_entity_keys(vals[:500], "sku") == want
    assert encode_entity_keys(vals[:3], "sku", b"ubp") == [w + b"ubp" for w in want[:3]]


@pytest.mark.parametrize(
    "arr,vtype",
    [
        (pa.array([[1.5, -2.0], [], [3.0, 4.0, 5.0], None], pa.list_(pa.float32())), "FLOAT_LIST"),
        (pa.array([[0.25] * 128] * 5, pa.list_(pa.float32())), "FLOAT_LIST"),
        (pa.array(["gru-v1", None, "gru-v2", "gru-v1"]), "STRING"),
        (pa.array([True, False, None]), "BOOL"),
        (pa.array([datetime(2024, 2, 1, 0, 0, 0, 7, tzinfo=UTC), None], pa.timestamp("us", tz="UTC")), "UNIX_TIMESTAMP"),
        (pa.array([5, None, 300], pa.int64()), "INT64"),
    ],
)
def test_columns_match_feast(arr, vtype):
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    from ubp.publish import encode_column

    vt = ValueType[vtype]
    protos = python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vt)
    vals, texts = encode_column(arr, vt)
    assert vals == [p.SerializeToString() for p in protos]
    assert texts == [extract_text_and_num(p, False)[0] for p in protos]


def test_store_timestamps_match_feast():
    from google.protobuf.timestamp_pb2 import Timestamp

    from ubp.publish import redis_ts, sqlite_ts

    ts = [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, 12, 30, 5, 123456, tzinfo=UTC)]
    us = np.array([int(t.timestamp() * 1_000_000) for t in ts] * 2, dtype=np.int64)
    naive = [t.replace(tzinfo=None) for t in ts] * 2
    assert sqlite_ts(us) == [int(t.timestamp()) for t in naive]  # Feast's sqlite adapter on naive UTC datetimes
    want = []
    for t in ts * 2:
        p = Timestamp()
        p.FromDatetime(t)
        want.append(p.SerializeToString())
    assert redis_ts(us) == want
