"""Tiny hand-made raw directories for the ingest tests (owned by the ingest stage)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CODES = "[" + " ".join(str(i) for i in range(1, 17)) + "]"
TS_UTC = pa.timestamp("us", tz="UTC")


def _event_schema(value: str, value_type: pa.DataType, ts_type: pa.DataType = pa.string()) -> pa.Schema:
    return pa.schema([("client_id", pa.int64()), ("timestamp", ts_type), (value, value_type)])


def write(path: Path, rows: list[tuple], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    pq.write_table(pa.table({f.name: pa.array(list(c), f.type) for f, c in zip(schema, cols, strict=True)},
                            schema=schema), path)
    return path


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def make_day1(raw: Path) -> dict[str, dict[str, int]]:
    """Two days of events with one example of every row-level quarantine reason; returns the expected counts."""
    buy = _event_schema("sku", pa.int64(), TS_UTC)  # timestamp column form, as a directory of two parts
    write(raw / "product_buy" / "part-0.parquet", [
        (1, utc("2024-03-01 10:00:00"), 100),
        (1, utc("2024-03-01 10:00:00"), 100),  # exact duplicate within the batch
        (2, utc("2024-03-02 11:00:00"), 101),
    ], buy)
    write(raw / "product_buy" / "part-1.parquet", [
        (3, utc("2024-03-02 12:00:00"), -5),  # negative_id: sku
        (None, utc("2024-03-02 12:30:00"), 101),  # null_id: client_id
        (5, utc("0001-01-01 00:00:00"), 101),  # out_of_range (before 2000-01-01)
    ], buy)
    write(raw / "add_to_cart.parquet", [  # string form of timestamps
        (1, "2024-03-01 09:00:00", 100),
        (2, "2024-13-45 99:00:00", 101),  # bad_timestamp (unparseable)
        (2, None, 101),  # bad_timestamp (null)
        (4, "2099-01-01 00:00:00", 100),  # out_of_range (after the run's start + 1 day)
        (-1, "2024-03-01 09:30:00", 100),  # negative_id: client_id
    ], _event_schema("sku", pa.int64()))
    write(raw / "remove_from_cart.parquet", [], _event_schema("sku", pa.int64()))  # empty file
    write(raw / "page_visit.parquet", [
        (1, "2024-03-01 09:05:00", 7),
        (1, "2024-03-01 09:05:00", 7),  # exact duplicate
        (2, "2024-03-02 10:00:00", None),  # null_id: url
    ], _event_schema("url", pa.int64()))
    bad_255 = "[" + " ".join(["1"] * 15 + ["256"]) + "]"
    write(raw / "search_query.parquet", [
        (1, "2024-03-01 09:01:00", CODES),
        (2, "2024-03-02 09:00:00", "[1 2 3]"),  # bad_codes: too few
        (2, "2024-03-02 09:02:00", bad_255),  # bad_codes: > 255
        (3, "2024-03-02 09:03:00", None),  # bad_codes: null query
    ], _event_schema("query", pa.string()))
    write(raw / "product_properties.parquet", [
        (100, 5, 10, CODES),
        (101, 6, 20, None),  # a null name is allowed
        (102, -1, 5, CODES),  # bad_category
        (103, 7, 100, CODES),  # bad_price
        (104, 7, 5, "[1 2 x]"),  # bad_codes: name
        (100, 5, 11, CODES),  # same sku again: the later row wins (price 11), the first is superseded
    ], pa.schema([("sku", pa.int64()), ("category", pa.int64()), ("price", pa.int32()), ("name", pa.string())]))
    write(raw / "product_text.parquet", [
        (100, "red trail running shoe"),
        (101, "   "),  # null_text (blank)
        (None, "orphan text"),  # null_id: sku
        (999, "text of a product not in the catalog"),  # accepted, counted as an unknown sku
    ], pa.schema([("sku", pa.int64()), ("text", pa.string())]))
    # stem -> expected (read, accepted, quarantined, duplicates)
    return {
        "product_buy": dict(read=6, accepted=2, quarantined=3, duplicates=1),
        "add_to_cart": dict(read=5, accepted=1, quarantined=4, duplicates=0),
        "remove_from_cart": dict(read=0, accepted=0, quarantined=0, duplicates=0),
        "page_visit": dict(read=3, accepted=1, quarantined=1, duplicates=1),
        "search_query": dict(read=4, accepted=1, quarantined=3, duplicates=0),
        "product_properties": dict(read=6, accepted=2, quarantined=3, duplicates=1),
        "product_text": dict(read=4, accepted=2, quarantined=2, duplicates=0),
    }


def make_day2(raw: Path) -> dict[str, dict[str, int]]:
    """A later day: one new event, one re-delivered old event (other timestamp form), a file with an unknown
    column (ignored by default), a product price change and a new product; three event inputs missing, one a 0-byte
    file."""
    write(raw / "product_buy.parquet", [
        (1, "2024-03-03 10:00:00", 100),  # new
        (1, "2024-03-01 10:00:00", 100),  # already ingested on day 1 (then as a timestamp column)
    ], _event_schema("sku", pa.int64()))
    write(raw / "add_to_cart.parquet", [  # naive timestamp column (read as TIMESTAMP_NTZ, taken as UTC)
        (5, datetime(2024, 3, 3, 8, 0, 0), 105),
    ], _event_schema("sku", pa.int64(), pa.timestamp("us")))
    write(raw / "page_visit.parquet", [
        (1, "2024-03-03 09:05:00", 7, "google"),
        (2, "2024-03-03 09:06:00", 8, None),
    ], pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("url", pa.int64()),
                  ("referrer", pa.string())]))  # unknown column: ignored, recorded in ingest_runs
    (raw / "remove_from_cart.parquet").write_bytes(b"")  # 0-byte file: empty input
    write(raw / "product_properties.parquet", [
        (101, 6, 25, None),  # price change: latest wins
        (105, 8, 3, CODES),  # new sku
        (100, 5, 11, CODES),  # unchanged: a duplicate
    ], pa.schema([("sku", pa.int64()), ("category", pa.int64()), ("price", pa.int32()), ("name", pa.string())]))
    return {
        "product_buy": dict(read=2, accepted=1, quarantined=0, duplicates=1),
        "add_to_cart": dict(read=1, accepted=1, quarantined=0, duplicates=0),
        "page_visit": dict(read=2, accepted=2, quarantined=0, duplicates=0),
        "remove_from_cart": dict(read=0, accepted=0, quarantined=0, duplicates=0),
        "product_properties": dict(read=3, accepted=2, quarantined=0, duplicates=1),
    }
