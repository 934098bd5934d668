"""`ubp ingest` errors through the real entry point (`ubp.cli.run`): exit code 2 and one line, no stack trace."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from cli_helpers import assert_one_line_error, run_cli
from ingest_fixtures import write


def test_missing_directory(spark, tmp_path: Path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(tmp_path / "lh"), "ingest", "--raw",
                           str(tmp_path / "does-not-exist"))
    assert_one_line_error(code, err, "raw directory not found", "does-not-exist")


def test_wrong_column_type_stops_before_writing(spark, tmp_path: Path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    write(raw / "page_visit.parquet", [(1, "2024-03-01 10:00:00", 7)],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("url", pa.int64())]))
    write(raw / "product_buy.parquet", [(1, "2024-03-01 10:00:00", "100")],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("sku", pa.string())]))
    lakehouse = tmp_path / "lh"
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "ingest", "--raw", str(raw))
    assert_one_line_error(code, err, "product_buy.parquet", "column sku has type string", "expected integer")
    assert not (lakehouse / "bronze" / "events").exists()  # nothing written, not even the valid page_visit


def test_corrupt_file_and_missing_column(spark, tmp_path: Path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "add_to_cart.parquet").write_bytes(b"this is not parquet at all, just some bytes")
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(tmp_path / "lh"), "ingest", "--raw", str(raw))
    assert_one_line_error(code, err, "cannot read", "add_to_cart.parquet")

    (raw / "add_to_cart.parquet").unlink()
    write(raw / "search_query.parquet", [(1, "2024-03-01 10:00:00")],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string())]))
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(tmp_path / "lh"), "ingest", "--raw", str(raw))
    assert_one_line_error(code, err, "search_query.parquet", "missing column(s) query")


def test_parts_with_different_schemas(spark, tmp_path: Path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    schema = pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("sku", pa.int64())])
    write(raw / "product_buy" / "part-0.parquet", [(1, "2024-03-01 10:00:00", 1)], schema)
    write(raw / "product_buy" / "part-1.parquet", [(1, "2024-03-01 10:00:00", "x")],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("sku", pa.string())]))
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(tmp_path / "lh"), "ingest", "--raw", str(raw))
    assert_one_line_error(code, err, "parts have different schemas", "part-1.parquet")
