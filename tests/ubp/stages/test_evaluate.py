"""The evaluation harness on a tiny hand-made lakehouse: planted signal is found, random is not, report written,
serving tables untouched."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from target_fixtures import AS_OF, PLANTED_USERS, write_planted_evaluation, write_table


def test_evaluate_finds_planted_signal_and_writes_report(spark, settings, tmp_path):
    from ubp.stages.evaluate import evaluate

    write_planted_evaluation(settings)
    truth = tmp_path / "truth"
    truth.mkdir()
    pd.DataFrame({"client_id": np.arange(PLANTED_USERS), "segment": np.arange(PLANTED_USERS) % 3}).to_parquet(
        truth / "users.parquet")
    out = evaluate(settings, as_of=AS_OF, build=False, seeds=(0, 1), probes=("mlp", "logreg"), probe_hidden=32,
                   probe_epochs=3, report_dir=tmp_path / "report", truth_dir=truth)
    res = out["results"]
    assert set(out["tasks"]) == {"churn", "conversion", "category", "sku", "price"}  # no new skus in the window
    assert out["tasks"]["churn"]["users"] == PLANTED_USERS and out["rows"]["population"] == PLANTED_USERS
    assert {"gru", "aggregates", "ensemble", "random", "ensemble - gru", "ensemble - aggregates"} <= set(res)
    assert res["gru"]["churn"]["mlp"]["auroc_mean"] > 0.9
    assert res["gru"]["category"]["logreg"]["auroc_mean"] > 0.8
    assert res["gru"]["_mean"]["mlp"] > res["random"]["_mean"]["mlp"] + 0.1
    assert res["random"]["churn"]["mlp"]["auroc_mean"] < 0.75
    # dropping the planted member from the ensemble hurts
    assert res["ensemble - gru"]["_mean"]["mlp"] < res["ensemble"]["_mean"]["mlp"]
    cat = res["gru"]["category"]["mlp"]
    assert 0 <= cat["novelty_mean"] <= 1 and 0 <= cat["diversity_mean"] <= 1
    assert len(cat["seeds"]) == 2 and cat["score_std"] is not None
    # paired comparisons on the same test users: the planted profile beats the noise, with an interval above 0
    cmp = {(c["a"], c["b"]): c for c in out["comparisons"]}
    assert ("gru", "aggregates") in cmp and ("ensemble", "gru") in cmp
    # the ablation with an interval: the planted member adds to the ensemble on churn (few users: a wide interval)
    abl = cmp[("ensemble", "ensemble - gru")]["tasks"]["churn"]
    assert abl["diff"] > 0 and abl["ci"][0] <= abl["diff"] <= abl["ci"][1]
    churn = cmp[("gru", "aggregates")]["tasks"]["churn"]
    assert churn["diff"] > 0.2 and churn["ci"][0] > 0 and churn["ci"][0] <= churn["diff"] <= churn["ci"][1]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Paired comparisons" in report
    assert "## churn" in report and "| random |" in report and "ablation" in report.lower()
    assert (tmp_path / "report" / "scores.png").stat().st_size > 0
    assert (tmp_path / "report" / "projection_gru.png").stat().st_size > 0 and "projection_gru.png" in report
    assert json.loads((tmp_path / "report" / "results.json").read_text())["as_of"] == out["as_of"]
    # serving (root namespace) gold tables were not touched
    assert not settings.table_path("user_profiles").exists()
    assert not settings.table_path("user_profiles_ensemble").exists()


def test_evaluate_scores_an_opt_in_member_by_name(spark, settings, tmp_path):
    """`--profiles text`: a recipe member that is off by default (gold user_text in the namespace) is loaded and
    scored on its own."""
    from ubp.stages.evaluate import evaluate
    from ubp.tables import USER_TEXT

    es = write_planted_evaluation(settings)
    rng = np.random.default_rng(1)
    rows = [(u, AS_OF, 2, [1.0 if u % 2 else -1.0, *rng.normal(0, 0.3, 7).tolist()], 1, 1.0, "minilm", "text-test",
             AS_OF) for u in range(PLANTED_USERS)]  # dimension 0: the future churn label
    write_table(es, USER_TEXT, rows)
    out = evaluate(settings, as_of=AS_OF, build=False, profiles=["text"], seeds=(0,), probes=("logreg",),
                   probe_epochs=3, report_dir=tmp_path / "report")
    assert set(out["results"]) == {"text", "random"} and out["members"]["text"]["version"] == "text-test"
    assert out["results"]["text"]["churn"]["logreg"]["auroc_mean"] > 0.9
