"""Planted item data for the item-model tests (no Spark): items in content clusters, users who shop in one cluster
and, after the split, move on to one of its cold items; the temporal split of it; and a tiny SASRec config."""

from __future__ import annotations

import numpy as np
from ubp.models.item_eval import temporal_split
from ubp.models.sasrec import SASRecConfig

RAW_DIM = 24


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


def planted_split():
    """(skus, raw content, the temporal split at t = 1500, cold mask) of the default planted data."""
    skus, raw, seqs, cold = planted()
    split = temporal_split(seqs, catalog=skus, split_ts=1500)
    return skus, raw, split, cold


def sasrec_config(split, variant: str, **kw) -> SASRecConfig:
    return SASRecConfig(n_items=split.index.n_items, n_warm=split.index.n_warm, d_model=16, max_len=12,
                        variant=variant, batch_size=32, **kw)
