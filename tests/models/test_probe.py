"""Downstream probes (`models/probe.py`), no Spark: the challenge-shaped MLP and the logistic regression, batched
prediction, the best epoch chosen by score (NaN never wins), and the L-BFGS logistic regression converging to the
same solution as scikit-learn's."""

from __future__ import annotations

import numpy as np
import torch
from ubp.models.probe import Block, LogisticProbe, MLPProbe, ProbeConfig, build_probe, fit_probe, predict
from user_model_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)

from ubp.metrics import auroc


def _data(n: int = 400, d: int = 6, seed: int = 0, labels: int | None = None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, labels or 1))
    y = (x @ w + 0.3 * rng.normal(size=(n, labels or 1)) > 0).astype(np.float32)
    return x, (y[:, 0] if labels is None else y)


def _score(y, logits) -> dict:
    return {"score": auroc(y, logits) if y.ndim == 1 else float(np.mean([auroc(y[:, j], logits[:, j])
                                                                        for j in range(y.shape[1])]))}


def test_shapes_and_the_residual_block():
    cfg = ProbeConfig(hidden=16, blocks=2, expansion=2)
    mlp, lin = build_probe(5, 3, cfg), build_probe(5, 3, ProbeConfig(linear=True))
    assert isinstance(mlp, MLPProbe) and len(mlp.blocks) == 2 and mlp.head.out_features == 3
    assert isinstance(lin, LogisticProbe) and sum(p.numel() for p in lin.parameters()) == 5 * 3 + 3
    x = torch.randn(7, 5)
    assert mlp(x).shape == lin(x).shape == (7, 3)
    block = Block(16, 2)
    torch.nn.init.zeros_(block.down.weight)
    torch.nn.init.zeros_(block.down.bias)
    h = torch.randn(4, 16)
    assert torch.equal(block(h), h)  # x + f(x): a zero branch is the identity


def test_predict_in_batches_equals_one_pass():
    torch.manual_seed(0)
    model = build_probe(6, 2, ProbeConfig(hidden=8, blocks=1))
    x = np.random.default_rng(1).normal(size=(23, 6)).astype(np.float32)
    with torch.no_grad():
        whole = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict(model, x, batch_size=5), whole, rtol=1e-6, atol=1e-6)
    assert predict(model, x[:0]).shape == (0, 0)


def test_mlp_learns_and_reports_the_best_epoch():
    x, y = _data()
    cfg = ProbeConfig(hidden=32, blocks=1, epochs=4, batch_size=64, seed=3)
    out = fit_probe(x[:300], y[:300], x[300:], y[300:], _score, cfg)
    assert len(out["epochs"]) == 4 and out["logits"].shape == (100,)
    scores = [e["score"] for e in out["epochs"]]
    assert out["best_epoch"] == int(np.argmax(scores)) and out["score"] == max(scores)
    assert out["score"] > 0.8  # a nearly linear task: far above chance (0.5)
    again = fit_probe(x[:300], y[:300], x[300:], y[300:], _score, cfg)
    np.testing.assert_array_equal(again["logits"], out["logits"])  # seeded: the same run twice
    xm, ym = _data(labels=3, seed=2)
    multi = fit_probe(xm[:300], ym[:300], xm[300:], ym[300:], _score, cfg)
    assert multi["logits"].shape == (100, 3) and multi["score"] > 0.8


def test_a_nan_epoch_is_never_the_best():
    x, y = _data(n=120)
    for scores, best in (([float("nan"), 0.5, 0.7], 2), ([0.9, float("nan"), 0.1], 0)):
        def score(_y, _logits, it=iter(scores)):
            return {"score": next(it)}

        out = fit_probe(x[:80], y[:80], x[80:], y[80:], score, ProbeConfig(hidden=8, blocks=1, epochs=3))
        assert out["best_epoch"] == best


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x, y = _data(n=300, seed=4)
    cfg = ProbeConfig(linear=True, l2=1e-2, lbfgs_iters=200)
    out = fit_probe(x[:200], y[:200], x[200:], y[200:], _score, cfg)
    assert out["best_epoch"] == 0 and len(out["epochs"]) == 1
    # mean BCE + l2/2 ||w||^2 (bias free) is scikit-learn's objective with C = 1 / (l2 * n)
    ref = LogisticRegression(C=1.0 / (cfg.l2 * 200), tol=1e-10, max_iter=10_000).fit(x[:200], y[:200])
    np.testing.assert_allclose(out["logits"], ref.decision_function(x[200:]), atol=2e-3)
