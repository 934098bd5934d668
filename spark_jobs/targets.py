"""Evaluation targets from the 14 days after an as-of (the RecSys Challenge 2025 protocol), as pure DataFrame functions.

Model input is every event strictly before `as_of`; targets come only from the window `[as_of, as_of + days]`.
Tasks (label conventions of the challenge):
The window includes its end (as_of + days): with the default as_of = last purchase - days, the last purchase is a
target.
- churn: users active before as_of (at least one purchase); label 1 = no purchase in the window.
- conversion: the same label over every user with any event before as_of (the "relevant" users).
- category / sku / price propensity: multilabel over the `top_n` most bought targets in the window (category id,
  sku, price bucket); label j = 1 if the user bought target j in the window.
- new_sku propensity: the same over skus first seen in the window (no event of any type before as_of).
Each target also gets its popularity = purchases before as_of (what the novelty metric normalises by).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

BUY = "product_buy"
BINARY_TASKS: tuple[str, ...] = ("churn", "conversion")
PROPENSITY_TASKS: tuple[str, ...] = ("category", "sku", "new_sku", "price")
TASKS: tuple[str, ...] = BINARY_TASKS + PROPENSITY_TASKS
WINDOW_DAYS = 14


def default_as_of(events: DataFrame, days: int = WINDOW_DAYS) -> datetime:
    """The challenge's split: end = last purchase timestamp, as_of = end - days (one scalar aggregate)."""
    end = events.filter(F.col("event_type") == BUY).agg(F.max("timestamp")).first()[0]
    if end is None:
        raise ValueError("no purchases in the events table: cannot place the evaluation window")
    return end - timedelta(days=days)


def input_events(events: DataFrame, as_of: datetime) -> DataFrame:
    """What a profile may see: events strictly before as_of."""
    return events.filter(F.col("timestamp") < F.lit(as_of))


def window_events(events: DataFrame, as_of: datetime, days: int = WINDOW_DAYS) -> DataFrame:
    """The target window [as_of, as_of + days]."""
    end = as_of + timedelta(days=days)
    return events.filter((F.col("timestamp") >= F.lit(as_of)) & (F.col("timestamp") <= F.lit(end)))


def population(events: DataFrame, as_of: datetime) -> DataFrame:
    """Users with any event before as_of: the ones that have a profile."""
    return input_events(events, as_of).select("client_id").distinct()


def active_users(events: DataFrame, as_of: datetime) -> DataFrame:
    """Users with a purchase before as_of (the churn task's population)."""
    return input_events(events, as_of).filter(F.col("event_type") == BUY).select("client_id").distinct()


def churn_labels(events: DataFrame, as_of: datetime, days: int = WINDOW_DAYS, active_only: bool = True) -> DataFrame:
    """(client_id, label): 1 = no purchase in the window. active_only=False gives the conversion task."""
    users = active_users(events, as_of) if active_only else population(events, as_of)
    buyers = (
        window_events(events, as_of, days).filter(F.col("event_type") == BUY)
        .select("client_id").distinct().withColumn("bought", F.lit(1))
    )
    return (
        users.join(buyers, "client_id", "left")
        .select("client_id", F.when(F.col("bought").isNull(), 1).otherwise(0).cast("int").alias("label"))
    )


def _buys_with_target(events: DataFrame, products: DataFrame, task: str) -> DataFrame:
    """Purchases with a `target` column for the task (category, sku or price bucket)."""
    buys = events.filter(F.col("event_type") == BUY).select("client_id", "timestamp", "sku")
    if task in ("sku", "new_sku"):
        return buys.withColumn("target", F.col("sku").cast("bigint"))
    if task in ("category", "price"):
        cat = products.select("sku", F.col(task).cast("bigint").alias("target"))
        return buys.join(cat, "sku", "inner")
    raise ValueError(f"unknown propensity task {task!r}; expected one of {PROPENSITY_TASKS}")


def propensity_targets(
    events: DataFrame, products: DataFrame, as_of: datetime, task: str, days: int = WINDOW_DAYS, top_n: int = 100
) -> tuple[list[int], list[int]]:
    """The task's label space: the `top_n` most bought targets in the window, and their popularity before as_of.

    Returns (targets, popularity), both small lists (top_n values), sorted by window purchases desc, then id.
    """
    window = _buys_with_target(window_events(events, as_of, days), products, task)
    if task == "new_sku":
        seen = input_events(events, as_of).filter(F.col("sku").isNotNull()).select("sku").distinct()
        window = window.join(seen, "sku", "left_anti")
    top = (
        window.groupBy("target").agg(F.count("*").alias("n"))
        .orderBy(F.desc("n"), F.asc("target")).limit(top_n)
    )
    before = (
        _buys_with_target(input_events(events, as_of), products, task)
        .groupBy("target").agg(F.count("*").alias("popularity"))
    )
    rows = (
        top.join(before, "target", "left").fillna(0, ["popularity"])
        .orderBy(F.desc("n"), F.asc("target")).collect()
    )
    return [int(r["target"]) for r in rows], [int(r["popularity"]) for r in rows]


def propensity_labels(
    events: DataFrame,
    products: DataFrame,
    as_of: datetime,
    task: str,
    targets: list[int],
    days: int = WINDOW_DAYS,
) -> DataFrame:
    """(client_id, labels array<int>): indices into `targets` the user bought in the window; only users with >= 1.

    Users of the population without a row have the all-zero label.
    """
    spark = events.sparkSession
    index = spark.createDataFrame([(int(t), i) for i, t in enumerate(targets)], "target bigint, idx int")
    window = _buys_with_target(window_events(events, as_of, days), products, task)
    return (
        window.join(F.broadcast(index), "target", "inner")
        .groupBy("client_id").agg(F.array_sort(F.collect_set("idx")).alias("labels"))
    )


# ------------------------------------------------------------------------------------------------------------
# The same labels from three small collects (what `ubp evaluate` uses: 3 Spark jobs instead of ~15).
# Sizes: users (activity), purchases in the 14-day window, skus bought before the as-of.
# ------------------------------------------------------------------------------------------------------------
def user_activity(events: DataFrame, as_of: datetime) -> DataFrame:
    """(client_id, active int): every user with an event before as_of; active = bought before as_of."""
    return input_events(events, as_of).groupBy("client_id").agg(
        F.max((F.col("event_type") == BUY).cast("int")).alias("active")
    )


def window_purchases(events: DataFrame, products: DataFrame, as_of: datetime, days: int = WINDOW_DAYS) -> DataFrame:
    """(client_id, sku, category, price, new_sku): purchases in the window; new_sku = sku had no event before."""
    seen = input_events(events, as_of).filter(F.col("sku").isNotNull()).select("sku").distinct() \
        .withColumn("seen", F.lit(True))
    buys = window_events(events, as_of, days).filter(F.col("event_type") == BUY).select("client_id", "sku")
    return (
        buys.join(products.select("sku", "category", "price"), "sku", "left")
        .join(seen, "sku", "left")
        .select("client_id", "sku", "category", "price", F.col("seen").isNull().alias("new_sku"))
    )


def input_purchase_counts(events: DataFrame, products: DataFrame, as_of: datetime) -> DataFrame:
    """(sku, category, price, n): purchases per sku before as_of (the popularity behind novelty)."""
    buys = input_events(events, as_of).filter(F.col("event_type") == BUY).groupBy("sku").agg(F.count("*").alias("n"))
    return buys.join(products.select("sku", "category", "price"), "sku", "left")


def labels_from_frames(activity, window, counts, top_n: int = 100) -> dict[str, dict]:
    """Every task's labels from the three collected frames (pandas), same rules as the DataFrame functions above.

    Returns {task: {"kind", "client_id" (n,), "y" ((n,) or (n, T)), "targets", "popularity"}}; propensity rows
    cover every user of `activity` (the population), binary rows the task's population.
    """
    import numpy as np
    import pandas as pd

    pop_ids = np.sort(activity["client_id"].to_numpy(np.int64))
    buyers = set(window["client_id"].astype("int64").tolist())
    out: dict[str, dict] = {}
    act = activity.sort_values("client_id")
    for task, users in (("churn", act[act["active"] == 1]["client_id"]), ("conversion", act["client_id"])):
        ids = users.to_numpy(np.int64)
        y = np.array([0.0 if c in buyers else 1.0 for c in ids.tolist()], dtype=np.float32)
        out[task] = {"kind": "binary", "client_id": ids, "y": y, "targets": None, "popularity": None}
    row_of = pd.Series(np.arange(len(pop_ids)), index=pop_ids)
    for task in PROPENSITY_TASKS:
        col = "sku" if task in ("sku", "new_sku") else task
        w = window[window["new_sku"]] if task == "new_sku" else window
        w = w.dropna(subset=[col])
        if w.empty:
            continue
        n = w.groupby(w[col].astype("int64")).size()
        order = sorted(n.index, key=lambda t: (-n[t], t))[:top_n]
        popc = counts.dropna(subset=[col]).groupby(counts[col].dropna().astype("int64"))["n"].sum()
        popularity = [int(popc.get(t, 0)) for t in order]
        idx = pd.Series(np.arange(len(order)), index=order)
        w = w[w[col].astype("int64").isin(order) & w["client_id"].isin(row_of.index)]
        y = np.zeros((len(pop_ids), len(order)), dtype=np.float32)
        y[row_of[w["client_id"].astype("int64")].to_numpy(), idx[w[col].astype("int64")].to_numpy()] = 1.0
        out[task] = {"kind": "multilabel", "client_id": pop_ids, "y": y, "targets": order, "popularity": popularity}
    return out


def collect_labels(events: DataFrame, products: DataFrame, as_of: datetime, days: int = WINDOW_DAYS,
                   top_n: int = 100) -> dict[str, dict]:
    """All tasks' labels with three Arrow collects (see `labels_from_frames`)."""
    return labels_from_frames(
        user_activity(events, as_of).toArrow().to_pandas(),
        window_purchases(events, products, as_of, days).toArrow().to_pandas(),
        input_purchase_counts(events, products, as_of).toArrow().to_pandas(),
        top_n,
    )
