"""`ubp sql`: every lakehouse table by name, Delta time travel, CSV/Parquet output, one-line errors, read-only
unless `--write`."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import assert_one_line_error, run_cli
from sql_fixtures import write_sql_lakehouse

from ubp.config import Settings


@pytest.fixture(scope="module")
def lakehouse(spark, tmp_path_factory) -> Path:
    """A tiny lakehouse: events with two versions (2 rows, then 3), products with one."""
    return write_sql_lakehouse(spark, tmp_path_factory.mktemp("sql") / "lakehouse")


def test_register_tables_by_name(spark, lakehouse):
    from ubp.spark_jobs.catalog import register_tables

    names = register_tables(spark, Settings(lakehouse=lakehouse))
    assert names == ["events", "products"]  # only tables that exist
    assert spark.table("events").count() == 3
    assert spark.sql("SELECT count(*) FROM events VERSION AS OF 0").first()[0] == 2


def test_sql_prints_a_table_and_time_travels(spark, lakehouse, monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql",
                           "SELECT client_id, query FROM events ORDER BY client_id", "--limit", "2")
    assert code == 0
    assert "client_id" in out and "2 row(s) (more rows exist" in out
    assert "[0, 1, 2, 3, 4, 5, …] (16)" in out  # arrays are shortened

    csv_out = tmp_path / "v0.csv"
    code, _, _ = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql",
                         "SELECT client_id, query FROM events VERSION AS OF 0 ORDER BY client_id", "--out",
                         str(csv_out))
    assert code == 0 and csv_out.is_file()
    rows = list(csv.DictReader(csv_out.open()))
    assert [r["client_id"] for r in rows] == ["1", "2"]  # version 0 had two events
    assert rows[0]["query"] == "[" + ",".join(str(i) for i in range(16)) + "]"  # arrays as JSON in CSV

    pq_out = tmp_path / "now.parquet"
    code, _, _ = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql",
                         "SELECT e.client_id, p.category FROM events e CROSS JOIN products p", "--out", str(pq_out))
    assert code == 0
    assert sorted(pq.read_table(pq_out).column("client_id").to_pylist()) == [1, 2, 3]


def test_sql_errors_are_one_line(spark, lakehouse, monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", "SELECT * FROM nope")
    assert_one_line_error(code, err, "TABLE_OR_VIEW_NOT_FOUND", "registered tables: events, products")
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", "SELECT 1",
                           "--out", str(tmp_path / "x.txt"))
    assert_one_line_error(code, err, ".csv, .json or .parquet")
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", "SELECT 1", "--format", "xml")
    assert_one_line_error(code, err, "--format must be one of table, csv, json")


def _version(lakehouse: Path, name: str) -> int:
    return max(int(p.stem) for p in (Settings(lakehouse=lakehouse).table_path(name) / "_delta_log").glob("*.json"))


@pytest.mark.parametrize("statement", [
    "DELETE FROM products WHERE sku = 7",
    "UPDATE products SET price = 1",
    "INSERT INTO products SELECT * FROM products",
    "WITH p AS (SELECT * FROM products) INSERT INTO products SELECT * FROM p",
    "MERGE INTO products t USING products s ON t.sku = s.sku WHEN MATCHED THEN DELETE",
    "RESTORE TABLE products TO VERSION AS OF 0",
    "DROP TABLE products",
    "OPTIMIZE products",
])
def test_sql_is_read_only_by_default(spark, lakehouse, monkeypatch, capsys, statement):
    before = _version(lakehouse, "products")
    code, out, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", statement)
    assert_one_line_error(code, err, "read-only", "--write")
    assert _version(lakehouse, "products") == before  # no new Delta version
    assert spark.read.format("delta").load(str(Settings(lakehouse=lakehouse).table_path("products"))).count() == 1


def test_sql_write_allows_dml_and_reads_pass(spark, lakehouse, monkeypatch, capsys, tmp_path):
    for query in ("DESCRIBE HISTORY events", "SHOW TABLES", "EXPLAIN SELECT * FROM events",
                  "SELECT * FROM events VERSION AS OF 0"):
        code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", query)
        assert code == 0, (query, err)
    # --write on a copy (the module's lakehouse stays as it is for the other tests)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(lakehouse, copy)
    before = _version(copy, "products")
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(copy), "sql", "DELETE FROM products WHERE sku = 7",
                           "--write")
    assert code == 0, err
    assert _version(copy, "products") == before + 1
    assert spark.read.format("delta").load(str(Settings(lakehouse=copy).table_path("products"))).count() == 0


def test_sql_formats_and_no_squeeze_when_piped(spark, lakehouse, monkeypatch, capsys):
    import json

    query = "SELECT client_id, query, timestamp, repeat('x', 150) AS wide FROM events ORDER BY client_id"
    code, out, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", query, "--limit", "2",
                             "--format", "json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["client_id"] for r in rows] == [1, 2] and rows[0]["query"] == list(range(16))
    code, out, _ = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql",
                           "SELECT sku FROM events LIMIT 1", "--format", "json")
    assert json.loads(out) == {"sku": None}  # nulls are kept
    assert rows[0]["timestamp"].startswith("2024-03-01T10:01:00")  # Spark's ISO form in the session zone (UTC)
    assert "more rows exist" in err  # the note is not mixed into the data

    code, out, _ = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", query, "--format", "csv")
    parsed = list(csv.DictReader(out.splitlines()))
    assert [r["client_id"] for r in parsed] == ["1", "2", "3"]
    assert parsed[0]["query"] == "[" + ",".join(str(i) for i in range(16)) + "]"
    assert parsed[0]["timestamp"] == "2024-03-01 10:01:00" and parsed[0]["wide"] == "x" * 150

    code, out, _ = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "sql", query)  # table, piped
    assert code == 0
    assert any("x" * 150 in line for line in out.splitlines())  # one line per row, not cut at 80 columns
