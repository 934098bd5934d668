"""CLI: `ubp ingest --raw DIR`, `ubp sql "SELECT ..."`, `ubp tables-doc`."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import typer

from ubp.config import IngestOptions
from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_cmd)
    app.command("sql")(sql_cmd)
    app.command("tables-doc")(tables_doc_cmd)


def ingest_cmd(
    ctx: typer.Context,
    raw: Path = typer.Option(..., "--raw", help="Raw directory in the RecSys 2025 layout (parquet files)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
    strict_schema: bool = typer.Option(
        False, "--strict-schema", help="Quarantine every row of a file with columns outside the contract "
        "(default: ignore such columns and record them in ingest_runs)."),
    min_timestamp: str | None = typer.Option(
        None, "--min-timestamp", help="Earliest accepted event time, YYYY-MM-DD[ HH:MM:SS] UTC (default 2000-01-01)."),
    max_timestamp: str | None = typer.Option(
        None, "--max-timestamp", help="Latest accepted event time (default: the run's start + 1 day)."),
    max_quarantine_share: float | None = typer.Option(
        None, "--max-quarantine-share", help="Fail the run when a file's quarantined share is above this "
        "(0..1, default 0.5); nothing is written then."),
    max_text_chars: int | None = typer.Option(
        None, "--max-text-chars", help="Longest accepted product text (default 65536 characters)."),
    max_query_chars: int | None = typer.Option(
        None, "--max-query-chars", help="Longest accepted query / product name string (default 1024)."),
) -> None:
    """Validate raw parquet files and load them into the bronze Delta tables (idempotent, incremental)."""
    from ubp.cli import settings_of
    from ubp.stages.ingest import ingest

    settings = settings_of(ctx)
    options = ingest_options(
        settings.ingest, strict_schema=strict_schema or None, min_timestamp=min_timestamp,
        max_timestamp=max_timestamp, max_quarantine_share=max_quarantine_share, max_text_chars=max_text_chars,
        max_query_chars=max_query_chars,
    )
    result = ingest(settings, raw, options=options)
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        print_summary(result)


def parse_utc(value: str, flag: str) -> datetime:
    """`YYYY-MM-DD[ HH:MM:SS]` (or ISO with an offset) -> an aware datetime; naive values are UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UbpError(f"{flag} expects YYYY-MM-DD[ HH:MM:SS], got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ingest_options(base: IngestOptions, **given) -> IngestOptions:
    """`base` with the flags that were given (None = not given); a bad value is a one-line UbpError."""
    changes = {k: v for k, v in given.items() if v is not None}
    for key in ("min_timestamp", "max_timestamp"):
        if key in changes:
            changes[key] = parse_utc(changes[key], "--" + key.replace("_", "-"))
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise UbpError(str(exc)) from None


def print_summary(result: dict, console=None) -> None:
    """The reconciliation as a rich table: per raw file, read = accepted + quarantined + duplicates."""
    from rich.table import Table

    from ubp.log import console as ubp_console

    table = Table(title=f"ingest run {result['run_id']}", title_justify="left")
    for col, justify in (("raw file", "left"), ("table", "left"), ("read", "right"), ("accepted", "right"),
                         ("quarantined", "right"), ("duplicates", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    table.add_column("reasons", overflow="fold")
    for f in result["files"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(f["reasons"].items()))
        table.add_row(Path(f["source_file"]).name, f["target_table"], f"{f['rows_read']:,}", f"{f['accepted']:,}",
                      f"{f['quarantined']:,}", f"{f['duplicates']:,}", reasons)
    t = result["totals"]
    table.add_section()
    table.add_row("total", "", f"{t['rows_read']:,}", f"{t['accepted']:,}", f"{t['quarantined']:,}",
                  f"{t['duplicates']:,}", "")
    if console is None:
        console = ubp_console()  # piped / logged: wide, the table is not squeezed into 80 columns
    console.print(table)
    if result["missing"]:
        console.print(f"not present (skipped): {', '.join(result['missing'])}")
    for f in result["files"]:
        if f.get("ignored_columns"):
            console.print(f"{Path(f['source_file']).name}: ignored column(s) {', '.join(f['ignored_columns'])}")
        if f.get("unknown_skus"):
            console.print(f"{Path(f['source_file']).name}: {f['unknown_skus']:,} sku(s) not in products "
                          "(accepted, flagged)")
    console.print("table rows: " + ", ".join(f"{k} {v:,}" for k, v in result["rows"].items()))


SQL_FORMATS = ("table", "csv", "json")
READ_ONLY_COMMANDS = ("Show", "Describe", "Explain")  # Spark command plans that only read (class name prefixes)
WRITE_PLANS = ("Insert", "Statement", "Merge", "Update", "Delete", "Restore", "Overwrite", "Append", "Write")


def sql_cmd(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="Spark SQL; every lakehouse table is registered under its name."),
    limit: int = typer.Option(50, "--limit", help="Rows to print (ignored with --out)."),
    out: Path | None = typer.Option(None, "--out", help="Write the whole result to a .csv, .json or .parquet file."),
    fmt: str | None = typer.Option(
        None, "--format", help="Printed: table (default), csv or json (one object per line). With --out: csv, json "
        "or parquet (default: from --out's suffix)."),
    write: bool = typer.Option(
        False, "--write", help="Allow statements that change tables (DELETE, UPDATE, MERGE, INSERT, DDL...)."),
) -> None:
    """Query the lakehouse with Spark SQL, read-only unless --write (time travel: `... FROM events VERSION AS OF 0`)."""
    from ubp.cli import settings_of

    run_sql(settings_of(ctx), query, limit=limit, out=out, fmt=fmt, write=write)


def statement_kind(spark, query: str) -> str | None:
    """None when `query` only reads, else the name of the Spark plan that would change something.

    Decided on Spark's own parse tree, not on keywords: `WITH ... INSERT`, `MERGE`, `RESTORE` and DDL are caught
    whatever their spelling. An unparseable query returns None: running it gives Spark's one-line syntax error.
    """
    try:
        plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    except Exception:
        return None
    command = spark._jvm.java.lang.Class.forName("org.apache.spark.sql.catalyst.plans.logical.Command")
    stack = [plan]
    while stack:
        node = stack.pop()
        name = node.getClass().getSimpleName()
        if name.startswith(READ_ONLY_COMMANDS):
            continue  # its children (EXPLAIN's query) are not executed
        if command.isInstance(node) or any(w in name for w in WRITE_PLANS):
            return name
        children = node.children()
        stack.extend(children.apply(i) for i in range(children.size()))
    return None


def run_sql(settings, query: str, *, limit: int = 50, out: Path | None = None, fmt: str | None = None,
            write: bool = False) -> int:
    """Run one query; print up to `limit` rows, or write all of them to `out`. Returns the rows printed/written.

    Read-only unless `write`: a statement that would change a table is refused before it runs.
    """
    from pyspark.errors import PySparkException

    from spark_jobs.catalog import register_tables
    from spark_jobs.ingest import first_line
    from spark_jobs.session import get_spark

    fmt = fmt.lower() if fmt else None
    if out is None and fmt not in (None, *SQL_FORMATS):
        raise UbpError(f"--format must be one of {', '.join(SQL_FORMATS)} (parquet only with --out), got {fmt!r}")
    spark = get_spark(settings)
    if not write:
        kind = statement_kind(spark, query)
        if kind is not None:
            raise UbpError(f"ubp sql is read-only: this statement ({kind}) would change the lakehouse; "
                           "add --write to run it")
    names = register_tables(spark, settings)
    try:
        df = spark.sql(query)
        if out is not None:
            return _write(df, out, fmt)
        if fmt in ("csv", "json"):
            return _print_lines(df, fmt, limit)
        rows = df.limit(limit + 1).collect()
    except PySparkException as exc:
        hint = f" (registered tables: {', '.join(names) or 'none; run `ubp ingest` first'})"
        raise UbpError(first_line(exc) + hint) from None
    _print_rows(df.columns, rows, limit)
    return min(len(rows), limit)


def _flat(df):
    """Arrays, structs and maps as JSON strings (CSV has no nested types)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    return df.select(
        *[F.to_json(F.col(f"`{f.name}`")).alias(f.name)
          if isinstance(f.dataType, T.ArrayType | T.StructType | T.MapType) else F.col(f"`{f.name}`")
          for f in df.schema.fields]
    )


def _print_lines(df, fmt: str, limit: int) -> int:
    """CSV (header + rows) or JSON lines on stdout, values formatted by Spark (timestamps in the session's UTC, not
    this process's zone); the "more rows" note goes to stderr so the output stays machine-readable."""
    import csv
    import io

    from pyspark.sql import functions as F

    if fmt == "json":  # every column in every line, nulls as null
        as_json = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]), {"ignoreNullFields": "false"})
        lines = [r[0] for r in df.select(as_json).take(limit + 1)]
        for line in lines[:limit]:
            typer.echo(line)
    else:
        flat = _flat(df)
        lines = flat.select(*[F.col(f"`{c}`").cast("string").alias(c) for c in flat.columns]).take(limit + 1)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(df.columns)
        writer.writerows([["" if v is None else v for v in r] for r in lines[:limit]])
        typer.echo(buf.getvalue(), nl=False)
    if len(lines) > limit:
        typer.echo(f"{limit} row(s) printed; more rows exist (raise --limit or use --out)", err=True)
    return min(len(lines), limit)


def _short(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | tuple):
        head = ", ".join(_short(v) for v in value[:6])
        return f"[{head}{', …' if len(value) > 6 else ''}]" + (f" ({len(value)})" if len(value) > 6 else "")
    return str(value)


def _print_rows(columns: list[str], rows: list, limit: int) -> None:
    from rich.table import Table

    from ubp.log import console as ubp_console

    table = Table()
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows[:limit]:
        table.add_row(*[_short(v) for v in r])
    console = ubp_console()  # piped / logged: no 80-column squeeze, each row on one line
    console.print(table)
    more = " (more rows exist; raise --limit or use --out)" if len(rows) > limit else ""
    console.print(f"{min(len(rows), limit)} row(s){more}")


def _write(df, out: Path, fmt: str | None) -> int:
    """Write the result as ONE file: Spark writes a single part into a scratch folder that is then moved."""

    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in ("csv", "json", "parquet"):
        raise UbpError(f"--out must end in .csv, .json or .parquet (or pass --format), got {out}")
    out = out.expanduser().resolve()
    if out.is_dir():
        raise UbpError(f"--out {out} is a directory; give a file name")
    if fmt == "csv":  # CSV has no nested types: arrays/structs/maps become JSON strings
        df = _flat(df)
    scratch = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = df.repartition(1).write.mode("overwrite")
        if fmt == "csv":
            writer.option("header", "true").csv(str(scratch))
        elif fmt == "json":
            writer.json(str(scratch))
        else:
            writer.parquet(str(scratch))
        parts = sorted(p for p in scratch.iterdir() if p.name.startswith("part-"))
        shutil.move(str(parts[0]), str(out))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reader = df.sparkSession.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true").option("multiLine", "true")
    n = reader.load(str(out)).count()
    typer.echo(f"wrote {n:,} row(s) to {out}")
    return n


def tables_doc_cmd(
    out: Path | None = typer.Option(None, "--out", help="Where to write (default: docs/tables.md of the repo)."),
    check: bool = typer.Option(False, "--check", help="Only check that the file is up to date (exit 1 if not)."),
) -> None:
    """Generate docs/tables.md from the table contracts in ubp/tables.py."""
    from ubp.tables_doc import DEFAULT_PATH, render

    path = out or DEFAULT_PATH
    text = render()
    if check:
        if not path.exists() or path.read_text() != text:
            typer.echo(f"{path} is out of date: run `ubp tables-doc`")
            raise typer.Exit(1)
        typer.echo(f"{path} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    typer.echo(f"wrote {path}")
