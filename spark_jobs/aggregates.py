"""Gold `user_aggregates`: hand-made features per user, one fixed-order float vector.

Two families (both computed in ONE `groupBy(client_id)` over the events strictly before as-of):
1. The RecSys Challenge 2025 official baseline: for each product event type (add, remove, buy) and attribute
   (category, price, sku), and for page visits' url, the counts over the last 1, 7 and 30 days of the 10 most
   frequent values (ranked over all users' events before as-of; ties by smaller value); plus the mean of the user's
   16 query codes over their searches.
2. The seed solution's statistics: event counts per type (all time and per window), active days/weeks, mean gap
   between events, days since first/last event, distinct skus/categories/urls, total and mean spend in price
   buckets (buys and add-to-carts), add-to-cart -> buy conversion, week-over-week and month-over-month changes.

Feature names are rank-based ("product_buy_sku_top3_7d"), so the name list (and its hash) is fixed; which raw value
each rank meant in a build is returned by the stage (`top_values`) and logged. Missing values are 0, never NaN.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ubp.tables import EVENT_TYPE_CODE, EVENT_TYPES, PRODUCT_EVENTS, QUERY_CODES, USER_AGGREGATES

WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
TOP_N = 10
# (event type, attribute) groups of the official baseline
TOP_GROUPS: tuple[tuple[str, str], ...] = (
    *((et, attr) for et in PRODUCT_EVENTS for attr in ("category", "price", "sku")),
    ("page_visit", "url"),
)
STATS: tuple[str, ...] = (
    *(f"n_{et}" for et in EVENT_TYPES),
    *(f"n_{et}_{w}d" for et in EVENT_TYPES for w in WINDOWS_DAYS),
    "n_events", "n_active_days", "n_active_weeks", "events_per_active_day",
    "mean_gap_days", "days_since_first", "days_since_last",
    "n_distinct_sku", "n_distinct_category", "n_distinct_url",
    "buy_spend_total", "buy_spend_mean", "cart_spend_total", "cart_spend_mean",
    "add_to_buy_conversion",
    "delta_events_week", "delta_events_month", "delta_buys_month",
)
DAY_S = 86400


@cache
def feature_names() -> tuple[str, ...]:
    """The fixed order of `user_aggregates.features`."""
    names = [f"{et}_{attr}_top{r}_{w}d" for et, attr in TOP_GROUPS for r in range(1, TOP_N + 1) for w in WINDOWS_DAYS]
    names += [f"query_mean_{i}" for i in range(QUERY_CODES)]
    names += list(STATS)
    return tuple(names)


def names_version(names: tuple[str, ...]) -> str:
    """Hash of an ordered feature-name list: the `feature_names_version` of a feature table's rows."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def feature_names_version() -> str:
    return names_version(feature_names())


def top_values(prepared: DataFrame, n: int = TOP_N) -> dict[str, list[int]]:
    """The `n` most frequent values per baseline group, `{"product_buy.sku": [v1, v2, ...]}` (small, collected)."""
    from pyspark.sql import Window

    pairs = F.array(*[
        F.when((F.col("etype") == EVENT_TYPE_CODE[et]) & F.col(attr).isNotNull(),
               F.struct(F.lit(f"{et}.{attr}").alias("g"), F.col(attr).cast("bigint").alias("v")))
        for et, attr in TOP_GROUPS
    ])
    counts = (prepared.select(F.explode(F.filter(pairs, lambda p: p.isNotNull())).alias("p"))
              .groupBy(F.col("p.g").alias("g"), F.col("p.v").alias("v")).count())
    w = Window.partitionBy("g").orderBy(F.col("count").desc(), F.col("v").asc())
    rows = counts.withColumn("r", F.row_number().over(w)).where(F.col("r") <= n).orderBy("g", "r").collect()
    out: dict[str, list[int]] = {f"{et}.{attr}": [] for et, attr in TOP_GROUPS}
    for r in rows:
        out[r["g"]].append(int(r["v"]))
    return out


def build_aggregates(prepared: DataFrame, as_of: datetime, tops: dict[str, list[int]] | None = None
                     ) -> tuple[DataFrame, dict[str, list[int]]]:
    """Prepared events (see `spark_jobs.vocab.prepare_events`, already cut at as_of) -> `user_aggregates` rows."""
    tops = top_values(prepared) if tops is None else tops
    as_of_s = int(as_of.timestamp())
    age = F.lit(as_of_s) - F.col("ts")  # seconds before as_of, > 0
    within = {w: age <= w * DAY_S for w in WINDOWS_DAYS}
    is_type = {et: F.col("etype") == EVENT_TYPE_CODE[et] for et in EVENT_TYPES}

    def n_if(cond):
        return F.count(F.when(cond, 1)).cast("double")

    feats: list = []
    for et, attr in TOP_GROUPS:
        values = tops.get(f"{et}.{attr}", [])
        for r in range(TOP_N):
            if r < len(values):
                hit = is_type[et] & (F.col(attr) == F.lit(values[r]))
                feats += [n_if(hit & within[w]) for w in WINDOWS_DAYS]
            else:  # fewer than 10 distinct values in the data
                feats += [F.lit(0.0)] * len(WINDOWS_DAYS)
    is_search = is_type["search_query"] & F.col("query").isNotNull()
    feats += [F.avg(F.when(is_search, F.col("query")[i])) for i in range(QUERY_CODES)]

    n_all = F.count(F.lit(1)).cast("double")
    n_type = {et: n_if(is_type[et]) for et in EVENT_TYPES}
    first, last = F.min("ts"), F.max("ts")
    active_days = F.size(F.collect_set("eday")).cast("double")
    buy_price = F.when(is_type["product_buy"], F.col("price"))
    cart_price = F.when(is_type["add_to_cart"], F.col("price"))
    stats = {
        **{f"n_{et}": n_type[et] for et in EVENT_TYPES},
        **{f"n_{et}_{w}d": n_if(is_type[et] & within[w]) for et in EVENT_TYPES for w in WINDOWS_DAYS},
        "n_events": n_all,
        "n_active_days": active_days,
        "n_active_weeks": F.size(F.collect_set(F.floor((F.col("eday") + 3) / 7))).cast("double"),  # Monday weeks
        "events_per_active_day": n_all / active_days,
        "mean_gap_days": F.when(n_all > 1, (last - first) / (n_all - 1) / DAY_S),
        "days_since_first": (F.lit(as_of_s) - first) / DAY_S,
        "days_since_last": (F.lit(as_of_s) - last) / DAY_S,
        "n_distinct_sku": F.size(F.collect_set(F.when(F.col("etype") <= 2, F.col("sku")))).cast("double"),
        "n_distinct_category": F.size(F.collect_set("category")).cast("double"),
        "n_distinct_url": F.size(F.collect_set("url")).cast("double"),
        "buy_spend_total": F.sum(buy_price).cast("double"),
        "buy_spend_mean": F.avg(buy_price),
        "cart_spend_total": F.sum(cart_price).cast("double"),
        "cart_spend_mean": F.avg(cart_price),
        "add_to_buy_conversion": F.when(n_type["add_to_cart"] > 0, n_type["product_buy"] / n_type["add_to_cart"]),
        "delta_events_week": n_if(within[7]) - n_if((age > 7 * DAY_S) & (age <= 14 * DAY_S)),
        "delta_events_month": n_if(within[30]) - n_if((age > 30 * DAY_S) & (age <= 60 * DAY_S)),
        "delta_buys_month": n_if(is_type["product_buy"] & within[30])
        - n_if(is_type["product_buy"] & (age > 30 * DAY_S) & (age <= 60 * DAY_S)),
    }
    feats += [stats[s] for s in STATS]
    names = feature_names()
    assert len(feats) == len(names), (len(feats), len(names))
    agg = prepared.groupBy("client_id").agg(
        F.count(F.lit(1)).alias("n_events"),
        *[F.coalesce(f.cast("double"), F.lit(0.0)).cast("float").alias(f"f{i}") for i, f in enumerate(feats)],
    )
    out = agg.select(
        "client_id",
        F.lit(as_of).cast("timestamp").alias("as_of"),
        "n_events",
        F.array(*[F.col(f"f{i}") for i in range(len(names))]).alias("features"),
        F.lit(feature_names_version()).alias("feature_names_version"),
    )
    return out.select([F.col(c.name).cast(c.type).alias(c.name) for c in USER_AGGREGATES.columns]), tops
