"""The item model's evaluation protocol (`models/item_eval.py`): the temporal split, ranking with seen items
removed, NDCG gains, and the statistics over seeds and users (hand-made numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from item_model_fixtures import planted_split
from ubp.models.item_eval import metrics_from_ranks, product_sequence, ranks
from user_model_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def data():
    return planted_split()


def test_split_protocol(data):
    skus, _, split, cold = data
    # warm = seen before the split; the planted cold items never are
    assert split.index.n_warm == int((~cold).sum())
    cold_skus = set(skus[cold].tolist())
    assert set(split.index.skus[split.index.n_warm + 1 :].tolist()) == cold_skus
    assert all(c.cold == (int(split.index.skus[c.target]) in cold_skus) for c in split.test)
    assert sum(c.cold for c in split.test) > 50
    # test histories are the pre-split items (prepended), never containing the target
    assert all(len(c.history) >= 5 and c.target not in set(c.history.tolist()) for c in split.test)
    # consecutive repeats collapse and non-product events (-1) are dropped
    s, t = product_sequence([5, -1, 5, 5, 7, 5], [1, 2, 3, 4, 5, 6])
    assert s.tolist() == [5, 7, 5] and t.tolist() == [1, 5, 6]


def test_ranking_removes_seen_and_never_counts_minus_inf():
    from ubp.models.item_eval import Case

    scores = torch.tensor([[float("-inf"), 9.0, 5.0, 1.0, float("-inf")]])
    assert ranks(scores, [Case(np.array([1]), 2, False)])[0] == 0  # item 1 was seen: item 2 is first
    assert ranks(scores, [Case(np.array([2]), 3, False)])[0] == 1
    assert np.isinf(ranks(scores, [Case(np.array([1]), 4, True)])[0])
    m = metrics_from_ranks(np.array([0.0, np.inf]), np.array([False, True]))
    assert m["ndcg@10_warm"] == 1.0 and m["ndcg@10_cold"] == 0.0 and m["recall@10_total"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# statistics over seeds and users (hand-made numbers)
# ---------------------------------------------------------------------------------------------------------------
def test_ndcg_gains_per_user():
    from ubp.models.item_eval import ndcg_gains

    g = ndcg_gains(np.array([0.0, 1.0, 9.0, 10.0, np.inf]))
    np.testing.assert_allclose(g, [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0, 0.0])
    m = metrics_from_ranks(np.array([0.0, 1.0, 9.0, 10.0, np.inf]), np.zeros(5, bool))
    assert m["ndcg@10_total"] == pytest.approx(g.mean())


def test_mean_std_and_aggregate_runs():
    from ubp.models.item_eval import aggregate_runs, mean_std

    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert mean_std([float("nan"), 1.0, 3.0]) == pytest.approx((2.0, np.sqrt(2.0)))
    m, s = mean_std([])
    assert m != m and s != s
    runs = [{"ndcg@10_cold": 0.1, "ndcg@10_total": 0.2, "n_cold": 88},
            {"ndcg@10_cold": 0.3, "ndcg@10_total": 0.2, "n_cold": 88}]
    agg = aggregate_runs(runs)
    assert agg["ndcg@10_cold"] == pytest.approx(0.2) and agg["std"]["ndcg@10_cold"] == pytest.approx(np.sqrt(0.02))
    assert agg["std"]["ndcg@10_total"] == 0.0 and agg["n_cold"] == 88 and agg["n_seeds"] == 2
    assert "n_cold" not in agg["std"]


def test_paired_bootstrap_hand_made():
    from ubp.models.item_eval import paired_bootstrap

    b = np.array([0.0, 0.5, 1.0, 0.25])
    # a constant per-user improvement: every resample has the same difference, so the interval is a point
    c = paired_bootstrap(b + 0.1, b, n_boot=500)
    assert c["diff"] == pytest.approx(0.1)
    assert c["diff_ci"] == pytest.approx([0.1, 0.1])
    assert c["wins"] == 4 and c["losses"] == 0 and c["p_not_better"] == 0.0
    assert c["rel"] == pytest.approx(0.5375 / 0.4375 - 1.0)  # means 0.5375 vs 0.4375
    assert c["rel_ci"] == pytest.approx([0.1 / 0.4375, 0.1 / 0.4375])  # the difference's interval / mean(b)
    # identical models: no difference, and "a beats b" is not supported
    same = paired_bootstrap(b, b, n_boot=500)
    assert same["diff"] == 0.0 and same["diff_ci"] == [0.0, 0.0] and same["ties"] == 4
    assert same["p_not_better"] == 1.0
    # b scores 0 everywhere: the relative difference is undefined, the absolute one is not
    z = paired_bootstrap(np.array([1.0, 0.0, 1.0, 0.0]), np.zeros(4), n_boot=500)
    assert z["diff"] == 0.5 and 0.0 <= z["diff_ci"][0] <= 0.5 <= z["diff_ci"][1] <= 1.0
    assert z["rel"] != z["rel"]
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    assert paired_bootstrap([], [])["n"] == 0


def test_paired_bootstrap_interval_covers_the_planted_gap():
    """Per-user noise much larger than the gap: pairing still finds it; a swapped pair gets the mirrored interval."""
    from ubp.models.item_eval import paired_bootstrap

    rng = np.random.default_rng(3)
    base = rng.random(2000)
    a = np.clip(base + 0.05 + rng.normal(0, 0.1, 2000), 0, None)
    c = paired_bootstrap(a, base, n_boot=2000, seed=1)
    assert c["diff_ci"][0] > 0.0 and c["diff_ci"][0] < 0.05 < c["diff_ci"][1]
    assert c["p_not_better"] < 0.01 and c["rel_ci"][0] > 0.0
    r = paired_bootstrap(base, a, n_boot=2000, seed=1)
    assert r["diff_ci"] == pytest.approx([-c["diff_ci"][1], -c["diff_ci"][0]])
    assert r["p_not_better"] > 0.99
    # a pure-noise difference: the interval covers 0
    noise = paired_bootstrap(base + rng.normal(0, 0.1, 2000), base, n_boot=2000, seed=1)
    assert noise["diff_ci"][0] < 0.0 < noise["diff_ci"][1]


def test_format_table_mean_std_and_comparison():
    from ubp.models.item_eval import aggregate_runs, format_table, paired_bootstrap

    def run(x: float) -> dict:
        return {**metrics_from_ranks(np.array([0.0, 20.0, x]), np.array([True, False, True])), "n_cold": 2}

    results = {"content_finetune": aggregate_runs([run(30.0), run(30.0)]),
               "delta": aggregate_runs([run(0.0), run(50.0)])}
    comp = {"cold": paired_bootstrap(np.array([1.0, 0.5]), np.array([1.0, 0.0]), n_boot=200)}
    table = format_table(results, comparisons=comp)
    assert "0.7500 ± 0.3536" in table  # delta cold NDCG over the two seeds: (1 + 0.5) / 2 ± std
    assert "mean ± std over 2 training seeds" in table
    assert "Delta vs content-init fine-tuned, NDCG@10 cold (2 users, paired)" in table
    single = format_table({"delta": run(0.0)})
    assert "±" not in single and "one training seed" in single
