"""Table contracts: the names and schemas every stage reads and writes, defined once and imported everywhere.

A schema is written as Spark DDL type strings so that it can be turned into a Spark `StructType`
(`Table.spark_schema()`) or a pyarrow schema (`Table.arrow_schema()`) without importing pyspark at module import.
Each table has one owner stage; only that stage writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------------
# Raw input contract (RecSys Challenge 2025 layout). File stem -> required columns and their logical type.
# ---------------------------------------------------------------------------------------------------------------
EVENT_TYPES: tuple[str, ...] = ("add_to_cart", "remove_from_cart", "product_buy", "page_visit", "search_query")
# Event-type codes as in the challenge's 2nd-place solution: add=0, remove=1, buy=2, visit=3, search=4.
EVENT_TYPE_CODE: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES)}
PRODUCT_EVENTS: tuple[str, ...] = ("add_to_cart", "remove_from_cart", "product_buy")
PRODUCT_CODES: tuple[int, ...] = tuple(EVENT_TYPE_CODE[t] for t in PRODUCT_EVENTS)
VISIT_CODE = EVENT_TYPE_CODE["page_visit"]
SEARCH_CODE = EVENT_TYPE_CODE["search_query"]
RAW_EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "product_buy": ("client_id", "timestamp", "sku"),
    "add_to_cart": ("client_id", "timestamp", "sku"),
    "remove_from_cart": ("client_id", "timestamp", "sku"),
    "page_visit": ("client_id", "timestamp", "url"),
    "search_query": ("client_id", "timestamp", "query"),
}
RAW_PRODUCT_FILE = "product_properties"
RAW_PRODUCT_COLUMNS: tuple[str, ...] = ("sku", "category", "price", "name")
RAW_PRODUCT_TEXT_FILE = "product_text"
RAW_PRODUCT_TEXT_COLUMNS: tuple[str, ...] = ("sku", "text")
QUERY_CODES = 16  # a query / product name is 16 integers in 0..255
CODE_VALUES = 256  # each of those integers is one of 256 values
PRICE_BUCKETS = 100  # price is a bucket 0..99
TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"

# Quarantine reason codes (bronze `quarantine.reason` starts with one) and what each means.
QUARANTINE_REASONS: dict[str, str] = {
    "unknown_columns": "the raw file has columns outside the contract and the run is `--strict-schema` (every "
                       "row of that file is quarantined; by default such columns are ignored)",
    "null_id": "client_id, sku or url is null",
    "negative_id": "client_id, sku or url is negative",
    "bad_timestamp": f"timestamp is null or not a `{TIMESTAMP_FORMAT}` string / timestamp value",
    "out_of_range": "timestamp is outside the accepted window (default 2000-01-01 .. the run's start + 1 day)",
    "future_timestamp": "timestamp is after the start of the ingest run (but inside the window)",
    "text_too_long": "query / name longer than `--max-query-chars`, or product text longer than `--max-text-chars`",
    "bad_codes": f"query / name is not a string of {QUERY_CODES} integers 0..255 like \"[11 2 3 ...]\"",
    "bad_category": "category is null or negative",
    "bad_price": f"price is null or outside 0..{PRICE_BUCKETS - 1}",
    "null_text": "product_text.text is null or blank",
}

# Token ids reserved in every vocabulary.
PAD_ID, BOS_ID, EOS_ID, OOV_ID = 0, 1, 2, 3
FIRST_TOKEN_ID = 4
# Product-name codes need no vocabulary: token = code + FIRST_TOKEN_ID (a fixed alphabet of CODE_VALUES values).
NAME_VOCAB_SIZE = CODE_VALUES + FIRST_TOKEN_ID
VOCAB_FIELDS: tuple[str, ...] = ("event_type", "sku", "category", "price", "url", "query")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Spark DDL type: bigint, int, string, timestamp, date, double, float, boolean, array<...>
    nullable: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    layer: str  # bronze | silver | gold | ops
    owner: str  # the stage that writes it, as named in ubp/stage_registry.py (its command: `_` -> `-`)
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = ()
    doc: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        return ", ".join(f"{c.name} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns)

    def spark_schema(self):  # -> pyspark.sql.types.StructType (lazy import keeps the core light)
        from pyspark.sql.types import StructField, StructType, _parse_datatype_string

        return StructType(
            [StructField(c.name, _parse_datatype_string(c.type), c.nullable) for c in self.columns]
        )

    def arrow_schema(self):  # -> pyarrow.Schema
        import pyarrow as pa

        return pa.schema([pa.field(c.name, _arrow_type(c.type), c.nullable) for c in self.columns])


_SCALARS = {
    "bigint": "int64",
    "int": "int32",
    "smallint": "int16",
    "tinyint": "int8",
    "string": "string",
    "double": "float64",
    "float": "float32",
    "boolean": "bool_",
    "date": "date32",
    "binary": "binary",
}


def _arrow_type(ddl: str):
    import pyarrow as pa

    ddl = ddl.strip().lower()
    m = re.fullmatch(r"array<(.+)>", ddl)
    if m:
        return pa.list_(_arrow_type(m.group(1)))
    if ddl == "timestamp":
        return pa.timestamp("us", tz="UTC")
    return getattr(pa, _SCALARS[ddl])()


def _t(name: str, layer: str, owner: str, cols: list[tuple], partition_by: tuple[str, ...] = (), doc: str = ""):
    columns = tuple(Column(*c) for c in cols)
    return Table(name, layer, owner, columns, partition_by, doc)


# ---------------------------------------------------------------------------------------------------------------
# bronze: validated raw data (owner: ingest)
# ---------------------------------------------------------------------------------------------------------------
EVENTS = _t(
    "events", "bronze", "ingest",
    [
        ("event_id", "bigint", False, "stable hash of (event_type, client_id, timestamp, sku, url, query): dedup key"),
        ("event_type", "string", False, "one of EVENT_TYPES"),
        ("client_id", "bigint", False, "user id"),
        ("timestamp", "timestamp", False, "event time, UTC"),
        ("sku", "bigint", True, "product id (product events only)"),
        ("url", "bigint", True, "url id (page_visit only)"),
        ("query", "array<int>", True, "16 codes 0..255 (search_query only)"),
        ("source_file", "string", False, "raw file the row came from"),
        ("ingested_at", "timestamp", False, "when the row was first ingested"),
        ("event_date", "date", False, "partition column: date(timestamp)"),
    ],
    partition_by=("event_date",),
    doc="All five event types in one table, partitioned by event date.",
)
PRODUCTS = _t(
    "products", "bronze", "ingest",
    [
        ("sku", "bigint", False, "product id"),
        ("category", "bigint", False, "category id"),
        ("price", "int", False, "price bucket 0..99"),
        ("name", "array<int>", True, "16 codes 0..255 (quantized name embedding)"),
        ("source_file", "string", False, "raw file the row came from"),
        ("ingested_at", "timestamp", False, "when this version of the row was ingested"),
    ],
    doc="The catalog, one row per sku (latest properties win).",
)
PRODUCT_TEXT = _t(
    "product_text", "bronze", "ingest",
    [
        ("sku", "bigint", False, "product id"),
        ("text", "string", False, "product description"),
        ("source_file", "string", False, "raw file the row came from"),
        ("ingested_at", "timestamp", False, "when this version of the row was ingested"),
    ],
    doc="Optional product descriptions for content embeddings.",
)
QUARANTINE = _t(
    "quarantine", "bronze", "ingest",
    [
        ("run_id", "string", False, "ingest run that rejected the row"),
        ("source_file", "string", False, "raw file"),
        ("target_table", "string", False, "table the row was meant for"),
        ("raw", "string", False, "the raw row as JSON"),
        ("reason", "string", False, "why it was rejected"),
        ("quarantined_at", "timestamp", False, "when"),
    ],
    doc="Rejected raw rows with a reason; read = accepted + quarantined + duplicates.",
)
INGEST_RUNS = _t(
    "ingest_runs", "ops", "ingest",
    [
        ("run_id", "string", False, "ingest run id"),
        ("source_file", "string", False, "raw file"),
        ("target_table", "string", False, "events | products | product_text"),
        ("rows_read", "bigint", False, ""),
        ("accepted", "bigint", False, "new rows written"),
        ("quarantined", "bigint", False, ""),
        ("duplicates", "bigint", False, "exact duplicates dropped (within the file or already in the table)"),
        ("started_at", "timestamp", False, ""),
        ("finished_at", "timestamp", False, ""),
        ("ignored_columns", "string", True, "columns outside the contract that were ignored (comma-separated)"),
        ("unknown_skus", "bigint", True, "product_text: distinct skus accepted that `products` lacks (flag)"),
    ],
    doc="One row per (run, raw file): the reconciliation summary. Columns added later are null in older rows.",
)

# ---------------------------------------------------------------------------------------------------------------
# silver: sequences and vocabularies (owner: sequences)
# ---------------------------------------------------------------------------------------------------------------
VOCABULARIES = _t(
    "vocabularies", "silver", "sequences",
    [
        ("version", "string", False, "vocabulary version (content hash of the mapping)"),
        ("field", "string", False, "one of VOCAB_FIELDS"),
        ("raw_value", "bigint", False, "raw value (sku, url, category, price bucket, query code, event-type code)"),
        ("token_id", "int", False, ">= FIRST_TOKEN_ID; PAD/BOS/EOS/OOV are 0..3"),
        ("frequency", "bigint", False, "occurrences in the build window"),
        ("as_of", "timestamp", False, "build as-of"),
    ],
    partition_by=("version",),
    doc="Token vocabularies per field; top-K cut-off, everything else maps to OOV_ID.",
)
USER_SEQUENCES = _t(
    "user_sequences", "silver", "sequences",
    [
        ("client_id", "bigint", False, "user id"),
        ("as_of", "timestamp", False, "only events strictly before this are used"),
        ("vocab_version", "string", False, "vocabulary version the tokens come from"),
        ("n_events", "bigint", False, "total events before as_of (not only the kept ones)"),
        ("first_ts", "timestamp", False, "first event time"),
        ("last_ts", "timestamp", False, "last event time"),
        ("seq_len", "int", False, "kept events (<= max_len), newest kept"),
        ("event_type", "array<int>", False, "token ids, chronological"),
        ("sku", "array<int>", False, "token ids, PAD_ID where the event has no sku"),
        ("category", "array<int>", False, "token ids, PAD_ID where the event has no product"),
        ("price", "array<int>", False, "token ids, PAD_ID where the event has no product"),
        ("url", "array<int>", False, "token ids, PAD_ID where the event is not a visit"),
        ("query", "array<int>", False, "16 token ids per SEARCH event, flattened in event order (16 x the number of "
         "search events; other events carry none)"),
        ("day", "array<int>", False, "day index since the first date in the data, + FIRST_TOKEN_ID"),
        ("week", "array<int>", False, "week index since the first date in the data, + FIRST_TOKEN_ID"),
        ("sku_raw", "array<bigint>", False, "raw sku, -1 where the event has no sku (for the item model)"),
        ("ts", "array<bigint>", False, "event epoch seconds (for temporal splits)"),
        ("name", "array<int>", True, "16 name-code tokens (code + FIRST_TOKEN_ID) per PRODUCT event, flattened in "
         "event order (16 x the number of product events; 16 x PAD_ID where the sku has no name in `products`; other "
         "events carry none); a table built before the column lacks it until a full `ubp sequences` build"),
    ],
    doc="One row per user: the last max_len events of all types merged into one chronological sequence.",
)

# ---------------------------------------------------------------------------------------------------------------
# gold: features, profiles, item vectors
# ---------------------------------------------------------------------------------------------------------------
USER_AGGREGATES = _t(
    "user_aggregates", "gold", "aggregates",
    [
        ("client_id", "bigint", False, "user id"),
        ("as_of", "timestamp", False, "features use events strictly before this"),
        ("n_events", "bigint", False, "events before as_of"),
        ("features", "array<float>", False, "the feature vector, in the order of spark_jobs.aggregates.feature_names()"),
        ("feature_names_version", "string", False, "hash of the ordered feature names (see spark_jobs.aggregates)"),
    ],
    doc="Official baseline features + the seed solution's statistics, one row per user.",
)
USER_PROFILES = _t(
    "user_profiles", "gold", "embed_users",
    [
        ("client_id", "bigint", False, "user id"),
        ("embedding", "array<float>", False, "the user's profile vector"),
        ("model_version", "string", False, "model that produced it"),
        ("space_id", "string", False, "vector space: the Feast feature service that serves it (ubp/spaces.py)"),
        ("as_of", "timestamp", False, "profile built from events strictly before this"),
        ("n_events", "bigint", False, "events before as_of"),
        ("created_at", "timestamp", False, "when the row was written"),
    ],
    doc="Profiles of the served GRU-AE member (day_event); idempotent per (model_version, as_of).",
)
USER_MEMBER_PROFILES = _t(
    "user_member_profiles", "gold", "embed_users",
    list((c.name, c.type, c.nullable, c.doc) for c in USER_PROFILES.columns),
    doc="Profiles of the GRU-AE members other than the served one (week_all, all_fields, ...), keyed by model_version "
        "(whose registry kind names the member); read by the ensemble and the evaluation, not served as one space.",
)
USER_PROFILES_ENSEMBLE = _t(
    "user_profiles_ensemble", "gold", "ensemble",
    list((c.name, c.type, c.nullable, c.doc) for c in USER_PROFILES.columns),
    doc="Ensemble profile: normalised members concatenated (<= 2048 columns).",
)
USER_FACTORS = _t(
    "user_factors", "gold", "ensemble",
    [
        ("client_id", "bigint", False, "user id"),
        ("embedding", "array<float>", False, "[user x category factors | user x url factors]"),
        ("model_version", "string", False, "<method>-<hash of parameters and as_of>"),
        ("as_of", "timestamp", False, "factors use events strictly before this"),
        ("n_events", "bigint", False, "interactions (weighted rows) the user had in the two matrices"),
        ("created_at", "timestamp", False, "when the row was written"),
    ],
    doc="Factorisation ensemble member (user x category, user x url), written by the ensemble stage.",
)
USER_STATS = _t(
    "user_stats", "gold", "ensemble",
    [
        ("client_id", "bigint", False, "user id"),
        ("as_of", "timestamp", False, "statistics use events strictly before this"),
        ("n_events", "bigint", False, "events before as_of"),
        ("features", "array<float>", False, "the statistics, in the order of spark_jobs.stats.feature_names()"),
        ("feature_names_version", "string", False, "hash of the ordered statistic names (see spark_jobs.stats)"),
    ],
    doc="Statistics ensemble member (the seed's recency, gaps, conversion, popularity, price groups beyond "
        "user_aggregates), written by the ensemble stage.",
)
USER_TEXT = _t(
    "user_text", "gold", "ensemble",
    [
        ("client_id", "bigint", False, "user id"),
        ("as_of", "timestamp", False, "the user_sequences build the recent skus come from (events strictly before it)"),
        ("n_events", "bigint", False, "events before as_of"),
        ("embedding", "array<float>", False, "mean of the item_content embeddings (source text) of the user's "
         "most recent distinct skus"),
        ("n_items", "int", False, "items pooled (at most the recent cut, 20)"),
        ("text_share", "float", False, "share of the user's recent distinct skus whose content is text"),
        ("encoder", "string", False, "encoder of the pooled embeddings (item_content.encoder)"),
        ("model_version", "string", False, "text-r<recent>-<hash of the encoder, cut, pooled sources and the "
         "item_content keys> (spark_jobs.text_profile)"),
        ("created_at", "timestamp", False, "when the row was written"),
    ],
    doc="Text ensemble member: per user, the mean MiniLM embedding of the texts of the most recent items; users "
        "whose recent items have no text have no row. Written by the ensemble stage, one build per as_of.",
)
ITEM_CONTENT = _t(
    "item_content", "silver", "item_content",
    [
        ("sku", "bigint", False, "product id"),
        ("text_hash", "string", False, "hash of the encoder input (text or name codes)"),
        ("encoder", "string", False, "encoder name"),
        ("source", "string", False, "text | name_codes"),
        ("embedding", "array<float>", False, "raw encoder output"),
        ("computed_at", "timestamp", False, ""),
    ],
    doc="Raw content embeddings, cached by (sku, text_hash, encoder).",
)
ITEM_VECTORS = _t(
    "item_vectors", "gold", "item_vectors",
    [
        ("sku", "bigint", False, "product id"),
        ("vector", "array<float>", False, "content vector + bounded delta (delta = 0 for cold items)"),
        ("is_cold", "boolean", False, "no training interactions"),
        ("model_version", "string", False, "item model version"),
        ("space_id", "string", False, "vector space: the Feast feature service that serves it (ubp/spaces.py)"),
        ("encoder", "string", False, "content encoder name"),
        ("as_of", "timestamp", False, "when the vectors were valid from"),
        ("created_at", "timestamp", False, "when the row was written"),
    ],
    doc="A vector for every catalog item, cold ones included.",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        EVENTS, PRODUCTS, PRODUCT_TEXT, QUARANTINE, INGEST_RUNS, VOCABULARIES, USER_SEQUENCES,
        USER_AGGREGATES, USER_FACTORS, USER_STATS, USER_TEXT, USER_PROFILES, USER_MEMBER_PROFILES,
        USER_PROFILES_ENSEMBLE, ITEM_CONTENT, ITEM_VECTORS,
    )
}
# Profile tables that `ubp export` / `ubp publish` / `ubp evaluate` accept.
PROFILE_TABLES: tuple[str, ...] = ("user_profiles", "user_profiles_ensemble")
