"""The seed solution's statistics member `stats` (gold `user_stats`): per-user statistics that `user_aggregates`
does not already hold, one fixed-order float vector per user, entering the ensemble through the uniform quantile
transform only (as the seed's `stat_features` did).

Computed from the same prepared events as the aggregates (`spark_jobs.vocab.prepare_events`: only events strictly
before as-of) as Spark aggregates written straight to Delta: nothing per user reaches the driver. Two shuffles: one
`groupBy(client_id)` over all events and one `groupBy(client_id, sku)` over product events (add -> buy conversion,
popularity of the bought skus), joined per user.

Columns (`feature_names()`), in days where a time:
- per event type (the five of `EVENT_TYPES`): `days_since_last_<type>` (recency) and `mean_gap_days_<type>` (mean
  gap between consecutive events of the type = (last - first) / (n - 1)). Undefined (no event of the type; for the
  gap also a single one) = the WINDOW LENGTH: days from the first event in the data (all users, before as-of) to
  as-of, so "never" ranks after every real recency or gap.
- `n_active_months` (calendar months, UTC), `n_active_days_7d`, `n_active_days_30d`, `mean_gap_active_days` (mean
  gap between consecutive active days; the window length for a single active day), `active_span_days` (first to
  last event), `n_events_7d`, `n_events_30d`.
- add -> buy: `added_skus_bought_share` (distinct skus both added and bought / distinct skus added),
  `adds_later_bought_share` (add events whose sku the user bought later, before as-of / add events),
  `added_skus_removed_share` (distinct skus added and removed / distinct skus added); -1 when the user added nothing
  (below every real share).
- `n_distinct_bought_sku`; `bought_popularity_log`: mean over the user's buys of log1p(the sku's buys by all users
  before as-of), 0 without buys.
- `n_buys_price_low|mid|high`: buys in price buckets 0-32, 33-65, 66-99 (skus missing from the catalog: none).

Left out because `user_aggregates` has them (see `spark_jobs.aggregates.STATS`): event counts per type and in
total, active days and weeks, days since first / last event, mean price bucket of buys and adds
(`buy_spend_mean`, `cart_spend_mean`). Missing values are never NaN.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from ubp.spark_jobs.aggregates import DAY_S, names_version

from ubp.tables import EVENT_TYPE_CODE, EVENT_TYPES, PRODUCT_CODES, USER_STATS

PRICE_GROUPS: tuple[tuple[str, int, int], ...] = (("low", 0, 32), ("mid", 33, 65), ("high", 66, 99))
UNDEFINED_SHARE = -1.0
NAMES: tuple[str, ...] = (
    *(f"days_since_last_{et}" for et in EVENT_TYPES),
    *(f"mean_gap_days_{et}" for et in EVENT_TYPES),
    "n_active_months", "n_active_days_7d", "n_active_days_30d", "mean_gap_active_days", "active_span_days",
    "n_events_7d", "n_events_30d",
    "added_skus_bought_share", "adds_later_bought_share", "added_skus_removed_share",
    "n_distinct_bought_sku", "bought_popularity_log",
    *(f"n_buys_price_{g}" for g, _, _ in PRICE_GROUPS),
)


@cache
def feature_names() -> tuple[str, ...]:
    """The fixed order of `user_stats.features`."""
    return NAMES


def feature_names_version() -> str:
    return names_version(feature_names())


def window_start(prepared: DataFrame) -> int | None:
    """Epoch seconds of the first prepared event (one scalar aggregate), None when there is none."""
    return prepared.agg(F.min("ts")).first()[0]


def _user_stats(prepared: DataFrame, as_of_s: int, window_days: float) -> DataFrame:
    """Per user: everything that one `groupBy(client_id)` over all events gives."""
    age = F.lit(as_of_s) - F.col("ts")
    within = {w: age <= w * DAY_S for w in (7, 30)}
    undefined = F.lit(float(window_days))
    cols = {}
    for et in EVENT_TYPES:
        is_t = F.col("etype") == EVENT_TYPE_CODE[et]
        first, last, n = (F.min(F.when(is_t, F.col("ts"))), F.max(F.when(is_t, F.col("ts"))),
                          F.count(F.when(is_t, 1)))
        cols[f"days_since_last_{et}"] = F.coalesce((F.lit(as_of_s) - last) / DAY_S, undefined)
        cols[f"mean_gap_days_{et}"] = F.coalesce(F.when(n > 1, (last - first) / (n - 1) / DAY_S), undefined)
    month = F.year(F.timestamp_seconds("ts")) * 12 + F.month(F.timestamp_seconds("ts"))
    n_days = F.size(F.collect_set("eday"))
    cols["n_active_months"] = F.size(F.collect_set(month))
    for w in (7, 30):
        cols[f"n_active_days_{w}d"] = F.size(F.collect_set(F.when(within[w], F.col("eday"))))
    cols["mean_gap_active_days"] = F.coalesce(
        F.when(n_days > 1, (F.max("eday") - F.min("eday")) / (n_days - 1)), undefined)
    cols["active_span_days"] = (F.max("ts") - F.min("ts")) / DAY_S
    for w in (7, 30):
        cols[f"n_events_{w}d"] = F.count(F.when(within[w], 1))
    price = F.when(F.col("etype") == EVENT_TYPE_CODE["product_buy"], F.col("price"))
    for g, lo, hi in PRICE_GROUPS:
        cols[f"n_buys_price_{g}"] = F.count(F.when(price.between(lo, hi), 1))
    return prepared.groupBy("client_id").agg(
        F.count(F.lit(1)).alias("n_events"), *[c.cast("double").alias(n) for n, c in cols.items()])


def _sku_stats(prepared: DataFrame) -> DataFrame:
    """Per user: the add -> buy conversion and the bought skus' popularity, from one `groupBy(client_id, sku)`."""
    add, rm, buy = (F.col("etype") == EVENT_TYPE_CODE[et] for et in ("add_to_cart", "remove_from_cart", "product_buy"))
    per_sku = (prepared.where(F.col("etype").isin(*PRODUCT_CODES) & F.col("sku").isNotNull())
               .groupBy("client_id", "sku")
               .agg(F.count(F.when(add, 1)).alias("n_add"), F.count(F.when(rm, 1)).alias("n_rm"),
                    F.count(F.when(buy, 1)).alias("n_buy"), F.max(F.when(buy, F.col("ts"))).alias("last_buy"),
                    F.collect_list(F.when(add, F.col("ts"))).alias("adds")))
    popularity = per_sku.groupBy("sku").agg(F.sum("n_buy").alias("sku_buys"))
    added = F.col("n_add") > 0
    n_added = F.count(F.when(added, 1))

    def share(cond):
        return F.when(n_added > 0, F.count(F.when(added & cond, 1)) / n_added)

    n_adds = F.sum("n_add")
    later = F.sum(F.size(F.filter("adds", lambda t: t < F.col("last_buy"))))  # last_buy null: no add counts
    n_buys = F.sum("n_buy")
    return per_sku.join(popularity, "sku").groupBy("client_id").agg(
        share(F.col("n_buy") > 0).alias("added_skus_bought_share"),
        F.when(n_adds > 0, later / n_adds).alias("adds_later_bought_share"),
        share(F.col("n_rm") > 0).alias("added_skus_removed_share"),
        F.count(F.when(F.col("n_buy") > 0, 1)).alias("n_distinct_bought_sku"),
        F.when(n_buys > 0, F.sum(F.col("n_buy") * F.log1p("sku_buys")) / n_buys).alias("bought_popularity_log"),
    )


def build_stats(prepared: DataFrame, as_of: datetime, first_ts: int | None = None) -> DataFrame:
    """Prepared events (`spark_jobs.vocab.prepare_events`, already cut at as_of) -> `user_stats` rows.

    `first_ts`: epoch seconds of the first event in the data (the window start; None: computed here with one scalar
    aggregate). The result is a lazy DataFrame: write it, do not collect it."""
    as_of_s = int(as_of.timestamp())
    first_ts = window_start(prepared) if first_ts is None else first_ts
    window_days = (as_of_s - (first_ts if first_ts is not None else as_of_s)) / DAY_S
    fill = {"added_skus_bought_share": UNDEFINED_SHARE, "adds_later_bought_share": UNDEFINED_SHARE,
            "added_skus_removed_share": UNDEFINED_SHARE}
    joined = _user_stats(prepared, as_of_s, window_days).join(_sku_stats(prepared), "client_id", "left")
    feats = [F.coalesce(F.col(n).cast("double"), F.lit(fill.get(n, 0.0))).cast("float") for n in feature_names()]
    out = joined.select(
        "client_id",
        F.lit(as_of).cast("timestamp").alias("as_of"),
        "n_events",
        F.array(*feats).alias("features"),
        F.lit(feature_names_version()).alias("feature_names_version"),
    )
    return out.select([F.col(c.name).cast(c.type).alias(c.name) for c in USER_STATS.columns])
