"""Bronze events -> silver `user_sequences`: one chronological token sequence per user, all event types merged.

How it stays fast and out of core (no global sort, no window over all events, no Python UDF, nothing collected):
1. `tokenize`: per event, map raw values to token ids with broadcast joins (sku, url, category) and small literal
   maps (price, query codes) or arithmetic (event type, day, week).
2. `build_sequences`: ONE `groupBy(client_id)` with `collect_list` of a per-event struct whose leading fields are
   the sort key (timestamp, event-type code, sku, url, query); `sort_array` orders each user's events locally
   (deterministic: equal keys are equal events), `slice` keeps the newest `max_len`, and `array.field` extraction
   (code-generated; only the query codes need a `transform` lambda) splits the structs into the per-field arrays of
   the contract. Spark's object-hash aggregate falls back to a spilling
   sort-based aggregate when a task has many users, so tens of millions of users do not need to fit in memory.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.vocab import PRODUCT_CODES, SEARCH_CODE, VISIT_CODE, Vocab
from ubp.tables import FIRST_TOKEN_ID, OOV_ID, PAD_ID, QUERY_CODES, USER_SEQUENCES


def _small_map(mapping: dict[int, int]):
    """A literal map column for a small vocabulary (price buckets, query codes)."""
    if not mapping:
        return F.create_map().cast("map<bigint,int>")
    return F.create_map(*[x for k, v in sorted(mapping.items()) for x in (F.lit(k).cast("bigint"), F.lit(v))])


def _lookup_frame(spark: SparkSession, mapping: dict[int, int], key: str, tok: str) -> DataFrame:
    """A broadcast (raw -> token) table. Built from Arrow so it is a JVM-local relation (no Python workers)."""
    import pyarrow as pa

    items = sorted(mapping.items()) or [(-(2**62), OOV_ID)]  # never matches; keeps the schema
    table = pa.table({key: pa.array([k for k, _ in items], pa.int64()), tok: pa.array([v for _, v in items], pa.int32())})
    return F.broadcast(spark.createDataFrame(table))


def tokenize(spark: SparkSession, prepared: DataFrame, vocab: Vocab) -> DataFrame:
    """Prepared events (see `spark_jobs.vocab.prepare_events`) -> one row per event with token ids."""
    m = vocab.maps
    ev = (
        prepared.join(_lookup_frame(spark, m["sku"], "sku", "sku_t"), on="sku", how="left")
        .join(_lookup_frame(spark, m["url"], "url", "url_t"), on="url", how="left")
        .join(_lookup_frame(spark, m["category"], "category", "cat_t"), on="category", how="left")
    )
    is_product = F.col("etype").isin(*PRODUCT_CODES)
    qmap = _small_map(m["query"])
    pmap = _small_map(m["price"])
    first, last = vocab.first_day, vocab.last_day
    last_week = max(m["week"]) if m["week"] else -1
    day_idx = F.col("eday") - F.lit(first)
    week_idx = F.floor(day_idx / 7)
    return ev.select(
        "client_id",
        "ts_us",
        "etype",
        F.when(is_product, F.coalesce("sku", F.lit(-1))).otherwise(F.lit(-1)).cast("bigint").alias("sku_raw"),
        F.coalesce("url", F.lit(-1)).cast("bigint").alias("url_raw"),
        F.when(
            (F.col("etype") == SEARCH_CODE) & F.col("query").isNotNull(),
            F.transform("query", lambda q: F.coalesce(F.element_at(qmap, q.cast("bigint")), F.lit(OOV_ID))),
        ).alias("q_t"),
        (F.col("etype") + FIRST_TOKEN_ID).cast("int").alias("et_t"),
        F.when(is_product, F.coalesce("sku_t", F.lit(OOV_ID))).otherwise(PAD_ID).cast("int").alias("sku_t"),
        F.when(is_product, F.coalesce("cat_t", F.lit(OOV_ID))).otherwise(PAD_ID).cast("int").alias("cat_t"),
        F.when(is_product, F.coalesce(F.element_at(pmap, F.col("price").cast("bigint")), F.lit(OOV_ID)))
        .otherwise(PAD_ID).cast("int").alias("price_t"),
        F.when(F.col("etype") == VISIT_CODE, F.coalesce("url_t", F.lit(OOV_ID))).otherwise(PAD_ID)
        .cast("int").alias("url_t"),
        F.when((day_idx >= 0) & (F.col("eday") <= last), day_idx + FIRST_TOKEN_ID).otherwise(OOV_ID)
        .cast("int").alias("day_t"),
        F.when((day_idx >= 0) & (week_idx <= last_week), week_idx + FIRST_TOKEN_ID).otherwise(OOV_ID)
        .cast("int").alias("week_t"),
    )


def build_sequences(tokens: DataFrame, as_of: datetime, max_len: int, vocab_version: str) -> DataFrame:
    """Tokenised events -> one row per user in the `user_sequences` contract (newest `max_len` events kept)."""
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    # sort key first: ts, event type, sku, url, query; then the payload (`ts` seconds rides along so that no
    # per-element lambda is needed for it below)
    ev = F.struct(
        "ts_us", "etype", "sku_raw", "url_raw", "q_t", "et_t", "sku_t", "cat_t", "price_t", "url_t", "day_t", "week_t",
        F.floor(F.col("ts_us") / 1_000_000).alias("ts"),
    )
    g = tokens.groupBy("client_id").agg(
        F.count(F.lit(1)).alias("n_events"),
        F.min("ts_us").alias("first_us"),
        F.max("ts_us").alias("last_us"),
        F.collect_list(ev).alias("evs"),
    )
    n = F.size("evs")
    kept = F.slice(F.sort_array("evs"), F.greatest(n - max_len + 1, F.lit(1)), max_len)

    def field(name: str):
        # array<struct>.field -> array<field> (GetArrayStructFields: code-generated, unlike a `transform` lambda,
        # which Spark interprets per element; the lambdas were a third of the whole build's CPU)
        return F.col("s").getField(name)

    pad_query = F.array_repeat(F.lit(PAD_ID), QUERY_CODES)
    out = g.select("client_id", "n_events", "first_us", "last_us", kept.alias("s")).select(
        "client_id",
        F.lit(as_of).cast("timestamp").alias("as_of"),
        F.lit(vocab_version).alias("vocab_version"),
        "n_events",
        F.timestamp_micros("first_us").alias("first_ts"),
        F.timestamp_micros("last_us").alias("last_ts"),
        F.size("s").alias("seq_len"),
        field("et_t").alias("event_type"),
        field("sku_t").alias("sku"),
        field("cat_t").alias("category"),
        field("price_t").alias("price"),
        field("url_t").alias("url"),
        F.flatten(F.transform("s", lambda e: F.coalesce(e["q_t"], pad_query))).alias("query"),
        field("day_t").alias("day"),
        field("week_t").alias("week"),
        field("sku_raw").alias("sku_raw"),
        field("ts").alias("ts"),
    )
    return conform(out)


def conform(df: DataFrame) -> DataFrame:
    """Select and cast to the `user_sequences` contract (column order and types)."""
    return df.select([F.col(c.name).cast(c.type).alias(c.name) for c in USER_SEQUENCES.columns])


def changed_users(events: DataFrame, as_of: datetime, prev_as_of: datetime, ingested_after: datetime | None) -> DataFrame:
    """Users with events in [prev_as_of, as_of), or late arrivals (ingested after the last build) before as_of."""
    new = (F.col("timestamp") >= F.lit(prev_as_of))
    if ingested_after is not None:
        new = new | (F.col("ingested_at") > F.lit(ingested_after))
    return events.where((F.col("timestamp") < F.lit(as_of)) & new).select("client_id").distinct()
