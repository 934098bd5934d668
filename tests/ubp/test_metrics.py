"""The challenge metrics on hand-made examples (and AUROC against sklearn as an independent check)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ubp.metrics import auroc, diversity, multilabel_auroc, novelty, propensity_score, score_task


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


def test_auroc_hand_example():
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(1.0)
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)


def test_auroc_ties_count_half_and_single_class_is_nan():
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([0, 1, 1], [0.3, 0.3, 0.9]) == pytest.approx(0.75)
    assert math.isnan(auroc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y * 0.7, 1)  # rounding makes many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_multilabel_macro_skips_single_class_labels():
    y = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]])
    s = np.array([[0.9, 0.5, 0.1], [0.2, 0.1, 0.7], [0.8, 0.3, 0.2], [0.1, 0.9, 0.6]])
    # label 0: perfect (1.0); label 1: no positives -> skipped; label 2: pos {0.7, 0.2} neg {0.1, 0.6} -> 3/4
    assert multilabel_auroc(y, s) == pytest.approx((1.0 + 0.75) / 2)
    assert math.isnan(multilabel_auroc(np.zeros((3, 2)), np.ones((3, 2))))


def test_multilabel_auroc_equals_the_per_label_binary_auroc_with_ties():
    """The vectorised macro AUROC gives exactly the mean of the binary AUROCs (ties, sparse labels, dead labels)."""
    rng = np.random.default_rng(3)
    y = (rng.random((700, 40)) < rng.uniform(0.002, 0.3, 40)).astype(np.int8)
    y[:, 5] = 0  # no positive: skipped
    s = np.round(rng.normal(size=(700, 40)) + y * 0.8, 1)  # rounding makes many ties
    per_label = [auroc(y[:, j], s[:, j]) for j in range(40)]
    assert multilabel_auroc(y, s) == pytest.approx(np.nanmean(per_label), abs=1e-12)


def test_paired_bootstrap_is_paired_and_its_interval_covers_the_difference():
    from ubp.metrics import interval, paired_bootstrap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good, bad = y + rng.normal(0, 0.8, 400), y + rng.normal(0, 3.0, 400)
    draws = paired_bootstrap("binary", y, good, bad, n_boot=200, seed=0)
    lo, hi = interval(draws)
    assert 0 < lo <= auroc(y, good) - auroc(y, bad) <= hi  # a clear win: the interval is above 0
    assert np.allclose(paired_bootstrap("binary", y, good, good, n_boot=20), 0.0)  # same users both sides


def test_weighted_resample_score_equals_scoring_the_resampled_users():
    """A bootstrap draw is scored from precomputed ranks with integer weights: it must equal `score_task` on the
    users drawn (ties and all), for binary and multilabel tasks."""
    from ubp.metrics import _WeightedTask

    rng = np.random.default_rng(1)
    n = 300
    yb = rng.integers(0, 2, n)
    sb = np.round(rng.normal(size=n) + yb, 1)
    ym = (rng.random((n, 12)) < 0.2).astype(np.int8)
    sm = np.round(rng.normal(size=(n, 12)) + ym, 1)
    pop = rng.random(12)
    for kind, y, s in (("binary", yb, sb), ("multilabel", ym, sm)):
        task = _WeightedTask(kind, y, s, pop)
        for _ in range(3):
            idx = rng.integers(0, n, n)
            w = np.bincount(idx, minlength=n).astype(np.float64)
            want = score_task(kind, y[idx], s[idx], pop)["score"]
            assert task.score(w) == pytest.approx(want, abs=1e-10), kind


def test_diversity_uniform_is_one_and_confident_is_low():
    assert diversity(np.zeros((4, 100))) == pytest.approx(1.0)
    sharp = np.full((2, 100), -30.0)
    sharp[:, 7] = 30.0
    assert diversity(sharp) < 0.01
    # two equal targets out of 4: entropy 1 bit / log2(4) = 0.5
    two = np.array([[30.0, 30.0, -30.0, -30.0]])
    assert diversity(two) == pytest.approx(0.5, abs=1e-6)


def test_novelty_hand_example():
    pop = np.array([4, 2, 1, 1])  # k=2: normalised by 4+2 -> [2/3, 1/3, 1/6, 1/6]
    preds = logit([[0.9, 0.1, 0.8, 0.2], [0.1, 0.2, 0.3, 0.4]])
    # user 1: top-2 = targets 0, 2 -> 0.9*2/3 + 0.8/6 = 0.73333; user 2: targets 3, 2 -> 0.4/6 + 0.3/6 = 0.11667
    expected = (1 - (0.733333333 + 0.116666667) / 2) ** 100
    assert novelty(preds, pop, k=2) == pytest.approx(expected, rel=1e-6)
    # recommending only never-bought targets is maximally novel
    assert novelty(logit([[0.01, 0.01, 0.99, 0.99]]), np.array([5, 5, 0, 0]), k=2) == pytest.approx(1.0)


def test_scores_combine_as_the_challenge_weights():
    assert propensity_score(0.8, 0.5, 0.9) == pytest.approx(0.8 * 0.8 + 0.05 + 0.09)
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    logits = np.array([[2.0, -1.0], [-2.0, 1.5], [1.0, 1.0], [-1.0, -2.0]])
    m = score_task("multilabel", y, logits, np.array([3, 1]))
    assert m["auroc"] == pytest.approx(1.0)
    assert m["score"] == pytest.approx(0.8 * m["auroc"] + 0.1 * m["novelty"] + 0.1 * m["diversity"])
    b = score_task("binary", np.array([0, 1, 1]), np.array([0.1, 0.5, 0.9]))
    assert b["score"] == b["auroc"] == pytest.approx(1.0)
