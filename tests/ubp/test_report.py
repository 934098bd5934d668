"""The evaluation report (`ubp/report.py`) on a hand-made summary: the acceptance checks computed from the numbers,
the order of the profiles, every section of report.md, and the files `write_report` leaves (results.json, plots)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ubp import report


def _task(score: float, std: float = 0.01, linear: float | None = None) -> dict:
    m = {"mlp": {"auroc_mean": score - 0.1, "auroc_std": std, "novelty_mean": 0.5, "novelty_std": 0.0,
                 "diversity_mean": 0.4, "diversity_std": 0.0, "score_mean": score, "score_std": std}}
    if linear is not None:
        m["linear"] = {"score_mean": linear, "score_std": 0.0}
    return m


def _rep(churn: float, cat: float, mean: float, linear: float | None = None) -> dict:
    return {"_mean": {"mlp": mean, "linear": linear}, "churn": _task(churn, linear=linear),
            "category_propensity": _task(cat, linear=linear)}


@pytest.fixture
def summary() -> dict:
    return {
        "as_of": "2025-06-17", "namespace": "eval-20250617", "window_days": 14, "seeds": [0, 1],
        "probe_config": {"test_fraction": 0.2, "hidden": 256, "epochs": 3}, "probes": ["mlp", "linear"],
        "rows": {"population": 120}, "seconds": 42.0,
        "members": {"gru": {"version": "user-v1", "users": 118, "columns": 64, "filled": 2}},
        "tasks": {"churn": {"kind": "binary", "users": 96, "positive_rate": 0.25},
                  "category_propensity": {"kind": "multilabel", "users": 96, "positive_rate": 0.1, "targets": 20,
                                          "scorable_labels": 18}},
        "results": {  # inserted out of order on purpose
            "custom": _rep(0.61, 0.62, 0.615),
            "random": _rep(0.50, 0.70, 0.60),
            "ensemble - gru": _rep(0.64, 0.64, 0.64),
            "gru": _rep(0.70, 0.66, 0.68, linear=0.60),
            "ensemble": _rep(0.69, 0.65, 0.67),
            "aggregates": _rep(0.60, 0.61, 0.605),
        },
    }


def test_profiles_in_the_main_order_then_the_rest_without_ablations(summary):
    assert report._rows(summary["results"]) == ["gru", "aggregates", "ensemble", "random", "custom"]


def test_acceptance_is_computed_from_the_numbers(summary):
    lines = report.acceptance(summary)
    assert lines == [
        "GRU beats random on every task: NO (category_propensity)",  # 0.66 < random's 0.70
        "GRU beats aggregates on the mean score: yes (0.6800 vs 0.6050)",
        "ensemble >= best member (gru) on the mean score: NO (0.6700 vs 0.6800)",
    ]
    summary["results"]["random"]["category_propensity"]["mlp"]["score_mean"] = 0.5
    assert report.acceptance(summary)[0] == "GRU beats random on every task: yes"
    del summary["results"]["random"]["churn"]  # a missing score is never a win
    assert report.acceptance(summary)[0] == "GRU beats random on every task: NO (churn)"
    assert report.acceptance({"results": {"items": {}}, "tasks": {}}) == []  # nothing to compare


def test_markdown_has_every_section(summary):
    md = report.render_markdown(summary)
    assert md.startswith("# ubp evaluation report (2025-06-17)\n")
    assert "`eval-20250617`" in md and "probes trained on 80% of the users" in md and "seeds [0, 1]" in md
    assert "also `linear` (logistic regression)." in md and "Population: 120 users" in md
    assert "| gru | `user-v1` | 118 | 64 | 2 |" in md
    assert "| churn | binary | 96 | 0.250 | - |" in md
    assert "| category_propensity | multilabel | 96 | 0.100 | 20 (18) |" in md
    assert "| gru | 0.6800 | 0.6000 |" in md and "| random | 0.6000 | - |" in md  # no linear mean: a dash
    assert "- GRU beats aggregates on the mean score: yes (0.6800 vs 0.6050)" in md
    assert "| gru | 0.6000 ± 0.0100 | 0.5000 ± 0.0000 | 0.4000 ± 0.0000 | 0.7000 ± 0.0100 | 0.6000 ± 0.0000 |" in md
    assert "| ensemble - gru | 0.6400 | -0.0300 | 0.6400 | 0.6400 |" in md  # the ablation vs the full ensemble
    assert "ensemble - gru" not in md.split("## Member ablation")[0]  # ablations only in their own section
    assert "## Paired comparisons" not in md and "## Latent health" not in md
    summary["comparisons"] = [{"a": "gru", "b": "random", "mean": {"diff": 0.08, "ci": [0.05, 0.11]},
                               "tasks": {"churn": {"diff": 0.2, "ci": [0.15, 0.25]}}}]
    summary["build_steps"] = {"train_user": {"latent_health": {"raw": {
        "users": 118, "saturated_share": 0.01, "median_dim_std": 0.2, "pc1_share": 0.3, "one_sign_dims": 0.05},
        "served_dim": 64}}, "ingest": {"rows": 3}}
    md = report.render_markdown(summary)
    assert "| gru | random | +0.0800 [+0.0500, +0.1100] | +0.2000 [+0.1500, +0.2500] | - |" in md
    assert "| train_user | 118 | 0.010 | 0.200 | 0.300 | 0.050 | 64 |" in md


def test_write_report_leaves_markdown_results_and_plots(summary, tmp_path):
    rng = np.random.default_rng(0)
    pop = np.arange(1, 41, dtype=np.int64)
    reps = {"gru": rng.normal(size=(40, 8)), "custom": rng.normal(size=(40, 8))}
    segments = {"client_id": np.arange(1, 31), "segment": np.arange(30) % 3}  # users 31..40 have no segment
    path = report.write_report(summary, tmp_path / "out", pop=pop, reps=reps, segments=segments)
    out = tmp_path / "out"
    assert path == out / "report.md"
    assert sorted(p.name for p in out.iterdir()) == ["projection_gru.png", "report.md", "results.json", "scores.png"]
    for png in ("scores.png", "projection_gru.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["projection"] == ["projection_gru.png"]
    assert "![gru profiles coloured by planted segment](projection_gru.png)" in path.read_text()
    bare = report.write_report(summary, tmp_path / "bare")  # no segments: no projection
    assert "projection_" not in bare.read_text() and summary["projection"] == []
