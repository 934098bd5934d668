"""Stage `item_vectors` after `item_content` and `train_item_model` on tiny hand-made Delta tables (contract
schemas): content cache, training, gold item vectors for every catalog item (new items from content alone, no
retraining), idempotence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from item_stage_fixtures import read_vectors, write_bronze, write_item_lake


@pytest.fixture
def lake(spark, settings):
    return write_item_lake(spark, settings)


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
    first = item_content(settings, batch_rows=7)  # several encoder batches, one append (write_rows 65,536)
    assert first["rows"]["item_content"] == len(items) == first["encoded"] == first["appended"]
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
    assert third["appended"] == 1 and third["merged"] == 1  # the new sku appended, the changed one MERGEd
    n_rows = spark.read.format("delta").load(str(settings.table_path("item_content"))).count()
    assert n_rows == len(items) + 1  # one row per sku: the changed item replaced, not duplicated
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


