"""Factorisation ensemble member: user x category and user x url matrices, factorised, as in the seed solution.

- user x category: product events before as_of joined to the catalog; weight buy 3, add_to_cart 1 (removes 0).
- user x url: page-visit counts.
Each matrix is factorised on its own (64 factors by default); a user's member vector is
[category factors | url factors] (zeros for a half the user has no interactions in). Two methods:
- "als": Spark MLlib implicit ALS (the seed solution's choice; distributed). Ids are mapped to dense ints with
  `zipWithIndex` (no driver collect) because MLlib ALS needs int ids and ours are bigint. Each iteration is several
  Spark jobs: on a loaded 2-core machine even 6 users took ~2 minutes, so it is not the default here.
- "svd" (default): truncated SVD (randomized) of the log1p-weighted matrices in the driver. The interaction triplets
  (one row per user and item with a non-zero weight) are collected through Arrow: fine for demo and
  mid-size data (tens of millions of non-zeros), not for the full challenge scale; use "als" there.

The member is written to a gold table owned by the ensemble stage, whose schema lives here (not in ubp/tables.py,
it is an internal member table, not a public contract): `<root>/gold/user_factors`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

EVENT_WEIGHTS: dict[str, float] = {"product_buy": 3.0, "add_to_cart": 1.0}


@dataclass(frozen=True)
class ALSConfig:
    method: str = "svd"  # "svd" | "als"
    rank: int = 64
    max_iter: int = 10
    reg_param: float = 0.1
    alpha: float = 1.0
    seed: int = 0


def model_version(config: ALSConfig, as_of: datetime) -> str:
    """Deterministic version of (parameters, as_of); as_of is compared as naive UTC."""
    naive = as_of.astimezone(UTC).replace(tzinfo=None) if as_of.tzinfo else as_of
    payload = json.dumps({**asdict(config), "as_of": naive.isoformat()}, sort_keys=True)
    return f"{config.method}-" + hashlib.sha1(payload.encode()).hexdigest()[:12]


def category_interactions(events: DataFrame, products: DataFrame, as_of: datetime) -> DataFrame:
    """(client_id, item, weight): buy 3 / add 1 per event, summed per user and category, events before as_of."""
    weight = F.lit(0.0)
    for name, w in EVENT_WEIGHTS.items():
        weight = F.when(F.col("event_type") == name, F.lit(w)).otherwise(weight)
    return (
        events.filter((F.col("timestamp") < F.lit(as_of)) & F.col("event_type").isin(*EVENT_WEIGHTS))
        .join(products.select("sku", "category"), "sku", "inner")
        .groupBy("client_id", F.col("category").alias("item"))
        .agg(F.sum(weight).cast("float").alias("weight"))
    )


def url_interactions(events: DataFrame, as_of: datetime) -> DataFrame:
    """(client_id, item, weight): page visits per user and url, events before as_of."""
    return (
        events.filter((F.col("timestamp") < F.lit(as_of)) & (F.col("event_type") == "page_visit"))
        .groupBy("client_id", F.col("url").alias("item"))
        .agg(F.count("*").cast("float").alias("weight"))
    )


def _dense_index(df: DataFrame, col: str, out: str) -> DataFrame:
    """(col, out int): a dense 0..n-1 id per distinct value, computed on the executors."""
    spark = df.sparkSession
    rdd = df.select(col).distinct().rdd.map(lambda r: r[0]).zipWithIndex()
    return spark.createDataFrame(rdd, f"{col} bigint, {out} int")


def als_user_factors(interactions: DataFrame, config: ALSConfig) -> DataFrame:
    """(client_id, factors array<float>, n int) from one implicit-feedback matrix."""
    from pyspark.ml.recommendation import ALS

    users = _dense_index(interactions, "client_id", "uid")
    items = _dense_index(interactions, "item", "iid")
    data = interactions.join(users, "client_id").join(items, "item").select("uid", "iid", "weight").cache()
    als = ALS(
        rank=config.rank, maxIter=config.max_iter, regParam=config.reg_param, alpha=config.alpha,
        implicitPrefs=True, userCol="uid", itemCol="iid", ratingCol="weight", seed=config.seed,
        coldStartStrategy="drop", nonnegative=False,
    )
    model = als.fit(data)
    counts = data.groupBy("uid").agg(F.count("*").alias("n"))
    factors = (
        model.userFactors.withColumnRenamed("id", "uid")
        .join(users, "uid").join(counts, "uid", "left")
        .select("client_id", F.col("features").alias("factors"), F.coalesce("n", F.lit(0)).alias("n"))
    )
    return factors


def svd_user_factors(client_ids: np.ndarray, items: np.ndarray, weights: np.ndarray, rank: int, seed: int = 0):
    """Truncated SVD of the log1p-weighted user x item matrix -> (sorted unique client_ids, (n, rank) factors).

    Fewer items than `rank` give fewer components; the rest is zero-padded so every member row has `rank` values.
    """
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    users, u = np.unique(client_ids, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    m = csr_matrix((np.log1p(weights.astype(np.float64)), (u, i)), shape=(len(users), int(i.max()) + 1))
    k = min(rank, min(m.shape) - 1)
    out = np.zeros((len(users), rank), dtype=np.float32)
    if k >= 1:
        out[:, :k] = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed).fit_transform(m)
    elif m.shape[1] == 1:  # a single item: the (log) weight itself is the only factor
        out[:, 0] = m.toarray()[:, 0]
    return users, out


def user_factors_svd(events: DataFrame, products: DataFrame, as_of: datetime, config: ALSConfig):
    """(client_ids, (n, 2*rank) float32, n_interactions) with the SVD method; triplets collected through Arrow."""
    halves, counts = [], []
    for inter in (category_interactions(events, products, as_of), url_interactions(events, as_of)):
        t = inter.toArrow()
        cid = t.column("client_id").to_numpy().astype(np.int64)
        if len(cid) == 0:
            halves.append((np.zeros(0, np.int64), np.zeros((0, config.rank), np.float32)))
            counts.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        item = t.column("item").to_numpy().astype(np.int64)
        users, f = svd_user_factors(cid, item, t.column("weight").to_numpy(), config.rank, config.seed)
        halves.append((users, f))
        counts.append(np.unique(cid, return_counts=True))
    ids = np.unique(np.concatenate([h[0] for h in halves]))
    x = np.zeros((len(ids), 2 * config.rank), dtype=np.float32)
    n = np.zeros(len(ids), dtype=np.int64)
    for j, ((users, f), (cu, cn)) in enumerate(zip(halves, counts, strict=True)):
        pos = np.searchsorted(ids, users)
        x[pos, j * config.rank:(j + 1) * config.rank] = f
        n[np.searchsorted(ids, cu)] += cn
    return ids, x, n


def user_factors(events: DataFrame, products: DataFrame, as_of: datetime, config: ALSConfig) -> DataFrame:
    """ALS method: the member table rows (USER_FACTORS schema minus created_at), one row per user."""
    parts = []
    for name, inter in (
        ("category", category_interactions(events, products, as_of)),
        ("url", url_interactions(events, as_of)),
    ):
        parts.append(als_user_factors(inter, config).withColumnRenamed("factors", name).withColumnRenamed("n", f"n_{name}"))
    zeros = F.array_repeat(F.lit(0.0).cast("float"), config.rank)
    joined = parts[0].join(parts[1], "client_id", "full_outer")
    return joined.select(
        "client_id",
        F.concat(F.coalesce("category", zeros), F.coalesce("url", zeros)).alias("embedding"),
        F.lit(model_version(config, as_of)).alias("model_version"),
        F.lit(as_of).cast("timestamp").alias("as_of"),
        (F.coalesce("n_category", F.lit(0)) + F.coalesce("n_url", F.lit(0))).cast("bigint").alias("n_events"),
    )
