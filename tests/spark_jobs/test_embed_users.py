"""Spark batch inference (`embed-users`) gives the same vectors as in-process `encode`, loads the model once per
worker, skips users without events, and is idempotent per (model_version, as_of)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from user_model_fixtures import AS_OF, make_sequences, write_lakehouse

from ubp.errors import UbpError
from ubp.tables import USER_SEQUENCES

TINY = dict(emb_dim=16, hidden=24, n_layers=2, dropout=0.0, batch_size=16)


def _with_empty_users(table: pa.Table, ids: list[int]) -> pa.Table:
    rows = table.slice(0, len(ids)).to_pylist()
    for row, cid in zip(rows, ids, strict=True):
        row.update(client_id=cid, n_events=0, seq_len=0)
        for c in ("event_type", "sku", "category", "price", "url", "query", "day", "week", "sku_raw", "ts", "name"):
            row[c] = []
    return pa.concat_tables([table, pa.Table.from_pylist(rows, schema=USER_SEQUENCES.arrow_schema())])


@pytest.fixture
def trained(settings):
    from deltalake import write_deltalake

    from ubp.stages.train_user_model import train_user_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    write_lakehouse(settings, n_users=30, seed=4, min_len=1, max_len=25)
    table = _with_empty_users(make_sequences(30, seed=4, min_len=1, max_len=25), [9001, 9002])
    write_deltalake(str(settings.table_path("user_sequences")), table, mode="overwrite")
    result = train_user_model(settings, max_epochs=1, overrides=TINY, show_progress=False)
    yield settings, result
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_spark_inference_equals_in_process_encode(spark, trained, tmp_path, monkeypatch):
    from deltalake import DeltaTable, write_deltalake
    from ubp.models.infer_user import encode_batches, load_model

    from ubp.reader import iter_batches
    from ubp.stages.embed_users import embed_users

    settings, result = trained
    version = result["version"]
    load_log = tmp_path / "loads.txt"
    monkeypatch.setenv("UBP_MODEL_LOAD_LOG", str(load_log))  # test hook (ubp/hooks.py)
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "4")  # many batches per worker
    try:
        out = embed_users(settings)  # None = CURRENT
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    assert out["model_version"] == version
    assert out["rows"]["user_profiles"] == 30 and out["users_without_events"] == 2
    pids = load_log.read_text().split()
    assert len(pids) == len(set(pids)) <= 2  # once per Python worker, although ~8 batches were encoded

    got = DeltaTable(str(settings.table_path("user_profiles"))).to_pyarrow_table().to_pandas()
    assert sorted(got["client_id"]) == list(range(1000, 1030))  # no row for 9001/9002
    model, _ = load_model(result["model_dir"], device="cpu")
    ref = {int(c): (int(n), z) for cids, ns, zs in encode_batches(
        model, iter_batches(settings.table_path("user_sequences"))) for c, n, z in zip(cids, ns, zs, strict=True)}
    assert set(ref) == set(got["client_id"])
    for row in got.itertuples():
        n, z = ref[row.client_id]
        assert row.n_events == n and row.model_version == version
        np.testing.assert_allclose(np.asarray(row.embedding), z, atol=1e-5)
    assert {ts.to_pydatetime().replace(tzinfo=None) for ts in got["as_of"]} == {AS_OF.replace(tzinfo=None)}

    # idempotent: a rerun replaces this (model_version, as_of) slice and leaves other slices alone
    other = DeltaTable(str(settings.table_path("user_profiles"))).to_pyarrow_table().slice(0, 1)
    other = other.set_column(other.schema.get_field_index("model_version"), "model_version",
                             pa.array(["user-other"], pa.string()))
    write_deltalake(str(settings.table_path("user_profiles")), other, mode="append")
    again = embed_users(settings, model_version=version, engine="pandas")  # the mapInPandas path, same rows
    assert again["rows"]["user_profiles"] == 30
    final = DeltaTable(str(settings.table_path("user_profiles"))).to_pyarrow_table()
    assert final.num_rows == 31
    assert final.filter(pa.compute.equal(final["model_version"], "user-other")).num_rows == 1
    for row in final.filter(pa.compute.equal(final["model_version"], version)).to_pylist():
        n, z = ref[row["client_id"]]
        assert row["n_events"] == n
        np.testing.assert_allclose(np.asarray(row["embedding"]), z, atol=1e-5)


def test_embed_refuses_other_vocabulary_and_unknown_model(spark, trained):
    from ubp.stages.embed_users import embed_users

    settings, _ = trained
    with pytest.raises(UbpError, match="no user model version"):
        embed_users(settings, model_version="user-nope")
    write_lakehouse(settings, n_users=5, seed=1, vocab="v-other")
    with pytest.raises(UbpError, match="model trained on vocabulary v-test, table uses v-other"):
        embed_users(settings)


@pytest.mark.slow
def test_a_next_event_member_embeds_into_member_profiles_read_as_gru_member(spark, settings):
    """A transformer member goes through the same Spark job: its rows land in `user_member_profiles` and the
    ensemble's `gru_next_sku` loader reads them back, equal to the in-process encode."""
    from ubp.models.infer_user import encode_batches, load_model
    from ubp.spark_jobs.ensemble import read_member, select_member

    from ubp.reader import iter_batches
    from ubp.stages.embed_users import embed_users
    from ubp.stages.train_user_model import train_user_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_lakehouse(settings, n_users=20, seed=5, min_len=1, max_len=12)
        result = train_user_model(settings, member="next_sku", max_epochs=1, show_progress=False,
                                  overrides=dict(emb_dim=16, hidden=16, n_heads=2, n_layers=1, batch_size=8))
        out = embed_users(settings, member="next_sku")
        assert out["model_version"] == result["version"] and out["rows"]["user_member_profiles"] == 20
        got = read_member(select_member(settings, "gru_next_sku"))
        model, _ = load_model(result["model_dir"], device="cpu")
        ref = {int(c): z for cids, _, zs in encode_batches(model, iter_batches(settings.table_path("user_sequences")))
               for c, z in zip(cids, zs, strict=True)}
    finally:
        torch.set_num_threads(threads)
    assert got.client_ids.tolist() == sorted(ref) and got.values.shape == (20, 16)
    np.testing.assert_allclose(got.values, np.stack([ref[int(c)] for c in got.client_ids]), atol=1e-5)
