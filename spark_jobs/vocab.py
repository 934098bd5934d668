"""Token vocabularies: raw value -> token id per field, with top-K frequency cut-offs.

Ids 0..3 are PAD/BOS/EOS/OOV in every field; real tokens start at FIRST_TOKEN_ID.
- `event_type`: fixed, token = event-type code + FIRST_TOKEN_ID (all five, so the size never changes).
- `sku`, `url`, `category`, `price`, `query` (the 16 codes share one vocabulary): sorted by frequency in the build
  window (descending), ties by raw value (ascending), top-K kept; everything else maps to OOV_ID.
- `day`: raw = epoch day (days since 1970-01-01); token = days since the first day in the build window + FIRST_TOKEN_ID,
  every day from the first to the last one (so the first row also records the day origin). Days outside map to OOV.
- `week`: raw = week index since that first day; token = raw + FIRST_TOKEN_ID.

The version is a content hash of the (field, raw_value, token_id) mapping, so an identical mapping always gets the
same version and any change gets a new one. The mapping itself is small (bounded by the top-K cut-offs, the number of
categories and the number of days) and is collected to the driver to hash it; events never are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ubp.tables import (
    EVENT_TYPE_CODE,
    EVENT_TYPES,
    FIRST_TOKEN_ID,
    OOV_ID,
    PRODUCT_CODES,
    SEARCH_CODE,
    VISIT_CODE,
    VOCAB_FIELDS,
)

TIME_FIELDS: tuple[str, ...] = ("day", "week")
ALL_FIELDS: tuple[str, ...] = (*VOCAB_FIELDS, *TIME_FIELDS)
DEFAULT_TOP_K: dict[str, int | None] = {"sku": 5000, "url": 5000, "category": None, "price": None, "query": None}


@dataclass
class Vocab:
    """A collected vocabulary: `maps[field] = {raw_value: token_id}` and frequencies, plus its content version."""

    maps: dict[str, dict[int, int]]
    freqs: dict[str, dict[int, int]] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            self.version = vocab_version(self.maps)

    @property
    def first_day(self) -> int:
        days = self.maps.get("day") or {}
        return min(days) if days else 0

    @property
    def last_day(self) -> int:
        days = self.maps.get("day") or {}
        return max(days) if days else -1

    def sizes(self) -> dict[str, int]:
        return {f: max([FIRST_TOKEN_ID - 1, *m.values()]) + 1 for f, m in self.maps.items()}


def vocab_version(maps: dict[str, dict[int, int]]) -> str:
    """Content hash of the mapping (fields and pairs in sorted order)."""
    h = hashlib.sha256()
    for f in sorted(maps):
        for raw, tok in sorted(maps[f].items()):
            h.update(f"{f}\t{raw}\t{tok}\n".encode())
    return h.hexdigest()[:16]


def _epoch_day(micros):
    """UTC epoch day of epoch microseconds, by exact integer arithmetic (floor, also before 1970): `to_date` goes
    through java.time for every row."""
    day = F.lit(86_400_000_000)
    return ((micros - F.pmod(micros, day)) / day).cast("int")


def select_events(events: DataFrame, as_of: datetime, all_before: bool = False) -> DataFrame:
    """Bronze events strictly before `as_of` with the event-type code and epoch seconds/day (no product columns).

    Columns: client_id, etype, ts_us, ts, eday, sku, url, query. `all_before`: the caller knows that every event is
    before `as_of` (e.g. from the Delta log's statistics), so the filter is left out: it would select every row
    anyway, and a filtered Delta scan costs a data-skipping job per scan in planning.
    """
    code = F.element_at(
        F.create_map(*[x for t in EVENT_TYPES for x in (F.lit(t), F.lit(EVENT_TYPE_CODE[t]))]), F.col("event_type")
    )
    if not all_before:
        events = events.where(F.col("timestamp") < F.lit(as_of))
    return events.select(
        "client_id",
        code.cast("int").alias("etype"),
        F.unix_micros("timestamp").alias("ts_us"),
        F.unix_seconds("timestamp").alias("ts"),
        _epoch_day(F.unix_micros("timestamp")).alias("eday"),
        "sku",
        "url",
        "query",
    ).where(F.col("etype").isNotNull())


def prepare_events(events: DataFrame, products: DataFrame, as_of: datetime, all_before: bool = False) -> DataFrame:
    """`select_events` plus the product attributes of product events.

    Columns: client_id, etype, ts_us, ts, eday, sku, url, query, category, price, name (the product's 16 name codes).
    Product attributes are null for non-product events and for skus missing from the catalog. Stages that do not use
    a column (`name` outside `sequences`) leave it out of the join: Spark prunes it.
    """
    prod = products.select("sku", "category", "price", "name")
    is_product = F.col("etype").isin(*PRODUCT_CODES)
    return select_events(events, as_of, all_before).join(prod, on="sku", how="left").select(
        "client_id", "etype", "ts_us", "ts", "eday", "sku", "url", "query",
        F.when(is_product, F.col("category")).alias("category"),
        F.when(is_product, F.col("price")).alias("price"),
        F.when(is_product, F.col("name")).alias("name"),
    )


def _counted(df: DataFrame, name: str, value, weight=None) -> DataFrame:
    """(field, raw_value, frequency) of one field: a plain groupBy (partial aggregation keeps the shuffle small)."""
    agg = F.count(F.lit(1)) if weight is None else F.sum(weight)
    return df.groupBy(value.cast("bigint").alias("raw_value")).agg(agg.cast("bigint").alias("frequency")).select(
        F.lit(name).alias("field"), "raw_value", "frequency")


def field_counts(events: DataFrame, products: DataFrame) -> DataFrame:
    """(field, raw_value, frequency) for every field of `select_events` rows.

    One small aggregate per field group instead of exploding every event into (field, value) pairs (that explode
    was half of the whole 10M-event build): (event type, day) counts, sku counts of product events (category and
    price counts are those joined to the catalog, so events are never joined to products here), url counts of
    visits and query-code counts of searches. Each group reads only its columns of the columnar scan.
    """
    is_product = F.col("etype").isin(*PRODUCT_CODES)
    et_day = events.groupBy("etype", "eday").agg(F.count(F.lit(1)).alias("n"))
    skus = events.where(is_product & F.col("sku").isNotNull()).groupBy("sku").agg(F.count(F.lit(1)).alias("n"))
    catalog = skus.join(products.select("sku", "category", "price"), on="sku")
    searches = events.where((F.col("etype") == SEARCH_CODE) & F.col("query").isNotNull())
    parts = [
        _counted(et_day, "event_type", F.col("etype"), F.col("n")),
        _counted(et_day, "day", F.col("eday"), F.col("n")),
        skus.select(F.lit("sku").alias("field"), F.col("sku").cast("bigint").alias("raw_value"),
                    F.col("n").cast("bigint").alias("frequency")),
        _counted(catalog.where(F.col("category").isNotNull()), "category", F.col("category"), F.col("n")),
        _counted(catalog.where(F.col("price").isNotNull()), "price", F.col("price"), F.col("n")),
        _counted(events.where((F.col("etype") == VISIT_CODE) & F.col("url").isNotNull()), "url", F.col("url")),
        _counted(searches.select(F.explode("query").alias("q")), "query", F.col("q")),
    ]
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def rank_tokens(counts: DataFrame, top_k: dict[str, int | None] | None = None) -> DataFrame:
    """Frequency-ranked token ids for the ranked fields (deterministic: frequency desc, raw value asc)."""
    from pyspark.sql import Window

    top_k = {**DEFAULT_TOP_K, **(top_k or {})}
    ranked = [f for f in VOCAB_FIELDS if f != "event_type"]
    limit = F.create_map(*[x for f in ranked for x in (F.lit(f), F.lit(top_k.get(f) or 2**31 - 1))])
    w = Window.partitionBy("field").orderBy(F.col("frequency").desc(), F.col("raw_value").asc())
    return (
        counts.where(F.col("field").isin(*ranked))
        .withColumn("rn", F.row_number().over(w))
        .where(F.col("rn") <= F.element_at(limit, F.col("field")))
        .select("field", "raw_value", (F.col("rn") + (FIRST_TOKEN_ID - 1)).cast("int").alias("token_id"), "frequency")
    )


def build_vocab(events: DataFrame, products: DataFrame, top_k: dict[str, int | None] | None = None) -> Vocab:
    """Count, rank and collect the (small) vocabulary of `select_events` rows."""
    counts = field_counts(events, products)
    # one job: the ranked fields plus the raw counts of event types and days (all small)
    fixed = counts.where(F.col("field").isin("event_type", "day")).select(
        "field", "raw_value", F.lit(None).cast("int").alias("token_id"), "frequency")
    collected = rank_tokens(counts, top_k).unionByName(fixed).collect()
    rows = [r for r in collected if r["token_id"] is not None]
    et = {int(r["raw_value"]): int(r["frequency"]) for r in collected if r["field"] == "event_type"}
    days = {int(r["raw_value"]): int(r["frequency"]) for r in collected if r["field"] == "day"}
    maps: dict[str, dict[int, int]] = {f: {} for f in ALL_FIELDS}
    freqs: dict[str, dict[int, int]] = {f: {} for f in ALL_FIELDS}
    for r in rows:
        maps[r["field"]][int(r["raw_value"])] = int(r["token_id"])
        freqs[r["field"]][int(r["raw_value"])] = int(r["frequency"])
    for c in EVENT_TYPE_CODE.values():
        maps["event_type"][c] = c + FIRST_TOKEN_ID
        freqs["event_type"][c] = et.get(c, 0)
    if days:
        first, last = min(days), max(days)
        for d in range(first, last + 1):
            maps["day"][d] = d - first + FIRST_TOKEN_ID
            freqs["day"][d] = days.get(d, 0)
            wk = (d - first) // 7
            maps["week"][wk] = wk + FIRST_TOKEN_ID
            freqs["week"][wk] = freqs["week"].get(wk, 0) + days.get(d, 0)
    return Vocab(maps=maps, freqs=freqs)


def vocab_frame(spark: SparkSession, vocab: Vocab, as_of: datetime) -> DataFrame:
    """The vocabulary as rows of the `vocabularies` contract (built from Arrow: a JVM-local relation)."""
    import pyarrow as pa

    from ubp.tables import VOCABULARIES

    rows = [
        (vocab.version, f, raw, tok, vocab.freqs.get(f, {}).get(raw, 0), as_of)
        for f in ALL_FIELDS
        for raw, tok in sorted(vocab.maps.get(f, {}).items(), key=lambda kv: kv[1])
    ]
    schema = VOCABULARIES.arrow_schema()
    table = pa.table({c: pa.array([r[i] for r in rows], schema.field(c).type) for i, c in enumerate(schema.names)},
                     schema=schema)
    return spark.createDataFrame(table).select(
        [F.col(c.name).cast(c.type).alias(c.name) for c in VOCABULARIES.columns])


__all__ = [
    "ALL_FIELDS", "DEFAULT_TOP_K", "OOV_ID", "TIME_FIELDS", "Vocab", "build_vocab", "field_counts",
    "prepare_events", "rank_tokens", "select_events", "vocab_frame", "vocab_version",
]
