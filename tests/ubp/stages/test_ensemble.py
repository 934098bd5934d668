"""Stage `ensemble` on a tiny hand-made lakehouse: every member block, the missing-user fill, float16, <= 2048
columns, an idempotent write, the challenge export of the ensemble table, and the opt-in text member."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
from target_fixtures import AS_OF, day, write_bronze, write_table

from ubp.tables import ITEM_CONTENT, ITEM_VECTORS, USER_AGGREGATES, USER_PROFILES, USER_SEQUENCES

NOW = datetime(2030, 1, 1)


@pytest.fixture
def lakehouse(spark, settings):
    """Bronze events/products + hand-made gold member tables for users 1..6 at AS_OF."""
    spec = []
    for u in range(1, 7):
        spec += [("page_visit", u, day(-5 + 0.1 * u), None, 100 + u % 3), ("add_to_cart", u, day(-4), 10 + u % 2, None),
                 ("product_buy", u, day(-3), 10 + u % 2, None)]
    spec += [("product_buy", 1, day(2), 11, None)]
    write_bronze(settings, spec, [(10, 1, 5), (11, 2, 7)])
    rng = np.random.default_rng(0)
    prof = [(u, [float(v) for v in rng.normal(size=8)], "user-v1", "user_profile_v1", AS_OF, 3, NOW)
            for u in range(1, 7)]
    prof += [(u, [0.0] * 8, "user-v0", "user_profile_v1", day(-30), 3, NOW) for u in range(1, 7)]  # older: ignored
    write_table(settings, USER_PROFILES, prof)
    agg = [(u, AS_OF, 3, [float(u), float(u * u), 1.0, float(10 - u)], "f1") for u in range(1, 6)]  # user 6 missing
    write_table(settings, USER_AGGREGATES, agg)
    seqs = []
    for u in range(1, 7):
        sku_raw = [-1, 10 + u % 2, 10 + u % 2]
        seqs.append((u, AS_OF, "voc", 3, day(-5), day(-3), 3, [7, 4, 6], [0, 5, 5], [0, 4, 4], [0, 4, 4], [4, 0, 0],
                     [0] * 48, [4, 5, 5], [4, 4, 4], sku_raw, [0, 1, 2], None))
    write_table(settings, USER_SEQUENCES, seqs)
    items = [(10, [1.0, 0.0, 0.0, 0.0], False, "item-v1", "item_vector_v1", "enc", AS_OF, NOW),
             (11, [0.0, 1.0, 0.0, 0.0], False, "item-v1", "item_vector_v1", "enc", AS_OF, NOW)]
    write_table(settings, ITEM_VECTORS, items)
    return settings


def test_ensemble_stage_writes_a_valid_table(spark, lakehouse):
    from ubp.reader import iter_batches
    from ubp.stages.ensemble import ensemble

    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "2")  # rows are built per Arrow batch on the executors: several batches of 2 users here
    try:
        out = ensemble(lakehouse, as_of=AS_OF)
    finally:
        spark.conf.set(key, before)
    assert out["stage"] == "ensemble" and out["version"].startswith("ensemble-")
    assert set(out["members"]) == {"gru", "aggregates", "factors"}  # the recipe's members; items is opt-in
    assert out["members"]["aggregates"]["filled"] == 1  # user 6 has no aggregates row
    assert out["columns"] == 8 + 4 + 2 * 64 + 1 <= 2048  # + has_aggregates
    # the fitted transforms are stored with the version: they rebuild the aggregates block from the raw features
    from safetensors.numpy import load_file
    from ubp.spark_jobs.ensemble import BlockTransform, load_aggregates_member

    stored = lakehouse.models_dir / "ensemble" / out["version"]
    meta = json.loads((stored / "ensemble.json").read_text())
    assert meta["transforms"]["aggregates"]["kind"] == "quantile" and meta["layout"]["aggregates"]["width"] == 4
    t = load_file(str(stored / "transforms.safetensors"))
    raw = load_aggregates_member(lakehouse, datetime.fromisoformat(out["as_of"]))
    rebuilt = BlockTransform("quantile", 1.0, t["aggregates.a"], t["aggregates.b"]).apply(raw.values)
    batches = list(iter_batches(lakehouse.table_path("user_profiles_ensemble")))
    df = __import__("pyarrow").Table.from_batches(batches).to_pandas().sort_values("client_id")
    assert df["client_id"].tolist() == [1, 2, 3, 4, 5, 6]
    x = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    assert x.shape == (6, out["columns"]) and np.isfinite(x).all()
    assert np.array_equal(x.astype(np.float16).astype(np.float32), x)  # float16-representable
    # row-normalised blocks are unit rows (or the member's mean row for a filled user), statistics in [-0.5, 0.5]
    for name, lay in out["members"].items():
        block = x[:, lay["start"]: lay["start"] + lay["width"]]
        if lay["transform"] == "quantile":
            assert np.abs(block).max() <= 0.5 + 1e-3, name
        else:
            assert (np.linalg.norm(block, axis=1) <= 1.0 + 1e-2).all(), name
    agg = out["members"]["aggregates"]
    rows = np.searchsorted(df["client_id"].to_numpy(), raw.client_ids)
    np.testing.assert_allclose(x[rows, agg["start"]: agg["start"] + agg["width"]], rebuilt, atol=2e-3)
    assert x[df["client_id"].to_numpy() == 6][0, agg["indicator_column"]] == 0
    u6 = x[df["client_id"].to_numpy() == 6][0, agg["start"]: agg["start"] + agg["width"]]
    others = x[df["client_id"].to_numpy() != 6][:, agg["start"]: agg["start"] + agg["width"]]
    np.testing.assert_allclose(u6, others.mean(axis=0), atol=2e-3)
    # the streamed build writes exactly the rows the in-memory reference builds from the same members
    from ubp.spark_jobs.ensemble import combine, load_members

    ref_ids, ref_x, ref_layout = combine(load_members(lakehouse, datetime.fromisoformat(out["as_of"]),
                                                      tuple(out["members"])))
    assert ref_ids.tolist() == df["client_id"].tolist() and ref_layout == out["members"]
    np.testing.assert_array_equal(ref_x.astype(np.float32), x)
    # re-running for the same inputs changes nothing (same version, same rows, factors not recomputed)
    again = ensemble(lakehouse, as_of=AS_OF)
    assert again["version"] == out["version"] and again["rows"] == out["rows"]
    assert again["rows"]["user_profiles_ensemble"] == 6
    # the challenge export handles the ensemble table: float16, <= 2048 columns, no NaN, missing client filled
    from ubp.export import export_challenge

    clients = lakehouse.lakehouse.parent / "clients.npy"
    np.save(clients, np.array([3, 99, 1], dtype=np.int64))  # 99 has no profile
    res = export_challenge(lakehouse, lakehouse.lakehouse.parent / "export", table="user_profiles_ensemble",
                           clients=clients)
    emb = np.load(lakehouse.lakehouse.parent / "export" / "embeddings.npy")
    ids = np.load(lakehouse.lakehouse.parent / "export" / "client_ids.npy")
    assert ids.tolist() == [3, 99, 1] and emb.dtype == np.float16 and emb.shape == (3, out["columns"])
    assert np.isfinite(emb).all() and emb.shape[1] <= 2048
    np.testing.assert_allclose(emb[0], x[df["client_id"].to_numpy() == 3][0], atol=1e-3)
    assert json.dumps(res, default=str)


TEXT_CONTENT = {10: [1.0, 0.0, 0.0, 0.0], 11: [0.0, 1.0, 0.0, 0.0], 12: [0.0, 0.0, 2.0, 0.0],
                14: [0.0, 0.0, 0.0, 1.0]}  # 14: a name-code item
TEXT_SKUS = {1: [10, 11], 2: [11], 3: [14], 4: [10, 12, 11, 10], 5: [-1], 6: [13, 12]}  # 13: no content


def test_text_member_in_the_ensemble_and_idempotent(spark, lakehouse, tmp_path):
    """The recipe with `text` enabled: the ensemble stage builds gold user_text for its as-of and adds the PCA'd
    block (users without text content filled, flagged); a re-run changes nothing; changed item content is a new
    version that replaces that as-of's rows; without item_content the member is skipped, no crash."""
    from ubp.spark_jobs.ensemble import load_recipe, load_text_member

    from ubp.stages.ensemble import compute_text, ensemble

    assert compute_text(lakehouse, as_of=AS_OF)["skipped"] is True  # no item_content yet
    seqs = []
    for u, skus in TEXT_SKUS.items():
        n = len(skus)
        seqs.append((u, AS_OF, "voc", n, day(-5), day(-3), n, [4] * n, [0] * n, [0] * n, [0] * n, [0] * n, [],
                     [4] * n, [4] * n, skus, list(range(n)), None))
    write_table(lakehouse, USER_SEQUENCES, seqs)

    def content(hash_of_10: str = "a") -> None:
        rows = [(s, hash_of_10 if s == 10 else f"h{s}", "codes" if s == 14 else "minilm",
                 "name_codes" if s == 14 else "text", v, NOW) for s, v in TEXT_CONTENT.items()]
        write_table(lakehouse, ITEM_CONTENT, rows)

    content()
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[members.aggregates]\ntransform = "quantile"\n\n'
                      '[members.text]\ntransform = "pca"\npca_dim = 2\n')
    assert load_recipe(recipe).enabled == ("aggregates", "text")
    out = ensemble(lakehouse, as_of=AS_OF, recipe=recipe)
    lay = out["members"]["text"]
    assert out["rows"]["user_text"] == 4  # users 3 (name codes only) and 5 (no sku) have no row
    assert (lay["transform"], lay["width"], lay["covered"], lay["filled"]) == ("pca", 2, 4, 2)
    text = load_text_member(lakehouse, datetime.fromisoformat(out["as_of"]))
    assert text.client_ids.tolist() == [1, 2, 4, 6] and text.version.startswith("text-r20-")
    want = [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [1 / 3, 1 / 3, 2 / 3, 0], [0, 0, 2, 0]]
    np.testing.assert_allclose(text.values, want, atol=1e-6)
    from ubp.reader import iter_batches

    df = __import__("pyarrow").Table.from_batches(
        list(iter_batches(lakehouse.table_path("user_profiles_ensemble")))).to_pandas().sort_values("client_id")
    x = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    assert df["client_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert x[:, lay["indicator_column"]].tolist() == [1, 1, 0, 1, 0, 1]
    block = x[[0, 1, 3, 5], lay["start"]: lay["start"] + lay["width"]]  # covered users: PCA'd, unit rows
    np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1, atol=2e-3)
    # a re-run: nothing rebuilt (the user_text table is not written), nothing duplicated
    from ubp.delta_log import latest_version

    written = latest_version(lakehouse.table_path("user_text"))
    again = ensemble(lakehouse, as_of=AS_OF, recipe=recipe)
    assert again["version"] == out["version"] and again["rows"] == out["rows"]
    assert latest_version(lakehouse.table_path("user_text")) == written
    # item 10's text changed: a new version replaces the as-of's rows
    content("b")
    res = compute_text(lakehouse, as_of=AS_OF)
    assert res["version"] != text.version and res["rows"]["user_text"] == 4 and "skipped" not in res
    rows = spark.read.format("delta").load(str(lakehouse.table_path("user_text")))
    assert rows.count() == 4
    assert {r[0] for r in rows.select("model_version").distinct().collect()} == {res["version"]}
