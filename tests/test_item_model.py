"""Item model (issue 5), no Spark: delta bound, cold vectors, warm-only content transform, planted cold start,
evaluation protocol, resume, and the offline sentence encoder."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from ubp.models.content_prep import ContentTransform
from ubp.models.item_eval import metrics_from_ranks, product_sequence, ranks, temporal_split
from ubp.models.sasrec import SASRecConfig
from ubp.models.train_item import evaluate, item_offsets, prepare_content, train_sasrec

RAW_DIM = 24


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train faster on one thread, and the CI machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted(seed: int = 0, n_clusters: int = 5, warm_per: int = 16, cold_per: int = 2, users: int = 240):
    """Items in content clusters; each user shops in one cluster; after the split (t >= 1500) most users move on to
    one of their cluster's cold items (never seen before the split), the rest to an unseen warm item."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, RAW_DIM)) * 2
    skus, raw, cluster, cold = [], [], [], []
    for c in range(n_clusters):
        for j in range(warm_per + cold_per):
            skus.append(1000 + 7 * len(skus))
            raw.append(centers[c] + 0.5 * rng.standard_normal(RAW_DIM))
            cluster.append(c)
            cold.append(j >= warm_per)
    skus, cluster, cold = np.array(skus), np.array(cluster), np.array(cold)
    raw = np.array(raw, dtype=np.float32)
    seqs = []
    for u in range(users):
        c = rng.integers(n_clusters)
        warm_items = skus[(cluster == c) & ~cold]
        n = int(rng.integers(5, 10))
        items = rng.choice(warm_items, n, replace=False)
        ts = np.sort(rng.integers(0, 1000, n))
        if rng.random() < 0.6:
            target = rng.choice(skus[(cluster == c) & cold])
        else:
            target = rng.choice(np.setdiff1d(warm_items, items))
        seqs.append((np.r_[items, target], np.r_[ts, 2000 + u]))
    return skus, raw, seqs, cold


@pytest.fixture(scope="module")
def data():
    skus, raw, seqs, cold = planted()
    split = temporal_split(seqs, catalog=skus, split_ts=1500)
    return skus, raw, split, cold


def _config(split, variant: str, **kw) -> SASRecConfig:
    return SASRecConfig(n_items=split.index.n_items, n_warm=split.index.n_warm, d_model=16, max_len=12,
                        variant=variant, batch_size=32, **kw)


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


def test_transform_save_load_roundtrip(tmp_path):
    x = np.random.default_rng(0).standard_normal((30, 12)).astype(np.float32)
    t = ContentTransform.fit(x, 16)  # more dims than rank: zero-padded
    t.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    u = ContentTransform.load(tmp_path)
    np.testing.assert_array_equal(t.transform(x), u.transform(x))
    assert u.dim == 16


def test_delta_norm_bound_and_cold_vectors(data, tmp_path):
    skus, raw, split, _ = data
    bound = 0.01  # small, so that three epochs push against it
    cfg = _config(split, "delta", delta_max=bound)
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
        cfg = _config(split, variant, **kw)
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
        cfg = _config(split, variant)
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
    cfg = _config(split, "delta")
    _, content, _ = prepare_content(split.index, skus, raw, cfg.d_model)
    train_sasrec(split, content, cfg, tmp_path, max_epochs=2, patience=50, show_progress=False)
    _, summary = train_sasrec(split, content, cfg, tmp_path, max_epochs=3, patience=50, show_progress=False)
    from ubp.models.common import read_metrics

    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert summary["epochs_run"] == 3 and (tmp_path / "loss.png").exists()


@pytest.fixture(scope="module")
def encoder():
    from ubp.models.content_encoder import TextEncoder

    return TextEncoder(batch_size=8)


def test_encoder_offline_similar_texts(encoder, monkeypatch):
    """The bundled weights load with the hub offline and every socket connect refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    v = encoder.encode(["Trail running shoes, waterproof, red", "Red waterproof trail running shoes",
                        "Stainless steel kitchen knife set"])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    assert v[0] @ v[1] > 0.8 > v[0] @ v[2] + 0.3


def test_name_code_fallback_is_deterministic_and_similarity_preserving():
    from ubp.models.content_encoder import encode_name_codes

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, 16)
    near = np.clip(a + rng.integers(-5, 6, 16), 0, 255)
    far = rng.integers(0, 256, 16)
    v = encode_name_codes([a.tolist(), near.tolist(), far.tolist(), None])
    assert v.shape == (4, 384) and np.isfinite(v).all()
    np.testing.assert_array_equal(v, encode_name_codes([a.tolist(), near.tolist(), far.tolist(), None]))
    assert v[0] @ v[1] > 0.95 and v[0] @ v[1] > v[0] @ v[2]



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


def test_demo_cold_items_are_bought_by_users_of_their_content_category(tmp_path):
    """The link the method relies on, in the demo data: a new (cold) item shares its product-type text with the
    old items of its category, and the users who take it had shopped in that category before, far more often than
    the category's share of all product events."""
    import glob

    import pandas as pd
    import pyarrow.parquet as pq

    from ubp.demo_data import generate_demo_data

    raw = tmp_path / "raw"
    generate_demo_data(raw, users=800, days=30)
    items = pq.read_table(raw / "_truth" / "items.parquet").to_pandas()
    text = pq.read_table(raw / "product_text.parquet").to_pandas()
    label = dict(zip(text.iloc[:, 0], text.iloc[:, 1].str.split(",").str[0], strict=True))  # product type
    items["label"] = items.sku.map(label)
    old_labels = items[~items.is_new].groupby("category").label.agg(set)
    new = items[items.is_new]
    assert len(new) > 0
    assert all(row.label in old_labels[row.category] for row in new.itertuples())

    ev = pd.concat([pq.read_table(f).to_pandas() for d in ("add_to_cart", "product_buy", "remove_from_cart")
                    for f in glob.glob(str(raw / d / "*.parquet"))])
    ev["t"] = pd.to_datetime(ev.timestamp)
    ev["kat"] = ev.sku.map(dict(zip(items.sku, items.category, strict=True)))
    ev["new"] = ev.sku.map(dict(zip(items.sku, items.is_new, strict=True))).astype(bool)
    ev = ev.sort_values(["client_id", "t"])
    base = ev[~ev.new].kat.value_counts(normalize=True)
    share, expected = [], []
    for _, g in ev.groupby("client_id"):
        if not g.new.any():
            continue
        first = g[g.new].iloc[0]
        hist = g[(g.t < first.t) & ~g.new]
        if len(hist):
            share.append(float((hist.kat == first.kat).mean()))
            expected.append(float(base[first.kat]))
    assert len(share) >= 15
    assert np.mean(share) > 2.5 * np.mean(expected)
