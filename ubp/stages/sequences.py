"""Stage `sequences`: silver user_sequences + vocabularies (and the bronze helpers `aggregates` shares).

As-of rule (this stage and `aggregates`): only events strictly before `as_of` are used. `as_of=None` means "all events": the latest
event timestamp in bronze + 1 second. Rebuilding for the same as-of (and vocabulary) gives the same table.

Vocabulary policy of `sequences`: the vocabulary is part of a trained model's contract, so by default a rebuild
REUSES the vocabulary the existing `user_sequences` table was built with (the serving model keeps working on fresh
data); the first build, or `refresh_vocab=True`, builds a new one from the events before `as_of`. Days after the
vocabulary's last day get OOV day/week tokens until the vocabulary is refreshed (and the model retrained).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger

log = get_logger(__name__)

PROP_AS_OF = "ubp.as_of"
PROP_VOCAB = "ubp.vocab_version"
PROP_MAX_LEN = "ubp.max_len"
PROP_WATERMARK = "ubp.ingested_watermark"


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _is_delta(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def _require_events(settings: Settings) -> None:
    """Fail fast, before starting Spark, when there is nothing to build from."""
    events_path = settings.table_path("events")
    if not _is_delta(events_path):
        raise UbpError(f"no events table at {events_path}: run `ubp ingest --raw DIR` first")


def _read_pinned(spark, path: Path, name: str, version: int | None = None):
    """(DataFrame, version) of one Delta table version (None: the latest, which is then the pinned one).

    A Spark Parquet scan over exactly the files that version's log lists (delta-rs reads the log: no Spark job;
    Spark's Delta reader runs snapshot and file-listing jobs in a cold JVM before the first row); partition columns are left out, the stages never read them. A table with deletion vectors
    or column mapping needs Delta's own reader: the file list alone would bring soft-deleted rows back."""
    from pyspark.sql.types import StructType

    from ubp.reader import _open, _readable_as_dataset
    from ubp.tables import TABLES

    dt = _open(path, version)
    version = int(dt.version())
    if not _readable_as_dataset(dt):
        return spark.read.format("delta").option("versionAsOf", version).load(str(path)), version
    table = TABLES[name]
    schema = StructType([f for f in table.spark_schema().fields if f.name not in table.partition_by])
    files = dt.file_uris()
    return (spark.read.schema(schema).parquet(*files) if files else spark.createDataFrame([], schema)), version


def _bronze(spark, settings: Settings):
    """(events, products, events version). The events are pinned to the table version current now, so the as-of
    resolved from that version's log statistics (`resolve_as_of`) and every scan of the stage see the same events,
    even while an ingest appends."""
    _require_events(settings)
    events_path, products_path = settings.table_path("events"), settings.table_path("products")
    events, version = _read_pinned(spark, events_path, "events")
    if _is_delta(products_path):
        products, _ = _read_pinned(spark, products_path, "products")
    else:
        from ubp.tables import PRODUCTS

        log.warning("no products table at %s: category and price tokens will be OOV", products_path)
        products = spark.createDataFrame([], PRODUCTS.spark_schema())
    return events, products, version


def _log_maxima(path: Path, version: int | None = None) -> tuple[datetime | None, datetime | None] | None:
    """max(timestamp), max(ingested_at) from the Delta log's per-file statistics (no data scan), or None when the
    statistics cannot be trusted (missing, or deletion vectors: a file's stats then include deleted rows)."""
    import pyarrow as pa
    from deltalake import DeltaTable as RsTable

    try:
        dt = RsTable(str(path), version=version)
        if "deletionVectors" in set(dt.protocol().reader_features or ()):
            return None
        adds = pa.table(dt.get_add_actions(flatten=True))
    except Exception as exc:  # any problem reading stats: fall back to a scan
        log.debug("no usable Delta statistics for %s: %s", path, exc)
        return None
    if adds.num_rows == 0:
        return None, None
    out = []
    for col in ("max.timestamp", "max.ingested_at"):
        if col not in adds.column_names or adds[col].null_count:
            return None
        out.append(pa.compute.max(adds[col]).as_py())
    return out[0], out[1]


def resolve_as_of(events, as_of: datetime | None, path: Path | None = None,
                  version: int | None = None) -> tuple[datetime, datetime | None, bool]:
    """(`as_of` or the latest event timestamp + 1 second, the latest `ingested_at`, whether every event is before
    the as-of).

    Read from the Delta log's statistics (of `version`: the one `events` is pinned to) when they are complete,
    else with one aggregate over the events. Delta keeps timestamp statistics to the millisecond (truncated), so
    "every event is before" needs the recorded maximum + 1 ms <= as-of; then the jobs can leave the as-of filter out
    (see `spark_jobs.vocab.select_events`)."""
    from pyspark.sql import functions as F

    maxima = _log_maxima(path, version) if path is not None else None
    if maxima is None:
        maxima = tuple(events.agg(F.max("timestamp"), F.max("ingested_at")).first())
    latest, ingested = maxima
    ingested = _utc(ingested) if ingested is not None else None
    if as_of is None:
        if latest is None:
            raise UbpError("the events table is empty: nothing to build")
        as_of = _utc(latest).replace(microsecond=0) + timedelta(seconds=1)
    as_of = _utc(as_of)
    all_before = latest is None or _utc(latest) + timedelta(milliseconds=1) <= as_of
    return as_of, ingested, all_before


def _set_props(spark, path: Path, props: dict[str, str]) -> None:
    """Record the build's table properties in one Delta commit. Written with delta-rs (~10 ms; Spark's `ALTER TABLE`
    took 1.7 s in a fresh JVM); Spark's `ALTER TABLE` when delta-rs cannot write this table (e.g. a writer feature
    it does not support)."""
    from deltalake import DeltaTable as RsTable
    from deltalake.exceptions import DeltaError

    try:
        RsTable(str(path)).alter.set_table_properties(props, raise_if_not_exists=False)
        return
    except DeltaError as exc:
        log.info("setting table properties with Spark (delta-rs: %s)", exc)
    kv = ", ".join(f"'{k}' = '{v}'" for k, v in props.items())
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({kv})")


def _ensure(spark, name: str, path: Path) -> None:
    """Create the table with its contract schema and comment when it does not exist yet (a no-op builder costs
    ~0.5 s of JVM time, so an existing table is left alone)."""
    if _is_delta(path):
        return
    from delta.tables import DeltaTable

    from ubp.tables import TABLES

    table = TABLES[name]
    builder = DeltaTable.createIfNotExists(spark).location(str(path)).addColumns(table.spark_schema())
    if table.partition_by:
        builder = builder.partitionedBy(*table.partition_by)
    builder.comment(table.doc).execute()


def _store_vocab(spark, settings: Settings, vocab, as_of: datetime) -> None:
    """Write a vocabulary version once (its partition is replaced, so a rerun is a no-op in content)."""
    from deltalake import DeltaTable as RsTable

    from ubp.spark_jobs.vocab import vocab_frame

    path = settings.table_path("vocabularies")
    _ensure(spark, "vocabularies", path)
    stored = {p.get("version") for p in RsTable(str(path)).partitions()}  # from the Delta log, no Spark job
    if vocab.version in stored:
        log.info("vocabulary %s already stored", vocab.version)
        return
    (vocab_frame(spark, vocab, as_of).write.format("delta").mode("overwrite")
     .option("replaceWhere", f"version = '{vocab.version}'").save(str(path)))


# Writer features a commit of plain Parquet files respects without doing anything (anything else: Spark's writer).
_PLAIN_WRITER_FEATURES = frozenset({"invariants", "timestampNtz"})


def _files_committable(dt) -> bool:
    """Whether the build may write its own Parquet files and commit them with delta-rs to this (delta-rs) table: it
    asks nothing of a writer beyond non-null columns (which the build checks), e.g. no CHECK constraints, generated
    columns, append-only, deletion vectors or column mapping that someone enabled on it."""
    protocol, conf = dt.protocol(), dt.metadata().configuration
    features = set(protocol.writer_features or ())
    if protocol.min_writer_version > 2 and not features <= _PLAIN_WRITER_FEATURES:
        return False
    if any(k.startswith("delta.constraints.") for k in conf) or conf.get("delta.appendOnly") == "true":
        return False
    return not {"delta.enableDeletionVectors", "delta.columnMapping.mode"} & {
        k for k, v in conf.items() if v not in ("false", "none")}


def _overwrite(prepared, spec, out_path: Path) -> str:
    """Replace the table's rows with the build's, in one Delta commit; returns which writer did it.

    "arrow": the tasks write Parquet files into the table's directory (`spark_jobs.sequences.sequence_files`; the
    executors must see the lakehouse under the same path as the driver, as every ubp stage assumes) and delta-rs
    commits them with the old files' removal; only the small file list reaches the driver. "spark": the same rows
    through Spark's Delta writer, for a table whose protocol or properties ask more of a writer (see
    `_files_committable`). The arrow path exists because Spark's Delta writer (parquet-mr) writes list columns a
    group per element, the slowest part of the build at scale."""
    from deltalake import DeltaTable as RsTable
    from deltalake.transaction import AddAction, CommitProperties

    from ubp.spark_jobs.sequences import sequence_files, sequence_rows
    from ubp.tables import USER_SEQUENCES

    dt = RsTable(str(out_path))  # the version the commit below builds on
    if not _files_committable(dt):
        log.info("user_sequences has writer features or constraints: writing through Spark's Delta writer")
        (sequence_rows(prepared, spec).write.format("delta").mode("overwrite").option("overwriteSchema", "false")
         .option("mergeSchema", "true")  # a table from before a contract column (e.g. `name`) gains it
         .save(str(out_path)))
        return "spark"
    files = sequence_files(prepared, spec, str(out_path)).collect()  # one small row per written file
    adds = [AddAction(f["path"], f["size"], {}, f["modification_time"], True, f["stats"]) for f in files]
    schema = dt.schema()
    if set(USER_SEQUENCES.column_names) - {f.name for f in schema.fields}:
        schema = USER_SEQUENCES.arrow_schema()  # a table from before a contract column (e.g. `name`) gains it
    dt.create_write_transaction(adds, mode="overwrite", schema=schema,
                                commit_properties=CommitProperties(custom_metadata={"ubp.stage": "sequences"}))
    return "arrow"


def sequences(
    settings: Settings,
    as_of: datetime | None = None,
    max_len: int = 126,
    incremental: bool = False,
    refresh_vocab: bool = False,
    top_k: dict[str, int | None] | None = None,
) -> dict[str, Any]:
    """Build silver `user_sequences` (and the `vocabularies` version it uses) from bronze events.

    incremental: rebuild only users with events in [previous as-of, as_of) or ingested after the previous build
    (late arrivals), and MERGE them into the table; everyone else's row is left as it was (their `as_of` column
    keeps the build they last changed in; the table-level as-of is the `ubp.as_of` table property). Deleted bronze
    events need a full rebuild, and so does a table built before a contract column existed (e.g. `name`, the
    product-name codes): the merge keeps the table's columns, a full build adds the new ones.
    """
    from delta.tables import DeltaTable

    from ubp.reader import count_rows, read_vocab, table_properties
    from ubp.spark_jobs.sequences import BUILD_CONF, changed_users, sequence_rows, spec_for
    from ubp.spark_jobs.session import get_spark, with_sql_conf
    from ubp.spark_jobs.vocab import ALL_FIELDS, Vocab, build_vocab, prepare_events, select_events

    if max_len < 1:
        raise UbpError(f"--max-len must be >= 1, got {max_len}")
    t0 = time.perf_counter()
    _require_events(settings)
    spark = get_spark(settings)
    events, products, events_version = _bronze(spark, settings)
    timings: dict[str, float] = {"session": round(time.perf_counter() - t0, 2)}
    t1 = time.perf_counter()
    as_of, watermark, all_before = resolve_as_of(events, as_of, settings.table_path("events"), events_version)
    timings["as_of_scan"] = round(time.perf_counter() - t1, 2)
    out_path = settings.table_path("user_sequences")
    vocab_path = settings.table_path("vocabularies")
    props = table_properties(out_path) if _is_delta(out_path) else {}

    if incremental and not props.get(PROP_AS_OF):
        log.info("no previous user_sequences build: doing a full build")
        incremental = False
    if incremental:
        if int(props.get(PROP_MAX_LEN, max_len)) != max_len:
            raise UbpError(f"user_sequences was built with max_len {props[PROP_MAX_LEN]}, asked {max_len}: "
                           "rebuild without --incremental")
        if refresh_vocab:
            raise UbpError("--refresh-vocab changes every user's tokens: rebuild without --incremental")
        prev_as_of = _utc(datetime.fromisoformat(props[PROP_AS_OF]))
        if as_of < prev_as_of:
            raise UbpError(f"incremental build needs an as-of >= the table's ({prev_as_of.isoformat()}), "
                           f"got {as_of.isoformat()}: rebuild without --incremental")

    t1 = time.perf_counter()
    reuse = props.get(PROP_VOCAB) if not refresh_vocab else None
    if reuse and _is_delta(vocab_path):
        vocab = Vocab(maps={f: {} for f in ALL_FIELDS} | read_vocab(vocab_path, reuse))
        if vocab.version != reuse:
            raise UbpError(f"vocabulary {reuse} in {vocab_path} is damaged (its content hashes to {vocab.version}): "
                           "rebuild with --refresh-vocab")
        log.info("reusing vocabulary %s of the existing user_sequences table", vocab.version)
    else:
        vocab = build_vocab(select_events(events, as_of, all_before), products, top_k)
        log.info("built vocabulary %s: %s", vocab.version, vocab.sizes())
    _store_vocab(spark, settings, vocab, as_of)
    timings["vocab"] = round(time.perf_counter() - t1, 2)
    t1 = time.perf_counter()

    new_props = {PROP_AS_OF: as_of.isoformat(), PROP_VOCAB: vocab.version, PROP_MAX_LEN: str(max_len)}
    if watermark is not None:
        new_props[PROP_WATERMARK] = _utc(watermark).isoformat()
    result: dict[str, Any] = {"stage": "sequences", "as_of": as_of.isoformat(), "vocab_version": vocab.version,
                              "vocab_sizes": vocab.sizes(), "max_len": max_len, "incremental": incremental,
                              "table": str(out_path)}
    if incremental:
        wm = props.get(PROP_WATERMARK)
        changed = changed_users(events, as_of, prev_as_of, _utc(datetime.fromisoformat(wm)) if wm else None)
        scoped = events.join(changed, on="client_id", how="left_semi")
        rows = sequence_rows(prepare_events(scoped, products, as_of), spec_for(vocab, as_of, max_len))
        target = DeltaTable.forPath(spark, str(out_path))
        with with_sql_conf(spark, BUILD_CONF):
            (target.alias("t").merge(rows.alias("s"), "t.client_id = s.client_id")
             .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        from deltalake import DeltaTable as RsTable

        merges = [h for h in RsTable(str(out_path)).history(3) if h.get("operation") == "MERGE"]
        metrics = merges[0].get("operationMetrics", {}) if merges else {}
        result["merge"] = {k: int(metrics.get(k, 0)) for k in
                           ("numTargetRowsUpdated", "numTargetRowsInserted", "numTargetRowsCopied", "numSourceRows")}
        result["users_rebuilt"] = result["merge"]["numSourceRows"]
    else:
        prepared = prepare_events(events, products, as_of, all_before)
        _ensure(spark, "user_sequences", out_path)
        with with_sql_conf(spark, BUILD_CONF):
            result["writer"] = _overwrite(prepared, spec_for(vocab, as_of, max_len), out_path)
    _set_props(spark, out_path, new_props)
    timings["build_write"] = round(time.perf_counter() - t1, 2)
    n = count_rows(out_path)
    result["rows"] = {"user_sequences": n, "vocabularies": sum(len(m) for m in vocab.maps.values())}
    result["timings"] = timings
    result["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("user_sequences: %d users, as of %s, vocabulary %s (%.1fs)", n, as_of.isoformat(), vocab.version,
             result["seconds"])
    return result

