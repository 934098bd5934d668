"""The RecSys Challenge 2025 metrics, in numpy only (no torch/sklearn), so any stage or notebook can score a probe.

Definitions follow the organizers' evaluation code (Synerise/recsys2025, `training_pipeline/`):
- AUROC: binary for churn/conversion; macro over labels for the multilabel propensity tasks (labels whose test
  column has a single class are skipped: their AUROC is undefined).
- Diversity: sigmoid of the predictions, L1-normalised per user, entropy in bits / log2(n_targets), averaged.
- Novelty: popularity normalised by the sum of the k largest popularities; per user the sigmoid-weighted sum of
  the normalised popularity of its top-k predicted targets; averaged over users; novelty = (1 - mean) ** 100.
- Propensity score = 0.8 * AUROC + 0.1 * novelty + 0.1 * diversity; churn-type score = AUROC.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-9


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # numerically stable for large |x|


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (what Mann-Whitney needs)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], n]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Binary AUROC (probability a random positive outranks a random negative; ties count 1/2).

    Returns NaN when y_true has a single class.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"shape mismatch: {y.shape} vs {s.shape}")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _tie_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of a 2-D array: the sort order, and for each sorted position the first and last index of its run
    of equal values (what average ranks and tie-aware AUROC need)."""
    n, m = x.shape
    order = np.argsort(x, axis=0, kind="mergesort")
    xs = np.take_along_axis(x, order, axis=0)
    pos = np.broadcast_to(np.arange(n)[:, None], (n, m))
    first = np.ones((n, m), dtype=bool)
    first[1:] = xs[1:] != xs[:-1]  # a run of equal values starts here
    last = np.ones((n, m), dtype=bool)
    last[:-1] = first[1:]  # ... and ends here
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=0)
    end = np.minimum.accumulate(np.where(last, pos, n)[::-1], axis=0)[::-1]
    return order, start, end


def _average_ranks_columns(x: np.ndarray) -> np.ndarray:
    """`_average_ranks` of every column of a 2-D array at once (one sort, no Python loop over labels)."""
    order, start, end = _tie_groups(x)
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=0)
    return ranks


def multilabel_auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro AUROC over labels, skipping labels with one class in y_true. NaN if no label is scorable.
    Vectorised over labels (the paired bootstrap scores thousands of resamples)."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"expected two equal 2-D arrays, got {y.shape} and {s.shape}")
    y = y.astype(bool)
    n_pos = y.sum(axis=0)
    n_neg = y.shape[0] - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return float("nan")
    ranks = _average_ranks_columns(s[:, ok])
    npos = n_pos[ok].astype(np.float64)
    values = ((ranks * y[:, ok]).sum(axis=0) - npos * (npos + 1) / 2.0) / (npos * n_neg[ok])
    return float(np.mean(values))


def scorable_labels(y_true: np.ndarray) -> int:
    """How many label columns have both classes (the ones macro AUROC averages over)."""
    y = np.asarray(y_true).astype(bool)
    pos = y.sum(axis=0)
    return int(((pos > 0) & (pos < y.shape[0])).sum())


def _entropy_per_user(p: np.ndarray) -> np.ndarray:
    """Each user's normalised entropy of the L1-normalised sigmoid predictions `p` [n, T] (1 = uniform)."""
    q = p / p.sum(axis=1, keepdims=True)
    return -(q * np.log2(q + EPS)).sum(axis=1) / np.log2(p.shape[1])


def _top_k_popularity_per_user(p: np.ndarray, popularity: np.ndarray, k: int = 10) -> np.ndarray:
    """Each user's sigmoid-weighted normalised popularity of their top-k predicted targets."""
    pop = np.asarray(popularity, dtype=np.float64).ravel()
    k = min(k, len(pop))
    top_pop = np.sort(pop)[-k:].sum()
    norm_pop = pop / top_pop if top_pop > 0 else np.zeros_like(pop)
    idx = np.argpartition(-p, k - 1, axis=1)[:, :k]  # the k largest predictions per user (order irrelevant)
    return (np.take_along_axis(p, idx, axis=1) * norm_pop[idx]).sum(axis=1)


def diversity(logits: np.ndarray) -> float:
    """Mean normalised entropy of each user's L1-normalised sigmoid predictions (1 = uniform)."""
    p = sigmoid(np.asarray(logits, dtype=np.float64))
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError("diversity needs a 2-D array with at least 2 targets")
    return float(_entropy_per_user(p).mean())


def novelty(logits: np.ndarray, popularity: np.ndarray, k: int = 10) -> float:
    """(1 - mean over users of the sigmoid-weighted normalised popularity of the top-k predictions) ** 100.

    `popularity[j]` is how often target j was bought in the input (training) data. Predicting only unpopular
    targets gives novelty near 1; predicting the k most popular ones with certainty gives 0.
    """
    p = sigmoid(np.asarray(logits, dtype=np.float64))
    pop = np.asarray(popularity, dtype=np.float64).ravel()
    if p.ndim != 2 or p.shape[1] != len(pop):
        raise ValueError(f"predictions {p.shape} do not match popularity of length {len(pop)}")
    return float((1.0 - _top_k_popularity_per_user(p, pop, k).mean()) ** 100)


def propensity_score(auroc_value: float, novelty_value: float, diversity_value: float) -> float:
    return 0.8 * auroc_value + 0.1 * novelty_value + 0.1 * diversity_value


def score_task(kind: str, y_true: np.ndarray, logits: np.ndarray, popularity: np.ndarray | None = None) -> dict:
    """All metrics of one task: kind "binary" (churn, conversion) or "multilabel" (propensity tasks)."""
    if kind == "binary":
        a = auroc(np.asarray(y_true).ravel(), np.asarray(logits).ravel())
        return {"auroc": a, "novelty": None, "diversity": None, "score": a}
    if kind != "multilabel":
        raise ValueError(f"unknown task kind {kind!r}")
    if popularity is None:
        raise ValueError("multilabel tasks need the targets' popularity for novelty")
    a = multilabel_auroc(y_true, logits)
    n = novelty(logits, popularity)
    d = diversity(logits)
    return {"auroc": a, "novelty": n, "diversity": d, "score": propensity_score(a, n, d)}


class _WeightedTask:
    """One task's score under per-user weights (a bootstrap resample = integer weights), without re-sorting:
    ranks, tie groups and per-user novelty / diversity terms are computed once, each resample is a few array ops."""

    def __init__(self, kind: str, y_true: np.ndarray, logits: np.ndarray, popularity: np.ndarray | None) -> None:
        self.kind = kind
        s = np.asarray(logits, dtype=np.float64)
        y = np.asarray(y_true).astype(bool)
        if kind == "binary":
            s, y = s.reshape(-1, 1), y.reshape(-1, 1)
        self.order, self.start, self.end = _tie_groups(s)  # [n, m] each
        self.ys = np.take_along_axis(y, self.order, axis=0)  # labels in score order
        if kind == "multilabel":
            p = sigmoid(s)
            self.entropy = _entropy_per_user(p)  # [n]
            self.weighted_pop = _top_k_popularity_per_user(p, popularity)  # [n]

    def auroc(self, w: np.ndarray) -> float:
        ws = w[self.order]  # [n, m] weights in score order
        wneg = ws * ~self.ys
        cum = np.cumsum(wneg, axis=0)
        below = np.where(self.start > 0, np.take_along_axis(cum, np.maximum(self.start - 1, 0), axis=0), 0.0)
        tied = np.take_along_axis(cum, self.end, axis=0) - below
        wpos = ws * self.ys
        n_pos, n_neg = wpos.sum(axis=0), wneg.sum(axis=0)
        ok = (n_pos > 0) & (n_neg > 0)
        if not ok.any():
            return float("nan")
        num = (wpos * (below + 0.5 * tied)).sum(axis=0)
        return float(np.mean(num[ok] / (n_pos[ok] * n_neg[ok])))

    def score(self, w: np.ndarray) -> float:
        a = self.auroc(w)
        if self.kind == "binary":
            return a
        total = w.sum()
        novelty_value = (1.0 - float((w * self.weighted_pop).sum() / total)) ** 100
        return propensity_score(a, novelty_value, float((w * self.entropy).sum() / total))


def paired_bootstrap(kind: str, y_true: np.ndarray, logits_a: np.ndarray, logits_b: np.ndarray,
                     popularity: np.ndarray | None = None, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """Draws of score(a) - score(b) (`score_task`'s score) over users resampled with replacement, the same
    users for both profiles (paired: both were scored on the same test users). Returns [n_boot] differences (NaN
    where a resample leaves a task unscorable)."""
    rng = np.random.default_rng(seed)
    a = _WeightedTask(kind, y_true, logits_a, popularity)
    b = _WeightedTask(kind, y_true, logits_b, popularity)
    n = len(y_true)
    out = np.empty(n_boot)
    for i in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        out[i] = a.score(w) - b.score(w)
    return out


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap draws (NaN draws ignored)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(d, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(lo), float(hi)
