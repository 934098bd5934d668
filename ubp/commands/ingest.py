"""CLI: `ubp ingest --raw DIR`, `ubp sql "SELECT ..."`, `ubp tables-doc`."""

from __future__ import annotations

import json
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
    from ubp.stages.sql import run_sql

    run_sql(settings_of(ctx), query, limit=limit, out=out, fmt=fmt, write=write)


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
