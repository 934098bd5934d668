"""Publish state (`ubp/publish/state.py`): what is online per view, saved without pickle, the per-entity diff that
decides what a publish writes and deletes, and the row Feast serves per entity (latest as-of, then latest created),
read file by file in Feast's key order. No Spark, no Feast store (tables written with deltalake)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from ubp.publish.layout import ViewLayout
from ubp.publish.state import PublishedState, diff_state, latest_per_key


def _view(path, created_field: str | None = "created_at") -> ViewLayout:
    from feast.value_type import ValueType

    return ViewLayout(name="v", path=str(path), join_key="client_id", timestamp_field="as_of",
                      created_field=created_field, features=(("n", ValueType.INT64),))


def _us(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def _write(path, rows: list[tuple[int, datetime, datetime, int]], mode: str = "append") -> None:
    from deltalake import write_deltalake

    keys, as_of, created, n = zip(*rows, strict=True)
    write_deltalake(str(path), pa.table({
        "client_id": pa.array(keys, pa.int64()),
        "as_of": pa.array(as_of, pa.timestamp("us", tz="UTC")),
        "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        "n": pa.array(n, pa.int64()),
    }), mode=mode)


def test_state_round_trips_without_pickle_and_a_missing_file_is_empty(tmp_path):
    empty = PublishedState.load(tmp_path / "none.npz")
    assert len(empty.keys) == 0 and empty.delta_version == -1 and empty.fingerprint == ""
    state = PublishedState(keys=np.array([-5, 2, 2**40], np.int64), ts=np.array([1, -2, 3], np.int64),
                           created=np.array([0, 7, 0], np.int64), delta_version=12, fingerprint="abc123")
    path = tmp_path / "sqlite" / "user_profile.npz"
    state.save(path)  # the folder is created
    assert sorted(p.name for p in path.parent.iterdir()) == ["user_profile.npz"]  # no temporary file left
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert set(z.files) == {"keys", "ts", "created", "delta_version", "fingerprint"}
    back = PublishedState.load(path)
    for name in ("keys", "ts", "created"):
        np.testing.assert_array_equal(getattr(back, name), getattr(state, name))
    assert (back.delta_version, back.fingerprint) == (12, "abc123")


def test_diff_writes_new_and_changed_rows_and_deletes_gone_keys():
    # nothing online yet: every key is written, nothing deleted
    write, gone = diff_state(PublishedState(), np.array([3, 1]), np.array([1, 1]), np.array([0, 0]))
    assert write.tolist() == [True, True] and gone.tolist() == []
    old = PublishedState(keys=np.array([1, 3, 5, 7]), ts=np.array([10, 30, 50, 70]), created=np.array([0, 0, 0, 0]))
    keys = np.array([1, 3, 4, 7, 9])  # 5 is gone; 4 and 9 (after every old key) are new
    ts = np.array([10, 31, 40, 70, 90])  # 3 has a newer as-of
    created = np.array([0, 0, 0, 1, 0])  # 7 was rewritten (same as-of, newer created)
    write, gone = diff_state(old, keys, ts, created)
    assert write.tolist() == [False, True, True, True, True]
    assert gone.tolist() == [5]
    same, none = diff_state(old, old.keys, old.ts, old.created)  # an unchanged table writes nothing
    assert not same.any() and none.tolist() == []


def test_latest_per_key_is_the_row_feast_serves_at_the_pinned_version(tmp_path):
    path = tmp_path / "t"
    _write(path, [(1, _us(1), _us(1), 10), (1, _us(2), _us(1), 11),  # a later as-of wins
                  (2, _us(3), _us(3, 1), 20), (2, _us(3), _us(3, 2), 21),  # same as-of: the later created wins
                  (-4, _us(1), _us(1), 30)])
    _write(path, [(2, _us(1), _us(9), 22)])  # version 1: an older as-of, however new, does not replace it
    _write(path, [(3, _us(5), _us(5), 40)])  # version 2: a new user
    keys, ts, created, files = latest_per_key(str(path), _view(path), 1)
    assert keys.tolist() == [-4, 1, 2]  # sorted; user 3 is not in version 1
    us = [int(d.timestamp()) * 1_000_000 for d in (_us(1), _us(2), _us(3), _us(1), _us(3, 2))]
    assert ts.tolist() == us[:3] and created.tolist() == [us[3], us[3], us[4]]
    assert files is not None and len(files) == 2  # one file per commit, ordered by smallest key in Feast's order
    keys, _, created, _ = latest_per_key(str(path), _view(path, created_field=None), 2)
    assert keys.tolist() == [-4, 1, 2, 3] and created.tolist() == [0, 0, 0, 0]  # no created column: zeros


def test_latest_per_key_keeps_only_the_views_vector_space(tmp_path):
    from deltalake import write_deltalake

    path = tmp_path / "spaces"
    write_deltalake(str(path), pa.table({
        "client_id": pa.array([1, 1, 2, 3], pa.int64()),
        "as_of": pa.array([_us(1), _us(5), _us(1), _us(2)], pa.timestamp("us", tz="UTC")),
        "space_id": ["v1", "v2", "v1", "v2"],  # user 1's newer row belongs to another space
    }))
    view = ViewLayout(**{**_view(path, created_field=None).__dict__, "where": (("space_id", "v1"),)})
    keys, ts, _, _ = latest_per_key(str(path), view, 0)
    assert keys.tolist() == [1, 2] and ts.tolist() == [int(_us(1).timestamp()) * 1_000_000] * 2


def test_latest_per_key_of_an_empty_table(tmp_path):
    from deltalake import write_deltalake

    path = tmp_path / "empty"
    write_deltalake(str(path), pa.table({"client_id": pa.array([], pa.int64()),
                                         "as_of": pa.array([], pa.timestamp("us", tz="UTC")),
                                         "created_at": pa.array([], pa.timestamp("us", tz="UTC")),
                                         "n": pa.array([], pa.int64())}))
    keys, ts, created, _ = latest_per_key(str(path), _view(path), 0)
    assert keys.dtype == np.int64 and len(keys) == len(ts) == len(created) == 0


def test_publisher_reads_delta_files_in_feast_key_order(tmp_path):
    """Files holding key ranges are read in Feast's key byte order (SQLite appends), whatever order the log lists
    them in; `iter_batches(files=...)` reads exactly the given files in that order and refuses unknown ones."""
    from deltalake import write_deltalake
    from feast.value_type import ValueType

    from ubp.errors import UbpError
    from ubp.publish import ViewLayout, latest_per_key
    from ubp.reader import iter_batches

    ids = np.arange(3000, dtype=np.int64)
    ids = ids[np.argsort(ids.astype("<i8").view(">u8"), kind="stable")]  # Feast's key byte order
    path = str(tmp_path / "t")
    for part in reversed(np.array_split(ids, 3)):  # appended last range first: the log lists them out of order
        write_deltalake(path, pa.table({"client_id": part, "as_of": pa.array(part * 1000, pa.timestamp("us"))}),
                        mode="append")
    view = ViewLayout(name="v", path=path, join_key="client_id", timestamp_field="as_of", created_field=None,
                      features=(("n", ValueType.INT64),))
    keys, _, _, files = latest_per_key(path, view, 2)
    assert sorted(keys.tolist()) == sorted(ids.tolist())
    read = np.concatenate([b.column(0).to_numpy() for b in iter_batches(path, columns=["client_id"], files=files)])
    assert read.tolist() == ids.tolist()  # the three ranges in key order
    with pytest.raises(UbpError, match="no data file"):
        list(iter_batches(path, files=["nope.parquet"]))
