"""Bronze events -> silver `user_sequences`: one chronological token sequence per user, all event types merged.

How it stays fast and out of core (no global sort, no window over all events, no Python UDF, nothing collected):
1. `tokenize`: per event, map raw values to token ids with broadcast joins (sku, url, category), literal arrays
   indexed by the raw value (price buckets, query codes: `get`, code-generated) or arithmetic (event type, day, week).
2. `build_sequences`: the events are shuffled as rows by user and sorted by user within partitions (Spark's
   sorter spills), then ONE `groupBy(client_id)` with `collect_list` of a per-event struct whose leading fields are
   the sort key (timestamp, event-type code, sku, url, query) streams user after user as a sort aggregate (under
   SORT_AGGREGATE_CONF; otherwise an object-hash aggregate that falls back to sorting); `sort_array` orders each
   user's events locally (deterministic: equal keys are equal events), `slice` keeps the newest `max_len`, and
   `array.field` extraction plus `flatten` (code-generated) split the structs into the per-field arrays of the
   contract. Only one user's events are in memory at a time, so tens of millions of users need not fit.

No higher-order function (`transform`, `filter`) runs per event: Spark interprets their lambdas element by
element, and on Spark 4 every interpreted array-element read also builds a fresh read-only SQL conf; the query
`transform` was a quarter of the build's JVM samples (JFR, 10M events). The query codes are therefore stored
sparsely (only search events carry their 16 codes, see the `user_sequences` contract), which also keeps 16 PAD
values per non-search event out of the shuffle and the Parquet files.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.vocab import PRODUCT_CODES, SEARCH_CODE, VISIT_CODE, Vocab
from ubp.tables import FIRST_TOKEN_ID, OOV_ID, PAD_ID, QUERY_CODES, USER_SEQUENCES


def _int_array(values: list[int], bigint: bool = False):
    """A literal array<int> (or array<bigint>) column from ONE SQL expression (`F.lit(list)` makes a py4j call per
    element: 16 query lookups of 256 codes took 1.5-2 s of driver time to plan). The optimizer folds it into one
    literal."""
    suffix = "L" if bigint else ""
    return F.expr(f"array({', '.join(f'{int(v)}{suffix}' for v in values)})").cast(
        "array<bigint>" if bigint else "array<int>")


def _small_map(mapping: dict[int, int]):
    """A literal map column for a (non-empty) small vocabulary whose raw values are not small non-negative ints."""
    keys, values = zip(*sorted(mapping.items()), strict=True)
    return F.map_from_arrays(_int_array(list(keys), bigint=True), _int_array(list(values)))


def _small_lookup(mapping: dict[int, int], limit: int = 1 << 16):
    """raw (an int column) -> token of a small vocabulary (price buckets, query codes), null when unknown: through a
    literal array indexed by the raw value (`get`: O(1), code-generated, null outside the array) when the raw values
    are small non-negative integers, else a literal map (a linear scan per lookup). Returns a function of the raw
    column, so the literal is built once for many lookups (the 16 query codes); one `get` per lookup keeps the 16
    of them small enough for one generated method to be JIT-compiled."""
    if not mapping:
        return lambda raw: F.lit(None).cast("int")
    if min(mapping) < 0 or max(mapping) >= limit:
        table = _small_map(mapping)
        return lambda raw: F.element_at(table, raw.cast("bigint"))
    array = _int_array([mapping.get(k, OOV_ID) for k in range(max(mapping) + 1)])
    return lambda raw: F.get(array, raw)


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
    is_search = F.col("etype") == SEARCH_CODE
    first, last = vocab.first_day, vocab.last_day
    last_week = max(m["week"]) if m["week"] else -1
    day_idx = F.col("eday") - F.lit(first)
    week_idx = F.floor(day_idx / 7)
    # 16 codes per search event (PAD when a search has no query), none for other events: see the module docstring
    query_token, price_token = _small_lookup(m["query"]), _small_lookup(m["price"])
    codes = F.array(*[F.coalesce(query_token(F.get("query", i)), F.lit(OOV_ID))
                      for i in range(QUERY_CODES)])
    q_t = (F.when(is_search & F.col("query").isNotNull(), codes)
           .when(is_search, F.array_repeat(F.lit(PAD_ID), QUERY_CODES))
           .otherwise(F.array().cast("array<int>")))
    return ev.select(
        "client_id",
        "ts_us",
        "etype",
        F.when(is_product, F.coalesce("sku", F.lit(-1))).otherwise(F.lit(-1)).cast("bigint").alias("sku_raw"),
        F.coalesce("url", F.lit(-1)).cast("bigint").alias("url_raw"),
        q_t.alias("q_t"),
        (F.col("etype") + FIRST_TOKEN_ID).cast("int").alias("et_t"),
        F.when(is_product, F.coalesce("sku_t", F.lit(OOV_ID))).otherwise(PAD_ID).cast("int").alias("sku_t"),
        F.when(is_product, F.coalesce("cat_t", F.lit(OOV_ID))).otherwise(PAD_ID).cast("int").alias("cat_t"),
        F.when(is_product, F.coalesce(price_token(F.col("price")), F.lit(OOV_ID)))
        .otherwise(PAD_ID).cast("int").alias("price_t"),
        F.when(F.col("etype") == VISIT_CODE, F.coalesce("url_t", F.lit(OOV_ID))).otherwise(PAD_ID)
        .cast("int").alias("url_t"),
        F.when((day_idx >= 0) & (F.col("eday") <= last), day_idx + FIRST_TOKEN_ID).otherwise(OOV_ID)
        .cast("int").alias("day_t"),
        F.when((day_idx >= 0) & (week_idx <= last_week), week_idx + FIRST_TOKEN_ID).otherwise(OOV_ID)
        .cast("int").alias("week_t"),
    )


# Run `build_sequences` with this SQL conf (see `with_sql_conf`): collect_list then plans as a sort aggregate over
# the user-sorted rows; 10M events: 26.6 vs 29.0 s build, 5 CPU-s less (docs/benchmarks.md).
SORT_AGGREGATE_CONF: dict[str, str] = {"spark.sql.execution.useObjectHashAggregateExec": "false"}


def build_sequences(tokens: DataFrame, as_of: datetime, max_len: int, vocab_version: str) -> DataFrame:
    """Tokenised events -> one row per user in the `user_sequences` contract (newest `max_len` events kept).
    Execute it under SORT_AGGREGATE_CONF for speed; the result does not depend on it."""
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    # sort key first: ts, event type, sku, url, query; then the payload (`ts` seconds rides along so that no
    # per-element lambda is needed for it below)
    ev = F.struct(
        "ts_us", "etype", "sku_raw", "url_raw", "q_t", "et_t", "sku_t", "cat_t", "price_t", "url_t", "day_t", "week_t",
        F.floor(F.col("ts_us") / 1_000_000).alias("ts"),
    )
    # The struct is built in a projection BEFORE the aggregate: there it is code-generated, while as the argument
    # of `collect_list` (an imperative aggregate) it would be evaluated field by field, interpreted, per event.
    # `count("ev")` references it a second time, which keeps the optimizer from inlining it back (CollapseProject
    # only inlines a non-trivial expression that is used once). Events are shuffled as rows and sorted by user, so
    # with SORT_AGGREGATE_CONF the aggregate streams user after user (no map-side partial lists to build, serialize
    # and merge); without it the plan is an object-hash aggregate over the same rows, equally correct.
    per_user = tokens.select("client_id", "ts_us", ev.alias("ev")).repartition("client_id").sortWithinPartitions(
        "client_id")
    g = per_user.groupBy("client_id").agg(
        F.count("ev").alias("n_events"),  # = events: the struct is never null
        F.min("ts_us").alias("first_us"),
        F.max("ts_us").alias("last_us"),
        F.collect_list("ev").alias("evs"),
    )
    n = F.size("evs")
    kept = F.slice(F.sort_array("evs"), F.greatest(n - max_len + 1, F.lit(1)), max_len)

    def field(name: str):
        # array<struct>.field -> array<field> (GetArrayStructFields: code-generated, unlike a `transform` lambda)
        return F.col("s").getField(name)

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
        F.flatten(field("q_t")).alias("query"),  # 16 codes per kept search event
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
