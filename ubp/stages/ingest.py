"""Stage `ingest`: raw RecSys-2025 parquet -> bronze Delta tables, with quarantine and a reconciliation per file.

Every raw row ends up in exactly one bucket: accepted (written to its table), quarantined (`quarantine` table, with
a reason) or duplicate (an exact duplicate event, or a product row that changes nothing). The buckets are counted
with Spark aggregations (accepted is read back from the table itself) and stored in `ingest_runs`.

Idempotent: events are inserted with a MERGE keyed on a stable event hash, scoped to the event dates of the batch;
products / product_text are MERGEd by sku (latest properties win, unchanged rows are not rewritten); quarantine rows
are inserted only if the same rejected row is not there yet. Re-running the same directory writes no data file;
only `ingest_runs` (the audit log) gets the new run's rows.

Guards (`IngestOptions`, from `settings.ingest` or the CLI flags): columns outside the contract are ignored and
recorded (refused with `strict_schema`); event times outside a window are quarantined (`out_of_range`); oversized
texts are quarantined (`text_too_long`); product texts of skus missing from `products` are accepted but counted
(`unknown_skus`: the catalog may arrive later, and quarantine is final); and when a file's quarantined share is over
`max_quarantine_share` the run fails before it writes anything.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

from ubp.config import IngestOptions, Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.tables import EVENTS, INGEST_RUNS, PRODUCT_TEXT, PRODUCTS, QUARANTINE

log = get_logger(__name__)
INGEST_TABLES = (EVENTS, PRODUCTS, PRODUCT_TEXT, QUARANTINE, INGEST_RUNS)


def ingest(settings: Settings, raw_dir: str | Path, *, now: datetime | None = None,
           options: IngestOptions | None = None) -> dict:
    """Validate and load one raw directory into the lakehouse; return the reconciliation summary.

    `now` is the cut-off for "timestamp in the future" (default: the run's start, UTC); `options` the guards
    (default: `settings.ingest`).
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        return _ingest(settings, raw_dir, now=now, options=options or settings.ingest)
    except (Py4JError, PySparkException) as exc:
        from ubp.spark_jobs.ingest import first_line

        raise UbpError(f"ingest of {raw_dir} failed: {first_line(exc)}") from exc


def _since(t0: datetime) -> float:
    return (datetime.now(UTC) - t0).total_seconds()


def _flag_unknown_skus(spark, files: dict[str, dict], valid, started: datetime, settings: Settings) -> None:
    """Count, per product_text input, the valid rows' skus that `products` does not hold (accepted, flagged)."""
    from pyspark.sql import functions as F

    from ubp.spark_jobs import ingest as job

    products = settings.table_path(PRODUCTS.name)
    for source_file, entry in files.items():
        if entry["target_table"] != PRODUCT_TEXT.name or not entry["rows_read"]:
            continue
        skus = valid.where(F.col("source_file") == source_file).select("sku").distinct()
        entry["unknown_skus"] = n = job.count_unknown_skus(spark, skus, products)
        if n:
            log.warning("  %s: %d sku(s) not in products (accepted; counted in ingest_runs.unknown_skus)",
                        Path(source_file).name, n)


def _check_share(files: dict[str, dict], limit: float) -> None:
    """Fail the run (one line, before any write) when a file's quarantined share is over `limit`."""
    bad = [e for e in files.values() if e["rows_read"] and e["quarantined"] / e["rows_read"] > limit]
    if not bad:
        return
    parts = []
    for e in bad:
        top = ", ".join(f"{k} {v}" for k, v in sorted(e["reasons"].items(), key=lambda kv: -kv[1])[:3])
        parts.append(f"{Path(e['source_file']).name}: {e['quarantined']:,} of {e['rows_read']:,} rows "
                     f"({e['quarantined'] / e['rows_read']:.0%}) fail validation ({top})")
    raise UbpError(
        f"{'; '.join(parts)}: over the limit of {limit:.0%} (--max-quarantine-share); nothing was written"
    )


def _ingest(settings: Settings, raw_dir: str | Path, *, now: datetime | None, options: IngestOptions) -> dict:
    from pyspark.sql import functions as F

    from ubp.spark_jobs import ingest as job
    from ubp.spark_jobs.session import get_spark

    started = datetime.now(UTC)
    cutoff = now or started
    cutoff = cutoff.astimezone(UTC) if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    run_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    sources = job.discover(raw_dir)
    spark = get_spark(settings)
    log.info("ingest run %s: %d raw input(s) in %s", run_id, len(sources), raw_dir)

    # 1. Read and check every input's columns before writing anything (a wrong type stops the whole run).
    files: dict[str, dict] = {}
    parsed: dict[str, list] = {EVENTS.name: [], PRODUCTS.name: [], PRODUCT_TEXT.name: []}
    for src in sources:
        files[src.source_file] = {
            "source_file": src.source_file, "stem": src.stem, "target_table": src.table.name,
            "rows_read": 0, "accepted": 0, "quarantined": 0, "duplicates": 0, "reasons": {},
            "ignored_columns": [], "unknown_skus": None,
        }
        df = job.read_raw(spark, src)
        if df is None:
            log.info("  %s: empty", src.path.name)
            continue
        extra = job.check_columns(src, df.schema)
        refused = job.unknown_columns(extra) if options.strict_schema else []
        files[src.source_file]["ignored_columns"] = [c for c in extra if c not in refused]
        if refused:
            log.warning("  %s: unknown column(s) %s (--strict-schema): its rows go to quarantine", src.path.name,
                        ", ".join(refused))
        if src.table is EVENTS:
            parsed[EVENTS.name].append(job.parse_events(df, src, refused, cutoff, options))
        elif src.table is PRODUCTS:
            parsed[PRODUCTS.name].append(job.parse_products(df, src, refused, options))
        else:
            parsed[PRODUCT_TEXT.name].append(job.parse_product_text(df, src, refused, options))
    ignored = [f"{Path(e['source_file']).name}: {', '.join(e['ignored_columns'])}"
               for e in files.values() if e["ignored_columns"]]
    if ignored:  # one warning per run, however many files
        log.warning("  ignoring column(s) outside the contract (recorded in ingest_runs; --strict-schema refuses "
                    "them): %s", "; ".join(ignored))
    missing = sorted(set(job.SOURCES) - {s.stem for s in sources})
    if missing:
        log.info("  not present: %s", ", ".join(missing))

    frames = {name: reduce(lambda a, b: a.unionByName(b), dfs) for name, dfs in parsed.items() if dfs}

    # 2. Count rows read / quarantined per file and reason, and the valid event dates (one aggregation).
    event_dates: set = set()
    if frames:
        for r in job.reason_counts(list(frames.values())).collect():
            entry = files[r["source_file"]]
            entry["rows_read"] += int(r["n"])
            if r["code"] is not None:
                entry["quarantined"] += int(r["n"])
                entry["reasons"][r["code"]] = entry["reasons"].get(r["code"], 0) + int(r["n"])
            event_dates.update(r["dates"] or [])
    n_read = sum(e["rows_read"] for e in files.values())
    n_bad = sum(e["quarantined"] for e in files.values())
    log.info("  read %d rows, %d fail validation (%.1fs)", n_read, n_bad, _since(started))
    _check_share(files, options.max_quarantine_share)
    for table in INGEST_TABLES:
        job.ensure_table(spark, table, settings.table_path(table.name))

    # 3. Quarantine (insert-if-new), then the three data tables.
    if n_bad:
        bad = reduce(
            lambda a, b: a.unionByName(b),
            [job.quarantine_rows(df, run_id, started) for df in frames.values()],
        )
        job.merge_quarantine(spark, settings.table_path(QUARANTINE.name), bad)
        log.info("  quarantine merged (%.1fs)", _since(started))
    if EVENTS.name in frames:
        valid = frames[EVENTS.name].where(F.col("reason").isNull())
        job.merge_events(spark, settings.table_path(EVENTS.name), job.dedup_events(valid, started),
                         sorted(event_dates))
        log.info("  events merged (%d event dates, %.1fs)", len(event_dates), _since(started))
    for table, values in ((PRODUCTS, ["category", "price", "name"]), (PRODUCT_TEXT, ["text"])):
        if table.name in frames:
            valid = frames[table.name].where(F.col("reason").isNull())
            batch = job.latest_per_sku(valid, table.column_names, started)
            job.merge_by_sku(spark, table, settings.table_path(table.name), batch, values)
            log.info("  %s merged (%.1fs)", table.name, _since(started))
            if table is PRODUCT_TEXT:  # after the products merge: this run's catalog counts
                _flag_unknown_skus(spark, files, valid, started, settings)

    # 4. Reconcile: accepted is read back from each table (rows carrying this run's ingested_at).
    data_paths = [settings.table_path(t.name) for t in (EVENTS, PRODUCTS, PRODUCT_TEXT)]
    for source_file, n in job.count_accepted(spark, data_paths, started).items():
        if source_file in files:
            files[source_file]["accepted"] = n
    for entry in files.values():
        entry["duplicates"] = entry["rows_read"] - entry["quarantined"] - entry["accepted"]
        if entry["duplicates"] < 0:  # more rows written than valid rows read: a bug, never a user error
            raise RuntimeError(f"reconciliation failed for {entry['source_file']}: {entry}")
    finished = datetime.now(UTC)
    job.append_runs(
        spark,
        settings.table_path(INGEST_RUNS.name),
        [
            {
                **{k: e[k] for k in ("source_file", "target_table", "rows_read", "accepted", "quarantined",
                                     "duplicates")},
                "run_id": run_id, "started_at": started, "finished_at": finished,
                "ignored_columns": ", ".join(e["ignored_columns"]) or None, "unknown_skus": e["unknown_skus"],
            }
            for e in files.values()
        ],
    )
    sizes = job.table_sizes(spark, {t.name: settings.table_path(t.name) for t in INGEST_TABLES})
    totals = {k: sum(e[k] for e in files.values()) for k in ("rows_read", "accepted", "quarantined", "duplicates")}
    log.info(
        "ingest run %s done in %.1fs: read %d = accepted %d + quarantined %d + duplicates %d",
        run_id, (finished - started).total_seconds(), totals["rows_read"], totals["accepted"],
        totals["quarantined"], totals["duplicates"],
    )
    return {
        "stage": "ingest",
        "run_id": run_id,
        "raw_dir": str(Path(raw_dir).resolve()),
        "rows": sizes,
        "totals": totals,
        "files": list(files.values()),
        "missing": missing,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "seconds": round((finished - started).total_seconds(), 3),
    }
