"""Stage `sql`: Spark SQL over the lakehouse (every table registered under its name), read-only unless asked.

The command `ubp sql` calls `run_sql`; the result goes to stdout (a table, CSV or JSON lines) or to one file.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

from ubp.errors import UbpError

SQL_FORMATS = ("table", "csv", "json")
READ_ONLY_COMMANDS = ("Show", "Describe", "Explain")  # Spark command plans that only read (class name prefixes)
WRITE_PLANS = ("Insert", "Statement", "Merge", "Update", "Delete", "Restore", "Overwrite", "Append", "Write")



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

    from ubp.spark_jobs.catalog import register_tables
    from ubp.spark_jobs.ingest import first_line
    from ubp.spark_jobs.session import get_spark

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
            print(line)
    else:
        flat = _flat(df)
        lines = flat.select(*[F.col(f"`{c}`").cast("string").alias(c) for c in flat.columns]).take(limit + 1)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(df.columns)
        writer.writerows([["" if v is None else v for v in r] for r in lines[:limit]])
        sys.stdout.write(buf.getvalue())
    if len(lines) > limit:
        print(f"{limit} row(s) printed; more rows exist (raise --limit or use --out)", file=sys.stderr)
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
    print(f"wrote {n:,} row(s) to {out}")
    return n
