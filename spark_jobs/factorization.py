"""Factorisation ensemble member: user x category and user x url matrices, factorised, as in the seed solution.

- user x category: product events before as_of joined to the catalog; weight buy 3, add_to_cart 1 (removes 0).
- user x url: page-visit counts.
Each matrix is factorised on its own (64 factors by default); a user's member vector is
[category factors | url factors] (zeros for a half the user has no interactions in). Two methods:
- "als": Spark MLlib implicit ALS (the seed solution's choice; distributed). Ids are mapped to dense ints with
  `zipWithIndex` (no driver collect) because MLlib ALS needs int ids and ours are bigint. Each iteration is several
  Spark jobs: on a loaded 2-core machine even 6 users took ~2 minutes, so it is not the default here.
- "svd" (default): truncated SVD (randomized) of the log1p-weighted matrices, streamed: the components are fitted
  in the driver on the triplets of a hashed sample of at most `fit_users` (100k) users, then every user's row is
  projected onto them per Arrow batch on the executors (`svd_half`). Urls are hashed into `URL_BUCKETS` (262,144)
  columns first, so the url components stay small enough to ship to the executors at 12.7M urls (at the demo's
  few thousand urls, collisions are rare).

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
URL_BUCKETS = 1 << 18  # SVD url half: urls hashed into this many columns (12.7M urls at the challenge's size)


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


def svd_components(client_ids: np.ndarray, items: np.ndarray, weights: np.ndarray, rank: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD of the log1p-weighted user x item matrix -> (sorted unique item ids, (n_items, rank) float32
    components): a user's factors are then their log1p-weighted row times the components (`project`).

    Fewer items than `rank` give fewer components; the rest is zero. A single item: its one component is 1 (the log
    weight itself is the factor)."""
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    _, u = np.unique(client_ids, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    m = csr_matrix((np.log1p(weights.astype(np.float64)), (u, i)), shape=(int(u.max()) + 1, len(item_ids)))
    k = min(rank, min(m.shape) - 1)
    comps = np.zeros((len(item_ids), rank), dtype=np.float32)  # [items, rank]
    if k >= 1:
        comps[:, :k] = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed).fit(m).components_.T
    elif len(item_ids) == 1:
        comps[0, 0] = 1.0
    return item_ids, comps


def project(offsets: np.ndarray, items: np.ndarray, weights: np.ndarray, item_ids: np.ndarray,
            comps: np.ndarray) -> np.ndarray:
    """Users' factors [n, rank]: user j's log1p-weighted items `items[offsets[j]:offsets[j+1]]` times the
    components; items the fit did not see count zero."""
    from scipy.sparse import csr_matrix

    pos = np.clip(np.searchsorted(item_ids, items), 0, max(len(item_ids) - 1, 0))
    known = (item_ids[pos] == items) if len(item_ids) else np.zeros(len(items), bool)
    x = csr_matrix((np.log1p(weights.astype(np.float64)) * known, pos, offsets - offsets[0]),
                   shape=(len(offsets) - 1, max(len(item_ids), 1)))  # [n, items]
    return np.asarray(x @ comps if len(item_ids) else np.zeros((len(offsets) - 1, comps.shape[1])), dtype=np.float32)


def svd_user_factors(client_ids: np.ndarray, items: np.ndarray, weights: np.ndarray, rank: int, seed: int = 0):
    """In memory: (sorted unique client_ids, (n, rank) factors) of every user of the triplets, fitted on all."""
    item_ids, comps = svd_components(client_ids, items, weights, rank, seed)
    order = np.argsort(client_ids, kind="stable")
    users, starts = np.unique(client_ids[order], return_index=True)
    offsets = np.append(starts, len(order))
    return users, project(offsets, items[order], weights[order], item_ids, comps)


def svd_half(interactions: DataFrame, config: ALSConfig, fit_users: int = 100_000) -> DataFrame:
    """(client_id, factors array<float>, n int) from one matrix by truncated SVD, streamed: the components are fitted
    in the driver on the triplets of a hashed sample of at most ~`fit_users` users, then every user is projected per
    Arrow batch on the executors (nothing per user is collected)."""
    import pyarrow as pa
    from ubp.spark_jobs.ensemble import hash_sample
    from ubp.spark_jobs.vectors import float_lists

    users = interactions.select("client_id").distinct().count()
    t = hash_sample(interactions, fit_users, users).toArrow()
    if t.num_rows:
        item_ids, comps = svd_components(t.column("client_id").to_numpy().astype(np.int64),
                                         t.column("item").to_numpy().astype(np.int64),
                                         t.column("weight").to_numpy(), config.rank, config.seed)
    else:
        item_ids, comps = np.zeros(0, np.int64), np.zeros((0, config.rank), np.float32)
    def factors(batches):
        for b in batches:
            its, ws = b.column("items"), b.column("weights")
            offsets = its.offsets.to_numpy().astype(np.int64)
            f = project(offsets, its.flatten().to_numpy().astype(np.int64), ws.flatten().to_numpy(), item_ids,
                        comps)  # [users, rank]
            yield pa.RecordBatch.from_arrays([b.column("client_id"), float_lists(f), b.column("n")],
                                             ["client_id", "factors", "n"])

    grouped = interactions.groupBy("client_id").agg(
        F.collect_list(F.col("item").cast("bigint")).alias("items"),
        F.collect_list(F.col("weight").cast("float")).alias("weights"), F.count("*").cast("int").alias("n"))
    return grouped.mapInArrow(factors, "client_id bigint, factors array<float>, n int")


def user_factors(events: DataFrame, products: DataFrame, as_of: datetime, config: ALSConfig,
                 fit_users: int = 100_000) -> DataFrame:
    """The member table rows (USER_FACTORS schema minus created_at), one row per user: the category half and the url
    half by `config.method` (SVD: urls hashed into `URL_BUCKETS` buckets, components fitted on a user sample)."""
    parts = []
    for name, inter in (
        ("category", category_interactions(events, products, as_of)),
        ("url", url_interactions(events, as_of)),
    ):
        if config.method == "svd":
            if name == "url":
                inter = (inter.withColumn("item", F.pmod(F.xxhash64("item"), F.lit(URL_BUCKETS)))
                         .groupBy("client_id", "item").agg(F.sum("weight").cast("float").alias("weight")))
            half = svd_half(inter, config, fit_users)
        else:
            half = als_user_factors(inter, config)
        parts.append(half.withColumnRenamed("factors", name).withColumnRenamed("n", f"n_{name}"))
    zeros = F.array_repeat(F.lit(0.0).cast("float"), config.rank)
    joined = parts[0].join(parts[1], "client_id", "full_outer")
    return joined.select(
        "client_id",
        F.concat(F.coalesce("category", zeros), F.coalesce("url", zeros)).alias("embedding"),
        F.lit(model_version(config, as_of)).alias("model_version"),
        F.lit(as_of).cast("timestamp").alias("as_of"),
        (F.coalesce("n_category", F.lit(0)) + F.coalesce("n_url", F.lit(0))).cast("bigint").alias("n_events"),
    )
