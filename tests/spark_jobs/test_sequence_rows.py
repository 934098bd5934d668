"""The executor side of `ubp sequences` (numpy + Arrow, no Spark): tokenising, ordering, truncation, streaming."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ubp.spark_jobs.sequence_rows import SequenceSpec, stream_user_rows, user_rows, write_files

from ubp.tables import EVENT_TYPE_CODE, FIRST_TOKEN_ID, OOV_ID, PAD_ID, USER_SEQUENCES

AS_OF = datetime(2024, 1, 10, tzinfo=UTC)
DAY0 = 19723  # 2024-01-01 as an epoch day
EVENT_SCHEMA = pa.schema([("client_id", pa.int64()), ("ts_us", pa.int64()), ("etype", pa.int32()),
                          ("sku", pa.int64()), ("url", pa.int64()), ("category", pa.int64()), ("price", pa.int32()),
                          ("query", pa.list_(pa.int32()))])
MAPS = {"sku": {10: 4, 11: 5}, "url": {100: 4}, "category": {500: 4}, "price": {-1: 4, 10**9: 5, 7: 6},
        "query": {0: 4, 1: 5, 2: 6}, "day": {DAY0 + d: d + FIRST_TOKEN_ID for d in range(9)},
        "week": {0: 4, 1: 5}}


def ev(cid, day, sec, etype, sku=None, url=None, category=None, price=None, query=None):
    ts = ((DAY0 + day) * 86_400 + sec) * 1_000_000
    return (cid, ts, EVENT_TYPE_CODE[etype], sku, url, category, price, query)


def table(rows) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(EVENT_SCHEMA.names, r, strict=True)) for r in rows], schema=EVENT_SCHEMA)


def spec(max_len=126, maps=MAPS) -> SequenceSpec:
    return SequenceSpec.from_maps(maps, AS_OF, max_len, "v1")


def by_user(t: pa.Table) -> dict[int, dict]:
    return {r["client_id"]: r for r in t.to_pylist()}


def test_tokens_order_and_truncation():
    rows = [
        ev(1, 2, 5, "product_buy", sku=10, category=500, price=7),
        ev(1, 0, 0, "page_visit", url=100),
        ev(1, 0, 0, "add_to_cart", sku=11, category=501, price=-1),  # same second: type code 0 first
        ev(1, 1, 0, "search_query", query=[0, 1, 2, 99, None]),  # unknown / null / missing codes -> OOV
        ev(1, 1, 3, "search_query"),  # no query -> 16 PAD
        ev(1, 9, 0, "page_visit", url=7),  # a day after the vocabulary's days
        ev(2, 3, 0, "remove_from_cart", sku=99, price=10**9),  # sku not in the catalog (category null)
    ]
    out = user_rows(table(rows), spec(max_len=5))
    assert out.schema == USER_SEQUENCES.arrow_schema()
    u1, u2 = by_user(out)[1], by_user(out)[2]
    assert u1["n_events"] == 6 and u1["seq_len"] == 5  # the oldest (the add at day 0, 00:00) is dropped
    code = {t: c + FIRST_TOKEN_ID for t, c in EVENT_TYPE_CODE.items()}
    assert u1["event_type"] == [code["page_visit"], code["search_query"], code["search_query"], code["product_buy"],
                                code["page_visit"]]
    assert u1["sku"] == [PAD_ID, PAD_ID, PAD_ID, 4, PAD_ID] and u1["sku_raw"] == [-1, -1, -1, 10, -1]
    assert u1["url"] == [4, PAD_ID, PAD_ID, PAD_ID, OOV_ID]
    assert u1["category"] == [PAD_ID, PAD_ID, PAD_ID, 4, PAD_ID] and u1["price"] == [PAD_ID, PAD_ID, PAD_ID, 6, PAD_ID]
    assert u1["query"] == [4, 5, 6] + [OOV_ID] * 13 + [PAD_ID] * 16
    # day 9 is after the vocabulary's last day (OOV); its week (1) is still in the vocabulary
    assert u1["day"] == [4, 5, 5, 6, OOV_ID] and u1["week"] == [4, 4, 4, 4, 5]
    assert u1["first_ts"] == datetime(2024, 1, 1, tzinfo=UTC) and u1["last_ts"] == datetime(2024, 1, 10, tzinfo=UTC)
    assert u1["ts"][0] == (DAY0 * 86_400) and u1["as_of"] == AS_OF and u1["vocab_version"] == "v1"
    assert u2["sku"] == [OOV_ID] and u2["category"] == [OOV_ID] and u2["price"] == [5] and u2["query"] == []
    # an empty vocabulary maps every product value to OOV
    empty = by_user(user_rows(table(rows), spec(maps={})))[2]
    assert empty["sku"] == empty["price"] == empty["day"] == [OOV_ID]


def test_equal_timestamps_are_ordered_by_query_tokens_whatever_the_input_order():
    rows = [ev(5, 0, 0, "search_query", query=[2, 0]), ev(5, 0, 0, "search_query", query=[1, 2]),
            ev(5, 0, 0, "search_query", query=[1, 0]), ev(5, 0, 0, "page_visit", url=100)]
    expect = [5, 4] + [OOV_ID] * 14 + [5, 6] + [OOV_ID] * 14 + [6, 4] + [OOV_ID] * 14
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        (row,) = user_rows(table([rows[i] for i in perm]), spec()).to_pylist()
        assert row["query"] == expect and row["url"] == [4] + [PAD_ID] * 3  # the visit's type code is lower


def test_streamed_chunks_carry_a_user_across_batches():
    rng = np.random.default_rng(0)
    rows = [ev(int(c), int(rng.integers(0, 8)), int(rng.integers(0, 86_400)), "page_visit", url=int(rng.integers(99, 102)))
            for c in np.repeat(np.arange(40), rng.integers(1, 30, 40))]  # grouped by user, as Spark delivers them
    t = table(rows)
    whole = user_rows(t, spec(max_len=7))
    streamed = pa.concat_tables(stream_user_rows(t.to_batches(max_chunksize=9), spec(max_len=7), chunk_rows=20))
    assert streamed.num_rows == 40 and streamed.to_pylist() == whole.to_pylist()
    # one user over many batches, between two small ones: three rows, the long one complete
    long = table([ev(1, 0, 0, "page_visit", url=100)] + [ev(2, 0, s, "page_visit", url=100) for s in range(50)]
                 + [ev(3, 0, 0, "page_visit", url=100)])
    parts = list(stream_user_rows(long.to_batches(max_chunksize=4), spec(max_len=7), chunk_rows=3))
    assert [r["n_events"] for p in parts for r in p.to_pylist()] == [1, 50, 1]


def test_written_files_carry_delta_statistics(tmp_path):
    rows = [ev(c, 1, s, "page_visit", url=100) for c in (3, 8) for s in (1, 2)]
    (meta,) = pa.Table.from_batches(list(write_files(table(rows).to_batches(), spec(), str(tmp_path)))).to_pylist()
    data = pq.read_table(tmp_path / meta["path"])
    assert data.num_rows == meta["num_records"] == 2 and meta["size"] == (tmp_path / meta["path"]).stat().st_size
    stats = json.loads(meta["stats"])
    assert stats["numRecords"] == 2 and stats["minValues"]["client_id"] == 3 and stats["maxValues"]["client_id"] == 8
    assert stats["minValues"]["as_of"] == "2024-01-10T00:00:00.000Z" and stats["nullCount"]["query"] == 0
    assert not list(write_files(iter([]), spec(), str(tmp_path)))  # an empty task writes no file


def test_max_len_must_be_positive():
    with pytest.raises(ValueError, match="max_len"):
        spec(max_len=0)


def test_product_events_carry_their_name_codes_and_no_other_event_does():
    name = list(range(16))
    names = {10: name, 11: [255, 256, None, *range(13)]}  # a code outside 0..255 or null -> OOV; 12: no name
    rows = [ev(1, 0, 0, "add_to_cart", sku=10), ev(1, 0, 1, "page_visit", url=100),
            ev(1, 0, 2, "search_query", query=[0]), ev(1, 0, 3, "product_buy", sku=11),
            ev(1, 0, 4, "remove_from_cart", sku=12), ev(2, 0, 0, "page_visit", url=100)]
    with_names = table(rows).append_column("name", pa.array(
        [names.get(r[3]) if r[2] in (0, 1, 2) else None for r in rows], pa.list_(pa.int32())))
    out = by_user(user_rows(with_names, spec(max_len=4)))  # the add (oldest) is cut: its codes go with it
    tok = [c + FIRST_TOKEN_ID for c in range(13)]
    assert out[1]["name"] == [255 + FIRST_TOKEN_ID, OOV_ID, OOV_ID, *tok] + [PAD_ID] * 16  # the buy, the remove
    assert out[2]["name"] == []  # no product event
    assert by_user(user_rows(with_names, spec()))[1]["name"][:16] == [c + FIRST_TOKEN_ID for c in name]
    assert by_user(user_rows(table(rows), spec(max_len=4)))[1]["name"] == [PAD_ID] * 32  # events without the column
