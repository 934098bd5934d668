"""Item model training (`models/train_item.py`), no Spark: the content transform fitted on warm items only, the
delta bound, cold vectors = content, content fine-tuning vs delta, the planted cold start, and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from item_model_fixtures import RAW_DIM, planted_split, sasrec_config
from ubp.models.train_item import evaluate, item_offsets, prepare_content, train_sasrec
from user_model_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def data():
    return planted_split()


def test_transform_fitted_on_warm_items_only(data):
    skus, raw, split, cold = data
    t1, c1, _ = prepare_content(split.index, skus, raw, 8)
    changed = raw.copy()
    changed[cold] = np.random.default_rng(1).standard_normal((int(cold.sum()), RAW_DIM)) * 50
    t2, c2, _ = prepare_content(split.index, skus, changed, 8)
    for name in ("mean", "scale", "pca_mean", "components"):
        np.testing.assert_array_equal(getattr(t1, name), getattr(t2, name))
    assert t1.n_fit == split.index.n_warm
    # ... but a warm item's content does move it
    changed[np.flatnonzero(~cold)[0]] += 10
    t3, _, _ = prepare_content(split.index, skus, changed, 8)
    assert not np.allclose(t1.mean, t3.mean)
    # rows are unit vectors; the cold rows changed only because their own input changed
    np.testing.assert_allclose(np.linalg.norm(c1[1:], axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(c1[split.index.n_warm + 1 :], c2[split.index.n_warm + 1 :])


def test_delta_norm_bound_and_cold_vectors(data, tmp_path):
    skus, raw, split, _ = data
    bound = 0.01  # small, so that three epochs push against it
    cfg = sasrec_config(split, "delta", delta_max=bound)
    _, content, _ = prepare_content(split.index, skus, raw, cfg.d_model)
    model, summary = train_sasrec(split, content, cfg, tmp_path, max_epochs=3, patience=5, show_progress=False)
    norms = model.items.delta.detach().norm(dim=1)
    assert float(norms.max()) <= bound + 1e-6
    assert float(norms[1 : split.index.n_warm + 1].max()) > 0.9 * bound  # the bound was active
    from ubp.models.common import read_metrics

    assert all(r["delta_max_norm"] <= bound + 1e-6 for r in read_metrics(tmp_path / "metrics.jsonl"))
    vectors = model.item_vectors().numpy()
    n_warm = split.index.n_warm
    np.testing.assert_array_equal(vectors[n_warm + 1 :], content[n_warm + 1 :])  # cold: exactly the content
    assert np.abs(vectors[1 : n_warm + 1] - content[1 : n_warm + 1]).max() > 0
    off = item_offsets(model, split.index, content)
    assert off.shape == (n_warm, cfg.d_model)
    assert np.linalg.norm(off, axis=1).max() <= bound + 1e-5


def test_content_finetune_is_unconstrained_and_differs_from_delta_only_by_the_bound(data, tmp_path):
    """content_finetune: a trainable table initialised from content, no bound, no weight decay; with a bound that
    never binds, delta follows exactly the same trajectory (zero-initialised delta, same Adam), so any gap
    between the two comes from the bound alone."""
    skus, raw, split, _ = data
    n_warm = split.index.n_warm
    vectors = {}
    for variant, kw in (("content_finetune", {"delta_max": 0.005}), ("delta", {"delta_max": 100.0})):
        cfg = sasrec_config(split, variant, **kw)
        _, content, _ = prepare_content(split.index, skus, raw, cfg.d_model)
        model, _ = train_sasrec(split, content, cfg, tmp_path / variant, max_epochs=2, patience=5, seed=0,
                                show_progress=False)
        if variant == "content_finetune":
            assert model.items.table is not None and model.items.table.requires_grad and model.items.delta is None
            assert all(g["weight_decay"] == 0.0 for g in model.param_groups())
            drift = np.linalg.norm(item_offsets(model, split.index, content), axis=1)
            assert drift.max() > 2 * 0.005  # delta_max means nothing to free fine-tuning
        vectors[variant] = model.item_vectors().numpy()
        np.testing.assert_array_equal(vectors[variant][n_warm + 1 :], content[n_warm + 1 :])  # cold untouched
    np.testing.assert_allclose(vectors["delta"], vectors["content_finetune"], atol=1e-5)


def test_planted_cold_start_delta_beats_id_only(data, tmp_path):
    skus, raw, split, _ = data
    out = {}
    for variant in ("delta", "id_only"):
        cfg = sasrec_config(split, variant)
        _, content, _ = prepare_content(split.index, skus, raw, cfg.d_model)
        model, _ = train_sasrec(split, content, cfg, tmp_path / variant, max_epochs=8, patience=3, seed=0,
                                show_progress=False)
        cold_cases = [c for c in split.test if c.cold]
        with torch.no_grad():
            from ubp.models.item_eval import compute_ranks

            out[variant] = compute_ranks(model.score, cold_cases, cfg.max_len)
        out[variant + "_metrics"] = evaluate(model, split.test, cfg.max_len)
    # ID-only cannot rank an item it never saw; the delta model puts the right cold item near the top
    assert np.isinf(out["id_only"]).all()
    assert out["id_only_metrics"]["ndcg@10_cold"] == 0.0
    assert np.isfinite(out["delta"]).all()
    assert np.median(out["delta"]) < 5  # among ~90 items, most of them unseen by the user
    assert out["delta_metrics"]["recall@10_cold"] > 0.8
    assert out["delta_metrics"]["ndcg@10_total"] > out["id_only_metrics"]["ndcg@10_total"]


def test_training_resumes_from_checkpoint(data, tmp_path):
    skus, raw, split, _ = data
    cfg = sasrec_config(split, "delta")
    _, content, _ = prepare_content(split.index, skus, raw, cfg.d_model)
    train_sasrec(split, content, cfg, tmp_path, max_epochs=2, patience=50, show_progress=False)
    _, summary = train_sasrec(split, content, cfg, tmp_path, max_epochs=3, patience=50, show_progress=False)
    from ubp.models.common import read_metrics

    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert summary["epochs_run"] == 3 and (tmp_path / "loss.png").exists()
