"""Raw RecSys-2025 layout -> validated bronze Delta tables (events, products, product_text, quarantine, ingest_runs).

Pure `DataFrame -> DataFrame` functions (`parse_events`, `parse_products`, `parse_product_text`, `dedup_events`,
`latest_per_sku`, `quarantine_rows`) plus thin I/O (`discover`, `read_raw`, `merge_*`). The stage function
`ubp.stages.ingest.ingest` wires them together and does the reconciliation.

Validation never drops a row silently: every row read is either accepted (written), quarantined (with a reason),
or a duplicate (already present in the table or earlier in the same batch). A row gets the FIRST failing reason in
the order of the checks below.

Decision on unknown columns: a raw file with columns outside the contract is not an error. By default the extra
columns are ignored (named in `ingest_runs.ignored_columns`, one warning per run; a quarantined row's raw JSON still
keeps their values), because upstream exports grow columns (pandas writes its index as `__index_level_0__`).
With `strict_schema` every row of such a file is quarantined with reason `unknown_columns: <names>` (the old
behaviour), which the failure threshold then turns into a failed run. A missing or wrongly typed contract column
(e.g. `sku` as string) IS an error: the run stops before writing anything.

Timestamps: strings `yyyy-MM-dd HH:mm:ss`, or Parquet timestamps of any unit (ms, us, ns; with or without time
zone; naive ones are UTC). Spark cannot read INT64 TIMESTAMP(NANOS) as a timestamp (pandas writes datetime64[ns]
so), so such a column is read as its raw int64 and converted here (to microseconds, floor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ubp.config import IngestOptions
from ubp.errors import UbpError
from ubp.tables import (
    EVENT_TYPES,
    EVENTS,
    INGEST_RUNS,
    PRICE_BUCKETS,
    PRODUCT_EVENTS,
    PRODUCT_TEXT,
    PRODUCTS,
    QUARANTINE,
    QUARANTINE_REASONS,
    QUERY_CODES,
    RAW_EVENT_COLUMNS,
    RAW_PRODUCT_COLUMNS,
    RAW_PRODUCT_FILE,
    RAW_PRODUCT_TEXT_COLUMNS,
    RAW_PRODUCT_TEXT_FILE,
    TIMESTAMP_FORMAT,
    Table,
)

# Reason codes written to `quarantine.reason` as "<code>: <detail>", in the order they are checked.
REASONS = QUARANTINE_REASONS  # reason code -> meaning (defined with the table contracts)

# Raw file stem -> (target table, required columns).
SOURCES: dict[str, tuple[Table, tuple[str, ...]]] = {
    **{stem: (EVENTS, RAW_EVENT_COLUMNS[stem]) for stem in EVENT_TYPES},
    RAW_PRODUCT_FILE: (PRODUCTS, RAW_PRODUCT_COLUMNS),
    RAW_PRODUCT_TEXT_FILE: (PRODUCT_TEXT, RAW_PRODUCT_TEXT_COLUMNS),
}
# Accepted Spark type kinds per raw column.
EXPECTED_KINDS: dict[str, tuple[str, ...]] = {
    "client_id": ("integer",),
    "sku": ("integer",),
    "url": ("integer",),
    "category": ("integer",),
    "price": ("integer",),
    "timestamp": ("string", "timestamp"),
    "query": ("string", "integer array"),
    "name": ("string", "integer array"),
    "text": ("string",),
}
CODES_PATTERN = r"^\s*\[\s*\d{1,3}(?:[\s,]+\d{1,3}){" + str(QUERY_CODES - 1) + r"}\s*\]\s*$"
# Columns pandas adds for a non-default index: not data, always ignored (even with strict_schema), still recorded.
PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")
NANOS = "ubp_nanos"  # StructField metadata key: an INT64 TIMESTAMP(NANOS) column read as its raw int64
TRUNCATED = "…[truncated]"  # suffix of a raw string value cut to its cap in quarantine's `raw` JSON
EVENT_KEY = ("event_id", "event_type", "client_id", "timestamp", "sku", "url", "query")

_INT_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


@dataclass(frozen=True)
class RawSource:
    """One raw input: a `<stem>.parquet` file or a `<stem>/` directory of parts."""

    stem: str
    path: Path  # what the user has on disk (file or directory); recorded as `source_file`
    files: tuple[Path, ...]  # non-empty parquet files to read (empty tuple: the input holds no data)

    @property
    def table(self) -> Table:
        return SOURCES[self.stem][0]

    @property
    def required(self) -> tuple[str, ...]:
        return SOURCES[self.stem][1]

    @property
    def source_file(self) -> str:
        return str(self.path)


# ---------------------------------------------------------------------------------------------------------------
# discovery and reading (thin I/O)
# ---------------------------------------------------------------------------------------------------------------
def discover(raw_dir: str | Path) -> list[RawSource]:
    """Find the raw inputs of a directory. Missing inputs are allowed; a missing directory is not."""
    raw = Path(raw_dir).expanduser()
    if not raw.exists():
        raise UbpError(f"raw directory not found: {raw}")
    if not raw.is_dir():
        raise UbpError(f"raw path is not a directory: {raw}")
    raw = raw.resolve()
    out: list[RawSource] = []
    for stem in SOURCES:
        found = [p for p in (raw / f"{stem}.parquet", raw / stem) if p.exists()]
        if len(found) > 1:
            raise UbpError(f"both {found[0]} and {found[1]} exist; keep one of them")
        if not found:
            continue
        path = found[0]
        if path.is_dir():
            files = tuple(
                sorted(
                    p for p in path.rglob("*")
                    if p.is_file() and not p.name.startswith(("_", ".")) and p.stat().st_size > 0
                    and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts[:-1])
                )
            )
        else:
            files = (path,) if path.stat().st_size > 0 else ()
        out.append(RawSource(stem, path, files))
    if not out:
        expected = ", ".join(f"{s}.parquet" for s in SOURCES)
        raise UbpError(f"no raw files in {raw} (expected some of: {expected})")
    return out


def first_line(exc: BaseException) -> str:
    """The informative first line of a (Spark, py4j, arrow) error, for a one-line user message."""
    text = str(getattr(exc, "desc", None) or exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("An error occurred while calling"):  # py4j: the Java line is next
        lines = lines[1:]
    line = lines[0].lstrip(": ") if lines else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def raw_schema(source: RawSource) -> T.StructType:
    """The input's Spark schema from its parquet footers (pyarrow, no Spark job); every part must agree.

    Timestamp columns map to TIMESTAMP (naive ones are read as UTC), except INT64 TIMESTAMP(NANOS) columns, which
    Spark refuses as timestamps: they map to BIGINT with the field metadata `{NANOS: true}` and `read_raw` converts
    them. A corrupt or non-parquet part fails here, with its name, before anything is written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema

    first = None
    for path in source.files:
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # ArrowInvalid, OSError...: the file is not readable parquet
            raise UbpError(f"cannot read {path}: {first_line(exc)}") from None
        schema = schema.remove_metadata()
        physical = {meta.schema.column(i).path: meta.schema.column(i).physical_type for i in range(meta.num_columns)}
        nanos = [
            f.name for f in schema
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns" and physical.get(f.name) == "INT64"
        ]
        if first is None:
            first = (path, schema, nanos)
        elif not schema.equals(first[1]) or nanos != first[2]:
            raise UbpError(
                f"{source.path}: parts have different schemas ({first[0].name}: {_arrow_fields(first[1])}; "
                f"{path.name}: {_arrow_fields(schema)})"
            )
    _, schema, nanos = first
    try:
        spark_schema = from_arrow_schema(schema, prefer_timestamp_ntz=False)
    except Exception as exc:  # an arrow type Spark cannot represent
        raise UbpError(f"{source.path}: unsupported column type ({first_line(exc)})") from None
    return T.StructType([
        T.StructField(f.name, T.LongType(), f.nullable, {NANOS: True}) if f.name in nanos else f
        for f in spark_schema.fields
    ])


def _arrow_fields(schema) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in schema)


def read_raw(spark: SparkSession, source: RawSource) -> DataFrame | None:
    """Read one raw input with the schema from its footers, or None when it holds no data.

    The row position columns `_part` / `_row` locate a rejected row in its part file. Nanosecond timestamp columns
    (read as int64, see `raw_schema`) become timestamps here, truncated to microseconds like Spark's own.
    """
    if not source.files:
        return None
    schema = raw_schema(source)
    reader = spark.read.schema(schema)
    if source.path.is_dir():
        reader = reader.option("basePath", str(source.path))
    try:
        df = reader.parquet(*[str(p) for p in source.files])
    except Exception as exc:  # Spark raises many types (AnalysisException, Py4JJavaError, SparkException)
        raise UbpError(f"cannot read {source.path}: {first_line(exc)}") from None
    for f in schema.fields:
        if f.metadata.get(NANOS):
            c = f"`{f.name}`"  # exact integer floor division: a double would lose the low digits of 1.7e18
            df = df.withColumn(f.name, F.expr(f"timestamp_micros(({c} - pmod({c}, 1000)) div 1000)"))
    return df.select("*", F.col("_metadata.file_name").alias("_part"), F.col("_metadata.row_index").alias("_row"))


def _kind(dt: T.DataType) -> str:
    if isinstance(dt, _INT_TYPES):
        return "integer"
    if isinstance(dt, T.StringType):
        return "string"
    if isinstance(dt, T.TimestampType | T.TimestampNTZType):
        return "timestamp"
    if isinstance(dt, T.NullType):
        return "null"
    if isinstance(dt, T.ArrayType) and isinstance(dt.elementType, _INT_TYPES):
        return "integer array"
    return dt.simpleString()


def check_columns(source: RawSource, schema: T.StructType) -> list[str]:
    """Raise a one-line UbpError for a missing or wrongly typed column; return the unknown (extra) columns.

    pandas index columns (`__index_level_0__`) are returned too; `unknown_columns` tells them apart."""
    fields = {f.name: f.dataType for f in schema.fields if f.name not in ("_part", "_row")}
    missing = [c for c in source.required if c not in fields]
    if missing:
        raise UbpError(
            f"{source.path}: missing column(s) {', '.join(missing)} (found: {', '.join(fields) or 'none'})"
        )
    for col in source.required:
        kind = _kind(fields[col])
        if kind != "null" and kind not in EXPECTED_KINDS[col]:
            raise UbpError(
                f"{source.path}: column {col} has type {fields[col].simpleString()}, "
                f"expected {' or '.join(EXPECTED_KINDS[col])}"
            )
    return [c for c in fields if c not in source.required]


def unknown_columns(extra: list[str]) -> list[str]:
    """The extra columns that `strict_schema` refuses: all but pandas' index columns (never data)."""
    return [c for c in extra if not PANDAS_INDEX.match(c)]


# ---------------------------------------------------------------------------------------------------------------
# pure parsing / validation
# ---------------------------------------------------------------------------------------------------------------
def parse_timestamp(col: Column, dtype: T.DataType) -> Column:
    """`yyyy-MM-dd HH:mm:ss` strings or timestamp columns -> timestamp (null when unparseable)."""
    if isinstance(dtype, T.StringType):
        return F.try_to_timestamp(col, F.lit(TIMESTAMP_FORMAT))
    if isinstance(dtype, T.NullType):
        return F.lit(None).cast("timestamp")
    return col.cast("timestamp")


def parse_codes(col: Column, dtype: T.DataType) -> tuple[Column, Column]:
    """A "[11 2 3 ...]" string (or an integer array) -> (array<int> of QUERY_CODES codes, is-valid flag).

    The flag is null when the input is null, so callers decide whether null is allowed.
    """
    if isinstance(dtype, T.NullType):
        return F.lit(None).cast("array<int>"), F.lit(None).cast("boolean")
    if isinstance(dtype, T.ArrayType):
        arr = col.cast("array<int>")
        ok = (F.size(arr) == QUERY_CODES) & F.forall(arr, lambda x: x.isNotNull() & (x >= 0) & (x <= 255))
        return F.when(ok, arr), F.when(col.isNotNull(), ok)
    values = F.transform(F.regexp_extract_all(col, F.lit(r"(\d+)"), F.lit(1)), lambda x: x.try_cast("int"))
    ok = col.rlike(CODES_PATTERN) & F.forall(values, lambda x: x.isNotNull() & (x <= 255))
    return F.when(ok, values), F.when(col.isNotNull(), F.coalesce(ok, F.lit(False)))


def _id_checks(name: str) -> list[tuple[Column, str]]:
    c = F.col(name)
    return [(c.isNull(), f"null_id: {name}"), (c < 0, f"negative_id: {name}")]


def _first_reason(checks: list[tuple[Column, str]]) -> Column:
    expr = None
    for cond, reason in checks:
        cond = F.coalesce(cond, F.lit(False))
        expr = F.when(cond, F.lit(reason)) if expr is None else expr.when(cond, F.lit(reason))
    return expr.otherwise(F.lit(None).cast("string")) if expr is not None else F.lit(None).cast("string")


def _capped(col: Column, cap: int) -> Column:
    """A string cut to `cap` characters plus TRUNCATED, so quarantine never stores a multi-megabyte value."""
    return F.when(F.length(col) > cap, F.concat(F.substring(col, 1, cap), F.lit(TRUNCATED))).otherwise(col)


def _raw_json(df: DataFrame, cap: int, caps: dict[str, int] | None = None) -> Column:
    # The raw row as JSON: the file's own columns (as read), plus _part/_row locating it in the part file. String
    # values longer than their cap (`caps` per column, else `cap`) are truncated.
    caps = caps or {}
    cols = [
        _capped(F.col(f"`{f.name}`"), caps.get(f.name, cap)).alias(f.name)
        if isinstance(f.dataType, T.StringType) else F.col(f"`{f.name}`")
        for f in df.schema.fields
    ]
    return F.to_json(F.struct(*cols), {"ignoreNullFields": "false"})


def _too_long(name: str, dtype: T.DataType, cap: int) -> tuple[Column, str]:
    long = F.length(F.col(name)) > cap if isinstance(dtype, T.StringType) else F.lit(False)
    return long, f"text_too_long: {name}"


def _labelled(out: DataFrame, checks: list[tuple[Column, str]], extra: list[str], source: RawSource,
              table: Table) -> DataFrame:
    """`reason` = the first failing check (columns outside the contract fail every row of the file, first), plus
    `source_file` and `target_table`: the same for every raw file kind."""
    if extra:
        checks = [(F.lit(True), f"unknown_columns: {', '.join(extra)}"), *checks]
    return (
        out.withColumn("reason", _first_reason(checks))
        .withColumn("source_file", F.lit(source.source_file))
        .withColumn("target_table", F.lit(table.name))
    )


def parse_events(df: DataFrame, source: RawSource, extra: list[str], now: datetime,
                 options: IngestOptions | None = None) -> DataFrame:
    """Raw event rows -> typed contract columns + `reason` (null = valid) + `raw` (JSON) + `source_file`.

    `extra`: columns that quarantine every row (`unknown_columns`); `now`: the future cut-off; `options`: the
    event-time window and the query size cap.
    """
    options = options or IngestOptions()
    lo, hi = options.window(now)
    stem = source.stem
    types = {f.name: f.dataType for f in df.schema.fields}
    ts = parse_timestamp(F.col("timestamp"), types["timestamp"])
    raw_query = F.col("query") if stem == "search_query" else None
    out = df.select(
        _raw_json(df, options.max_text_chars, {"query": options.max_query_chars}).alias("raw"),
        F.lit(stem).alias("event_type"),
        F.col("client_id").cast("bigint").alias("client_id"),
        ts.alias("timestamp"),
        (F.col("sku").cast("bigint") if stem in PRODUCT_EVENTS else F.lit(None).cast("bigint")).alias("sku"),
        (F.col("url").cast("bigint") if stem == "page_visit" else F.lit(None).cast("bigint")).alias("url"),
        *(
            [*_codes_pair(raw_query, types["query"], "query"), raw_query.alias("_raw_query")]
            if stem == "search_query"
            else [F.lit(None).cast("array<int>").alias("query"), F.lit(True).alias("_codes_ok")]
        ),
    )
    ts_col = F.col("timestamp")
    checks = _id_checks("client_id")
    checks.append((ts_col.isNull(), "bad_timestamp: timestamp"))
    checks.append(((ts_col < F.lit(lo)) | (ts_col > F.lit(hi)), "out_of_range: timestamp"))
    checks.append((ts_col > F.lit(now), "future_timestamp: timestamp"))
    if stem in PRODUCT_EVENTS:
        checks += _id_checks("sku")
    elif stem == "page_visit":
        checks += _id_checks("url")
    else:
        long, reason = _too_long("_raw_query", types["query"], options.max_query_chars)
        checks.append((long, reason.replace("_raw_query", "query")))
        checks.append((~F.coalesce(F.col("_codes_ok"), F.lit(False)), "bad_codes: query"))
    return (
        _labelled(out, checks, extra, source, EVENTS)
        .withColumn("event_date", F.to_date("timestamp"))
        .withColumn(
            "event_id",
            F.xxhash64("event_type", "client_id", "timestamp", "sku", "url", "query"),
        )
        .drop("_codes_ok", "_raw_query")
    )


def _codes_pair(col: Column, dtype: T.DataType, name: str) -> tuple[Column, Column]:
    arr, ok = parse_codes(col, dtype)
    return arr.alias(name), ok.alias("_codes_ok")


def parse_products(df: DataFrame, source: RawSource, extra: list[str],
                   options: IngestOptions | None = None) -> DataFrame:
    """Raw product_properties rows -> typed contract columns + `reason` + `raw` + order keys `_part`/`_row`."""
    options = options or IngestOptions()
    types = {f.name: f.dataType for f in df.schema.fields}
    out = df.select(
        _raw_json(df, options.max_text_chars, {"name": options.max_query_chars}).alias("raw"),
        "_part",
        "_row",
        F.col("sku").cast("bigint").alias("sku"),
        F.col("category").cast("bigint").alias("category"),
        F.col("price").cast("int").alias("price"),
        *_codes_pair(F.col("name"), types["name"], "name"),
        F.col("name").alias("_raw_name"),
    )
    checks = _id_checks("sku")
    checks.append((F.col("category").isNull() | (F.col("category") < 0), "bad_category: category"))
    checks.append(
        (F.col("price").isNull() | (F.col("price") < 0) | (F.col("price") >= PRICE_BUCKETS), "bad_price: price")
    )
    long, _ = _too_long("_raw_name", types["name"], options.max_query_chars)
    checks.append((long, "text_too_long: name"))
    checks.append((F.col("_codes_ok") == F.lit(False), "bad_codes: name"))  # a null name is allowed
    return (
        _labelled(out, checks, extra, source, PRODUCTS)
        .drop("_codes_ok", "_raw_name")
    )


def parse_product_text(df: DataFrame, source: RawSource, extra: list[str],
                       options: IngestOptions | None = None) -> DataFrame:
    """Raw product_text rows -> typed contract columns + `reason` + `raw` + order keys `_part`/`_row`."""
    options = options or IngestOptions()
    out = df.select(
        _raw_json(df, options.max_text_chars).alias("raw"),
        "_part",
        "_row",
        F.col("sku").cast("bigint").alias("sku"),
        F.col("text").cast("string").alias("text"),
    )
    checks = _id_checks("sku")
    checks.append((F.col("text").isNull() | (F.trim(F.col("text")) == ""), "null_text: text"))
    checks.append((F.length(F.col("text")) > options.max_text_chars, "text_too_long: text"))
    return _labelled(out, checks, extra, source, PRODUCT_TEXT)


def reason_counts(parsed: list[DataFrame]) -> DataFrame:
    """Per (source_file, reason code): row count and the set of valid event dates. One job for all inputs."""
    frames = [
        df.select(
            "source_file",
            F.split(F.col("reason"), ":").getItem(0).alias("code"),
            (F.when(F.col("reason").isNull(), F.col("event_date")) if "event_date" in df.columns
             else F.lit(None).cast("date")).alias("valid_date"),
        )
        for df in parsed
    ]
    union = reduce(lambda a, b: a.unionByName(b), frames)
    return union.groupBy("source_file", "code").agg(
        F.count(F.lit(1)).alias("n"), F.collect_set("valid_date").alias("dates")
    )


def quarantine_rows(parsed: DataFrame, run_id: str, at: datetime) -> DataFrame:
    """Rejected rows in the `quarantine` contract."""
    return parsed.where(F.col("reason").isNotNull()).select(
        F.lit(run_id).alias("run_id"),
        "source_file",
        "target_table",
        "raw",
        "reason",
        F.lit(at).cast("timestamp").alias("quarantined_at"),
    )


def dedup_events(valid: DataFrame, ingested_at: datetime) -> DataFrame:
    """Valid parsed events -> `events` contract rows, exact duplicates within the batch dropped."""
    return (
        valid.dropDuplicates(list(EVENT_KEY))
        .withColumn("ingested_at", F.lit(ingested_at).cast("timestamp"))
        .select(*EVENTS.column_names)
    )


def latest_per_sku(valid: DataFrame, columns: list[str], ingested_at: datetime) -> DataFrame:
    """One row per sku: the last row (by part file, then row position) wins; earlier ones are superseded."""
    w = Window.partitionBy("sku").orderBy(F.col("_part").desc(), F.col("_row").desc())
    return (
        valid.withColumn("_rank", F.row_number().over(w))
        .where(F.col("_rank") == 1)
        .withColumn("ingested_at", F.lit(ingested_at).cast("timestamp"))
        .select(*columns)
    )


def _conform(df: DataFrame, table: Table) -> DataFrame:
    """Select and cast to the contract's columns (nullability is enforced by Delta on write)."""
    return df.select(*[F.col(c.name).cast(c.type).alias(c.name) for c in table.columns])


# ---------------------------------------------------------------------------------------------------------------
# Delta writes (thin I/O)
# ---------------------------------------------------------------------------------------------------------------
def ensure_table(spark: SparkSession, table: Table, path: Path):
    """Create the Delta table with the contract schema if it does not exist yet; return the DeltaTable."""
    from delta.tables import DeltaTable

    if (path / "_delta_log").is_dir():
        return DeltaTable.forPath(spark, str(path))
    builder = DeltaTable.createIfNotExists(spark).location(str(path)).addColumns(table.spark_schema())
    if table.partition_by:
        builder = builder.partitionedBy(*table.partition_by)
    if table.doc:
        builder = builder.comment(table.doc)
    return builder.execute()


def merge_events(spark: SparkSession, path: Path, batch: DataFrame, dates: list[date]) -> None:
    """Insert events that are not in the table yet (MERGE insert-only, scoped to the batch's partitions)."""
    if not dates:
        return
    target = ensure_table(spark, EVENTS, path)
    in_dates = ", ".join(f"DATE'{d.isoformat()}'" for d in sorted(dates))
    cond = (
        f"t.event_date IN ({in_dates}) AND t.event_date = s.event_date AND t.event_id = s.event_id "
        "AND t.event_type = s.event_type AND t.client_id = s.client_id AND t.timestamp = s.timestamp "
        "AND t.sku <=> s.sku AND t.url <=> s.url AND t.query <=> s.query"
    )
    (
        target.alias("t").merge(_conform(batch, EVENTS).alias("s"), cond)
        .whenNotMatchedInsertAll()
        .execute()
    )


def merge_by_sku(spark: SparkSession, table: Table, path: Path, batch: DataFrame, value_cols: list[str]) -> None:
    """Latest properties win: insert new skus, update skus whose values changed, leave identical rows alone.

    Unchanged rows are removed before the MERGE (and no MERGE runs when nothing changed), so a re-run commits
    nothing and rewrites no file.
    """
    target = ensure_table(spark, table, path)
    current = spark.read.format("delta").load(str(path)).select("sku", *value_cols)
    same = F.col("s.sku") == F.col("t.sku")
    for c in value_cols:
        same = same & F.col(f"s.{c}").eqNullSafe(F.col(f"t.{c}"))
    changed = _conform(batch, table).alias("s").join(current.alias("t"), same, "left_anti")
    if changed.isEmpty():
        return
    (
        target.alias("t").merge(changed.alias("s"), "t.sku = s.sku")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def merge_quarantine(spark: SparkSession, path: Path, rows: DataFrame) -> None:
    """Insert rejected rows not quarantined before (same file, table, raw row and reason): re-runs add nothing."""
    target = ensure_table(spark, QUARANTINE, path)
    cond = (
        "t.source_file = s.source_file AND t.target_table = s.target_table AND t.reason = s.reason "
        "AND t.raw = s.raw"
    )
    target.alias("t").merge(_conform(rows, QUARANTINE).alias("s"), cond).whenNotMatchedInsertAll().execute()


def count_accepted(spark: SparkSession, paths: list[Path], ingested_at: datetime) -> dict[str, int]:
    """Rows this run wrote (inserted or updated), per source file, read back from the tables themselves.

    `ingested_at` is the run's timestamp; Delta's per-file min/max stats skip every older data file.
    """
    frames = [
        spark.read.format("delta").load(str(p)).select("source_file", "ingested_at")
        for p in paths if (p / "_delta_log").is_dir()
    ]
    if not frames:
        return {}
    rows = (
        reduce(lambda a, b: a.unionByName(b), frames)
        .where(F.col("ingested_at") == F.lit(ingested_at).cast("timestamp"))
        .groupBy("source_file").count()
        .collect()
    )
    return {r["source_file"]: int(r["count"]) for r in rows}


def table_sizes(spark: SparkSession, paths: dict[str, Path]) -> dict[str, int]:
    """Row count of each existing Delta table, in one job."""
    frames = [
        spark.read.format("delta").load(str(p)).select(F.lit(name).alias("t"))
        for name, p in paths.items() if (p / "_delta_log").is_dir()
    ]
    counts = {name: 0 for name in paths}
    if frames:
        for r in reduce(lambda a, b: a.unionByName(b), frames).groupBy("t").count().collect():
            counts[r["t"]] = int(r["count"])
    return counts


def count_unknown_skus(spark: SparkSession, batch: DataFrame, products_path: Path) -> int:
    """Rows of a product_text batch whose sku is not in the `products` table (read after this run's merge)."""
    if not (products_path / "_delta_log").is_dir():
        return batch.count()
    catalog = spark.read.format("delta").load(str(products_path)).select("sku")
    return batch.join(catalog, "sku", "left_anti").count()


def append_runs(spark: SparkSession, path: Path, rows: list[dict]) -> None:
    """Append the run's reconciliation rows to `ingest_runs` (the audit log grows by one row per file per run).

    `mergeSchema`: a table written before a column was added to the contract gains it (null in its old rows)."""
    ensure_table(spark, INGEST_RUNS, path)
    df = spark.createDataFrame(rows, schema=INGEST_RUNS.spark_schema())
    df.write.format("delta").mode("append").option("mergeSchema", "true").save(str(path))
