"""The SQLite bulk statement (one `INSERT ... SELECT` per batch, rows cut out of bound blobs) stores exactly what
Feast's row-by-row upsert stores: same values, same SQLite types, NULLs, negative timestamps, several statements
per batch, and the upsert of existing rows; a statement failing on the writer thread rolls the publish back.
No Spark, no Feast store (the Feast comparisons are in tests/ubp/stages/test_publish.py)."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest


def _writer(db, monkeypatch=None):
    from feast.value_type import ValueType

    from ubp.publish import SqliteWriter, ViewLayout

    view = ViewLayout(name="v", path="/nowhere", join_key="client_id", timestamp_field="as_of", created_field=None,
                      features=(("vec", ValueType.FLOAT_LIST), ("name", ValueType.STRING), ("n", ValueType.INT64)))
    config = SimpleNamespace(online_store=SimpleNamespace(vector_enabled=False),
                             registry=SimpleNamespace(enable_online_feature_view_versioning=False))
    con = sqlite3.connect(db)
    con.execute('CREATE TABLE "p_v" (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, '
                'vector_value BLOB, event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))')
    con.execute('CREATE INDEX "p_v_ek" ON "p_v" (entity_key)')
    con.commit()
    con.close()
    return SqliteWriter(db, "p", view, config), view


def _reference(db, view, keys, ts, batch):
    """Feast's upsert, one row at a time, of the same encoded values (encode_column is checked against Feast in
    tests/ubp/publish/test_encoding.py)."""
    from ubp.publish import encode_column, encode_entity_keys, sqlite_ts

    ek = encode_entity_keys(keys, view.join_key)
    ets = sqlite_ts(ts)
    con = sqlite3.connect(db)
    for fname, vtype in view.features:
        vals, texts = encode_column(batch.column(fname), vtype)
        for i in range(len(keys)):
            con.execute('INSERT INTO "p_v" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                        "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                        "created_ts = excluded.created_ts", (ek[i], fname, vals[i], texts[i], ets[i], None))
    con.commit()
    con.close()


def _dump(db):
    con = sqlite3.connect(db)
    rows = sorted(con.execute('SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts '
                              'FROM "p_v"').fetchall())
    con.close()
    return [(r, [type(x).__name__ for x in r]) for r in rows]


def _batch(n, seed, dim=None):
    rng = np.random.default_rng(seed)
    keys = rng.permutation(np.concatenate([[-5, 0, 2**40], rng.integers(1, 10**6, n - 3)])).astype(np.int64)
    dims = rng.integers(0, 6, n) if dim is None else np.full(n, dim)  # ragged vectors, some empty; or fixed
    vec = pa.array([rng.standard_normal(d).astype(np.float32).tolist() for d in dims], pa.list_(pa.float32()))
    names = pa.array([None if i % 7 == 0 else ["a", "héllo", ""][i % 3] for i in range(n)], pa.string())
    counts = pa.array(rng.integers(-(2**40), 2**40, n), pa.int64())
    ts = rng.integers(-(10**15), 4 * 10**15, n)  # microseconds, before and after 1970
    return keys, ts, pa.table({"vec": vec, "name": names, "n": counts})


def test_bulk_statement_matches_row_by_row_upsert(tmp_path):
    ours, ref = str(tmp_path / "ours.db"), str(tmp_path / "ref.db")
    w, view = _writer(ours)
    _writer(ref)[0].close()
    w.max_statement_bytes = 200  # several statements per batch
    for seed in (0, 1):  # the second batch overwrites some keys of the first (upsert) and adds new ones
        keys, ts, batch = _batch(40, seed)
        if seed == 1:
            keys[:10] = _batch(40, 0)[0][:10]
        w.write(keys, ts, None, batch)
        _reference(ref, view, keys, ts, batch)
    w.close()
    got, want = _dump(ours), _dump(ref)
    assert got == want and len(got) == 3 * len({*_batch(40, 0)[0].tolist(), *keys.tolist()})


def test_fixed_length_vectors_match_row_by_row_upsert(tmp_path):
    """Fixed-length float vectors go through the matrix path (one row gather per statement instead of a list of
    records): a sliced array, a chunked column and several statements per batch store what the row-by-row upsert
    of `encode_column`'s records stores; ragged vectors keep the record path."""
    from ubp.publish import encode_float_lists, float_list_matrix

    ours, ref = str(tmp_path / "ours.db"), str(tmp_path / "ref.db")
    w, view = _writer(ours)
    _writer(ref)[0].close()
    w.max_statement_bytes = 300  # several statements per batch
    keys, ts, fixed = _batch(50, 2, dim=5)
    k2, t2, more = _batch(20, 3, dim=5)
    k2 += 10**7  # new keys
    chunked = pa.concat_tables([fixed.slice(3), more])  # two chunks, the first one sliced
    keys, ts = np.concatenate([keys[3:], k2]), np.concatenate([ts[3:], t2])
    mat = float_list_matrix(chunked.column("vec"))
    assert mat.shape == (67, 5 + 4 * 5)  # tag, length, packed tag, length, floats
    assert [r.tobytes() for r in mat] == encode_float_lists(chunked.column("vec"))
    assert float_list_matrix(_batch(40, 0)[2].column("vec")) is None  # ragged: record path
    for k, t, b in [(keys, ts, chunked), _batch(40, 0)]:
        w.write(k, t, None, b)
        _reference(ref, view, k, t, b)
    w.close()
    got = _dump(ours)
    assert got == _dump(ref) and len(got) == 3 * len({*keys.tolist(), *_batch(40, 0)[0].tolist()})


def test_failed_statement_on_the_writer_thread_rolls_the_publish_back(tmp_path):
    """Statements run on a writer thread: an error there (here a trigger refusing one key of the second statement)
    reaches the caller at close, and the whole publish is rolled back (nothing of the first statement stays)."""
    db = str(tmp_path / "ours.db")
    w, view = _writer(db)
    keys, ts, batch = _batch(40, 0, dim=3)
    from ubp.publish import encode_entity_keys

    last = keys[np.argsort(keys.astype("<i8").view(">u8"))[-1]]  # the last key in statement order
    con = sqlite3.connect(db)
    con.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON \"p_v\" WHEN NEW.entity_key = x'"
                f"{encode_entity_keys(np.array([last]), 'client_id')[0].hex()}' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    con.commit()
    con.close()
    w.max_statement_bytes = 400  # several statements: the refused key is in the last one
    w.write(keys, ts, None, batch)
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        w.close()
    assert _dump(db) == []


