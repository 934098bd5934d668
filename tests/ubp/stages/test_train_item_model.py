"""Stage `evaluate_item_model` on tiny hand-made Delta tables (contract schemas): the paper table (two training seeds
per variant, paired comparison), only the delta model may become CURRENT, and `--train-users` samples the users."""

from __future__ import annotations

import numpy as np
import pytest
from item_stage_fixtures import write_item_lake


@pytest.fixture
def lake(spark, settings):
    return write_item_lake(spark, settings)


@pytest.mark.slow
def test_evaluate_items_writes_paper_table(spark, lake):
    import torch

    from ubp import registry
    from ubp.stages.item_content import item_content
    from ubp.stages.train_item_model import evaluate_item_model

    torch.set_num_threads(1)
    settings, _ = lake
    item_content(settings)
    # `--train-users N`: the item model holds only the product sequences of a stable hashed sample of users
    from ubp.stages.train_item_model import load_inputs

    full = load_inputs(settings)
    part = load_inputs(settings, train_users=len(full["users"]) // 3)
    assert "sample_fraction" not in full and 0 < part["sample_fraction"] < 1
    assert 0 < len(part["users"]) < len(full["users"]) and np.array_equal(part["skus"], full["skus"])
    again = load_inputs(settings, train_users=len(full["users"]) // 3)["users"]
    assert [u[0].tolist() for u in again] == [u[0].tolist() for u in part["users"]]  # stable
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
