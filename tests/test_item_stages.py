"""Item stages on tiny hand-made Delta tables (contract schemas): content cache, training, evaluation table,
gold item vectors for every catalog item (new items from content alone, no retraining), idempotence, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ubp.tables import PRODUCT_TEXT, PRODUCTS, USER_SEQUENCES

INGESTED = datetime(2024, 3, 1, tzinfo=UTC)
DEPARTMENTS = {
    "shoes": ["trail running shoes", "leather boots", "hiking sandals", "road running sneakers"],
    "kitchen": ["chef knife", "cast iron pan", "espresso cups", "bread baking tin"],
    "garden": ["garden hose", "pruning shears", "flower seeds", "wooden planter"],
}
COLOURS = ["red", "blue", "green"]


def catalog() -> list[dict]:
    """3 departments x 12 items (the last 2 of each are cold) + 2 catalog-only items; 3 items have no text."""
    items = []
    for d, (dept, kinds) in enumerate(DEPARTMENTS.items()):
        for j in range(12):
            sku = 100 * (d + 1) + j
            text = f"{kinds[j % 4].capitalize()}, {COLOURS[j % 3]}, {dept} department"
            items.append({"sku": sku, "dept": d, "cold": j >= 10, "text": None if j == 3 else text,
                          "name": [(d * 80 + j * 3 + k) % 256 for k in range(16)]})
    items.append({"sku": 901, "dept": 0, "cold": True, "text": "Trail running shoes, blue, shoes", "name": None})
    items.append({"sku": 902, "dept": 1, "cold": True, "text": "Chef knife, green, kitchen", "name": [5] * 16})
    return items


def write_bronze(spark, settings, items: list[dict], ingested=INGESTED, mode="overwrite") -> None:
    prows = [(it["sku"], 10 + it["dept"], 50, it["name"], "product_properties.parquet", ingested) for it in items]
    trows = [(it["sku"], it["text"], "product_text.parquet", ingested) for it in items if it["text"]]
    (spark.createDataFrame(prows, PRODUCTS.spark_schema()).write.format("delta").mode(mode)
     .save(str(settings.table_path("products"))))
    (spark.createDataFrame(trows, PRODUCT_TEXT.spark_schema()).write.format("delta").mode(mode)
     .save(str(settings.table_path("product_text"))))


def write_sequences(spark, settings, items: list[dict], users: int = 72, seed: int = 0) -> None:
    """Each user shops in one department (warm items early), then one last event: a cold item of that department
    for even users (the latest events of all, so after the 0.9 time quantile), an unseen warm item otherwise."""
    rng = np.random.default_rng(seed)
    as_of = datetime(2024, 3, 1, tzinfo=UTC)
    rows = []
    for u in range(users):
        d = u % 3
        warm = [it["sku"] for it in items if it["dept"] == d and not it["cold"] and it["sku"] < 900]
        cold = [it["sku"] for it in items if it["dept"] == d and it["cold"] and it["sku"] < 900]
        hist = list(rng.choice(warm, 6, replace=False))
        last = int(rng.choice(cold)) if u % 2 == 0 else int(rng.choice(sorted(set(warm) - set(hist))))
        skus = [int(s) for s in hist] + [-1, last]  # -1: a page visit between
        ts = sorted(int(t) for t in rng.integers(1_700_000_000, 1_700_500_000, 7))
        ts += [1_700_900_000 + u * 10] if u % 2 == 0 else [1_700_600_000 + u * 10]
        n = len(skus)
        pad = [0] * n
        rows.append((u + 1, as_of, "v1", n, datetime.fromtimestamp(ts[0], UTC), datetime.fromtimestamp(ts[-1], UTC),
                     n, [4] * n, pad, pad, pad, pad, [0] * (16 * n), pad, pad, skus, ts))
    (spark.createDataFrame(rows, USER_SEQUENCES.spark_schema()).write.format("delta").mode("overwrite")
     .save(str(settings.table_path("user_sequences"))))


def read_vectors(spark, settings) -> dict[int, dict]:
    rows = spark.read.format("delta").load(str(settings.table_path("item_vectors"))).collect()
    return {r["sku"]: r.asDict() for r in rows}


@pytest.fixture
def lake(spark, settings):
    items = catalog()
    write_bronze(spark, settings, items)
    write_sequences(spark, settings, items)
    return settings, items


@pytest.mark.slow
def test_item_pipeline_content_cache_training_vectors(spark, lake):
    import torch
    from ubp.models.content_prep import ContentTransform

    from ubp import registry
    from ubp.stages.item_content import item_content
    from ubp.stages.item_vectors import item_vectors
    from ubp.stages.train_item_model import train_item_model

    torch.set_num_threads(1)
    settings, items = lake
    first = item_content(settings)
    assert first["rows"]["item_content"] == len(items) == first["encoded"]
    assert first["encoded_name_codes"] == 3 and first["encoded_text"] == len(items) - 3

    res = train_item_model(settings, max_epochs=3, promote="if_none")
    assert res["promoted"] and registry.current_version(settings, "item") == res["version"]
    assert res["split"]["n_warm"] == 30 and res["split"]["test_cold_targets"] > 0
    again = train_item_model(settings, max_epochs=3)  # same inputs: reused, not retrained
    assert again["reused"] and again["version"] == res["version"]
    assert Path(again["work_dir"]) == Path(res["work_dir"])  # per-user results of a reused run are found
    (Path(res["work_dir"]) / "test_users.json").unlink()  # as recorded by an older ubp: no per-user results
    redo = train_item_model(settings, max_epochs=3)  # retrained (pairing needs them), not reused blind
    assert not redo.get("reused") and redo["version"] != res["version"]
    assert (Path(redo["work_dir"]) / "test_users.json").exists()
    model_dir = registry.version_dir(settings, "item", res["version"])
    assert {"model.safetensors", "content_transform.safetensors", "item_offsets.safetensors", "config.json",
            "metrics.jsonl", "loss.png"} <= {p.name for p in model_dir.iterdir()}

    out = item_vectors(settings)
    vec = read_vectors(spark, settings)
    assert out["rows"]["item_vectors"] == len(items) == len(vec)
    cold_skus = {it["sku"] for it in items if it["cold"]}
    assert {s for s, r in vec.items() if r["is_cold"]} == cold_skus
    transform = ContentTransform.load(model_dir)
    content = {r["sku"]: np.array(r["embedding"], dtype=np.float32) for r in
               spark.read.format("delta").load(str(settings.table_path("item_content"))).collect()}
    for sku, r in vec.items():
        c = transform.transform(content[sku][None])[0]
        v = np.array(r["vector"], dtype=np.float32)
        assert len(v) == 64 and r["model_version"] == res["version"]
        if r["is_cold"]:
            np.testing.assert_allclose(v, c, atol=1e-6)  # cold: exactly the content vector
        else:
            assert np.linalg.norm(v - c) <= 0.5 + 1e-5  # warm: content + bounded delta
    assert max(np.linalg.norm(np.array(r["vector"]) - transform.transform(content[s][None])[0])
               for s, r in vec.items() if not r["is_cold"]) > 0

    # idempotent
    item_vectors(settings)
    assert read_vectors(spark, settings) == vec

    # a new item and a changed text: only those two are encoded; the new item gets a vector without retraining
    later = datetime(2024, 3, 5, tzinfo=UTC)
    new = {"sku": 777, "dept": 2, "cold": True, "text": "Garden hose, red, garden department", "name": None}
    changed = dict(items[0], text="Trail running shoes, red, shoes department, waterproof")
    write_bronze(spark, settings, [new, changed], ingested=later, mode="append")
    third = item_content(settings)
    assert third["encoded"] == 2 and third["cached"] == len(items) - 1
    item_vectors(settings)
    vec2 = read_vectors(spark, settings)
    assert len(vec2) == len(items) + 1 and vec2[777]["is_cold"]
    content2 = {r["sku"]: np.array(r["embedding"], dtype=np.float32) for r in
                spark.read.format("delta").load(str(settings.table_path("item_content"))).collect()}
    np.testing.assert_allclose(vec2[777]["vector"], transform.transform(content2[777][None])[0], atol=1e-6)
    # a new garden item lands nearer the garden items than the kitchen ones
    garden = np.mean([vec2[s]["vector"] for s in range(300, 310)], axis=0)
    kitchen = np.mean([vec2[s]["vector"] for s in range(200, 210)], axis=0)
    assert np.dot(vec2[777]["vector"], garden) > np.dot(vec2[777]["vector"], kitchen)


@pytest.mark.slow
def test_evaluate_items_writes_paper_table(spark, lake):
    import torch

    from ubp import registry
    from ubp.stages.item_content import item_content
    from ubp.stages.train_item_model import evaluate_item_model

    torch.set_num_threads(1)
    settings, _ = lake
    item_content(settings)
    res = evaluate_item_model(settings, max_epochs=2, seeds=(0, 1), n_boot=200)
    assert set(res["results"]) == {"history_avg", "id_only", "content_finetune", "frozen", "delta"}
    assert res["results"]["id_only"]["ndcg@10_cold"] == 0.0
    n_cold = res["results"]["delta"]["n_cold"]
    assert n_cold > 0
    # two training seeds per trained variant, scored on the same users; the table cell is their mean
    for variant in ("id_only", "content_finetune", "frozen", "delta"):
        runs = res["per_seed"][variant]
        assert len(runs) == 2 and len({r["version"] for r in res["runs"][variant]}) == 2
        assert res["results"][variant]["n_seeds"] == 2
        assert res["results"][variant]["ndcg@10_total"] == pytest.approx(
            np.mean([r["ndcg@10_total"] for r in runs]))
    cold_cmp = res["comparisons"]["cold"]
    assert cold_cmp["n"] == n_cold and cold_cmp["diff_ci"][0] <= cold_cmp["diff"] <= cold_cmp["diff_ci"][1]
    assert cold_cmp["mean_a"] == pytest.approx(res["results"]["delta"]["ndcg@10_cold"])
    report = (settings.root / "_reports" / "item_model_eval.md").read_text()
    for label in ("SASRec, ids only", "Frozen content + trainable delta", "History average",
                  "mean ± std over 2 training seeds", "NDCG@10 cold (", "paired"):
        assert label in report
    # only the delta model may become CURRENT
    assert registry.current_version(settings, "item") == res["versions"]["delta"]


def test_cli_errors_are_one_line(tmp_path):
    cmd = [sys.executable, "-m", "ubp.cli", "--lakehouse", str(tmp_path / "lh")]
    r = subprocess.run(cmd + ["item-vectors"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no promoted item model" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["train-item-model", "--variant", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["evaluate-items", "--seeds", "0,x"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--seeds" in r.stderr and "Traceback" not in r.stderr
