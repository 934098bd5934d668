"""Ingest guards on real Delta tables: the organizers' pandas-written split (nanosecond timestamps, pandas index
column), every timestamp form giving the same events, the event-time window, text caps, strict schema, and the
failure threshold that stops a run before it writes anything."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tests.ingest_fixtures import CODES, write
from tests.test_ingest_cli import assert_one_line_error, run_cli
from ubp.config import IngestOptions, Settings

pytestmark = pytest.mark.slow  # real ingests

# (client_id, UTC time, sku / url): the same events are written in every timestamp form
EVENTS = [
    (1, "2024-03-01 10:00:00.123456789", 100),  # sub-microsecond digits: truncated to microseconds
    (2, "2024-03-02 23:59:59", 101),
    (3, "2024-03-03 00:00:00", 102),
]
TS = pd.to_datetime([e[1] for e in EVENTS], format="ISO8601")  # datetime64[ns], naive = UTC
MICROS = [t.value // 1000 for t in TS]  # what ingest must store (epoch microseconds)
MILLIS = [t.value // 1_000_000 * 1000 for t in TS]  # a millisecond column holds less


def _frame(value: str) -> pd.DataFrame:
    return pd.DataFrame({"client_id": [e[0] for e in EVENTS], "timestamp": TS, value: [e[2] for e in EVENTS]})


def _arrow_events(path: Path, value: str, ts_type: pa.DataType) -> None:
    unit = ts_type.unit
    ts = pa.array(TS.as_unit("ns").asi8, pa.int64())
    ts = pa.array([v // {"ms": 1_000_000, "us": 1000}[unit] for v in ts.to_pylist()], pa.int64()).cast(ts_type)
    table = pa.table({"client_id": pa.array([e[0] for e in EVENTS], pa.int64()), "timestamp": ts,
                      value: pa.array([e[2] for e in EVENTS], pa.int64())})
    path.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def make_organizer_split(raw: Path) -> None:
    """Every timestamp form: pandas datetime64[ns] naive (as the organizers' `split_data` writes it, with a filtered
    frame's index column), pandas ns with a time zone, Parquet ms naive, Parquet us with a zone, and strings."""
    raw.mkdir(parents=True)
    buy = _frame("sku")
    buy.index = [10, 20, 30]  # a filtered frame: pandas writes `__index_level_0__`
    buy.to_parquet(raw / "product_buy.parquet")
    cart = _frame("sku")
    cart["timestamp"] = cart["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Europe/Warsaw")
    cart.to_parquet(raw / "add_to_cart.parquet")
    _arrow_events(raw / "remove_from_cart.parquet", "sku", pa.timestamp("ms"))
    _arrow_events(raw / "page_visit.parquet", "url", pa.timestamp("us", tz="UTC"))
    write(raw / "search_query.parquet", [(e[0], e[1][:19], CODES) for e in EVENTS],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("query", pa.string())]))
    pd.DataFrame({"sku": [100, 101, 102], "category": [1, 2, 3], "price": [5, 6, 7],
                  "name": [CODES] * 3}).to_parquet(raw / "product_properties.parquet")


def test_organizer_split_every_timestamp_form(spark, tmp_path: Path):
    from pyspark.sql import functions as F

    from ubp.stages.ingest import ingest

    settings = Settings(lakehouse=tmp_path / "lakehouse")
    make_organizer_split(tmp_path / "split")
    res = ingest(settings, tmp_path / "split")
    files = {f["stem"]: f for f in res["files"]}
    assert res["totals"]["quarantined"] == 0
    for stem, f in files.items():  # same counts as the input files
        assert (f["rows_read"], f["accepted"], f["quarantined"]) == (3, 3, 0), stem
    assert files["product_buy"]["ignored_columns"] == ["__index_level_0__"]
    ev = spark.read.format("delta").load(str(settings.table_path("events")))
    got: dict[str, list[int]] = {}
    for r in ev.select("event_type", F.unix_micros("timestamp").alias("us")).orderBy("event_type", "us").collect():
        got.setdefault(r["event_type"], []).append(r["us"])
    whole = [m // 1_000_000 * 1_000_000 for m in MICROS]
    assert got == {"product_buy": MICROS, "add_to_cart": MICROS, "remove_from_cart": MILLIS,
                   "page_visit": MICROS, "search_query": whole}

    # the same events again as naive microsecond columns: every row is a duplicate (same event_id), none is new
    for stem, value in (("product_buy", "sku"), ("add_to_cart", "sku"), ("page_visit", "url")):
        _arrow_events(tmp_path / "again" / f"{stem}.parquet", value, pa.timestamp("us"))
    again = ingest(settings, tmp_path / "again")
    assert {f["stem"]: (f["accepted"], f["quarantined"], f["duplicates"]) for f in again["files"]} == {
        s: (0, 0, 3) for s in ("product_buy", "add_to_cart", "page_visit")}


def test_window_caps_and_strict_schema(spark, tmp_path: Path):
    from pyspark.sql import functions as F
    from ubp.spark_jobs.ingest import TRUNCATED

    from ubp.stages.ingest import ingest

    raw = tmp_path / "raw"
    now = datetime(2024, 6, 1, tzinfo=UTC)
    string_events = pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("sku", pa.int64())])
    write(raw / "add_to_cart.parquet", [
        (1, "2023-12-31 23:59:59", 1),  # out_of_range: before --min-timestamp
        (2, "2024-01-01 00:00:00", 1),  # the window's first second: accepted
        (3, "2024-06-01 12:00:00", 1),  # after the run's start, inside the window: future_timestamp
        (4, "2024-06-03 00:00:00", 1),  # after the run's start + 1 day: out_of_range
        (5, "0001-01-01 00:00:00", 1),  # out_of_range
    ], string_events)
    huge_query = "[" + " ".join(["1"] * 4000) + "]"
    write(raw / "search_query.parquet", [(1, "2024-03-01 10:00:00", CODES), (2, "2024-03-01 10:00:00", huge_query)],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("query", pa.string())]))
    write(raw / "product_properties.parquet", [(1, 2, 3, CODES), (2, 2, 3, "[" + "9 " * 80 + "]")],
          pa.schema([("sku", pa.int64()), ("category", pa.int64()), ("price", pa.int64()), ("name", pa.string())]))
    write(raw / "product_text.parquet", [(1, "short text"), (2, "x" * 5000)],
          pa.schema([("sku", pa.int64()), ("text", pa.string())]))
    write(raw / "page_visit.parquet", [(1, "2024-03-01 10:00:00", 7, "google")],
          pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("url", pa.int64()),
                     ("referrer", pa.string())]))
    options = IngestOptions(strict_schema=True, min_timestamp=datetime(2024, 1, 1), max_quarantine_share=1.0,
                            max_text_chars=100, max_query_chars=120)
    settings = Settings(lakehouse=tmp_path / "lakehouse")
    res = ingest(settings, raw, now=now, options=options)
    reasons = {f["stem"]: f["reasons"] for f in res["files"]}
    assert reasons == {
        "add_to_cart": {"out_of_range": 3, "future_timestamp": 1},
        "search_query": {"text_too_long": 1},
        "product_properties": {"text_too_long": 1},
        "product_text": {"text_too_long": 1},
        "page_visit": {"unknown_columns": 1},  # strict: refused, not ignored
    }
    assert {f["stem"]: f["accepted"] for f in res["files"]} == {
        "add_to_cart": 1, "search_query": 1, "product_properties": 1, "product_text": 1, "page_visit": 0}
    q = {r["reason"]: json.loads(r["raw"]) for r in spark.read.format("delta")
         .load(str(settings.table_path("quarantine"))).where(F.col("reason").startswith("text_too_long")).collect()}
    assert set(q) == {"text_too_long: query", "text_too_long: name", "text_too_long: text"}
    # the stored raw row is cut to the cap (and says so), its position in the file is kept
    assert q["text_too_long: query"]["query"] == huge_query[:120] + TRUNCATED
    assert q["text_too_long: text"]["text"] == "x" * 100 + TRUNCATED
    assert q["text_too_long: text"]["_row"] == 1
    assert len(q["text_too_long: name"]["name"]) == 120 + len(TRUNCATED)


def test_failure_threshold_stops_the_run_before_writing(spark, tmp_path: Path, monkeypatch, capsys):
    from ubp.tables import INGEST_RUNS

    raw = tmp_path / "raw"
    schema = pa.schema([("client_id", pa.int64()), ("timestamp", pa.string()), ("sku", pa.int64())])
    write(raw / "product_buy.parquet", [(1, "2024-03-01 10:00:00", 1), (2, "2024-03-01 10:00:00", 1)], schema)
    write(raw / "add_to_cart.parquet", [(1, "2024-03-01 10:00:00", 1), (2, "garbage", 1), (-3, "2024-03-01", 1)],
          schema)
    lakehouse = tmp_path / "lh"
    # an ingest_runs table written before the new columns existed: it must stay readable and appendable
    old_cols = [c for c in INGEST_RUNS.spark_schema().fields if c.name not in ("ignored_columns", "unknown_skus")]
    from pyspark.sql import types as T

    old_runs = Settings(lakehouse=lakehouse).table_path("ingest_runs")
    spark.createDataFrame([("old", "f", "events", 1, 1, 0, 0, datetime(2024, 1, 1), datetime(2024, 1, 1))],
                          T.StructType(old_cols)).write.format("delta").save(str(old_runs))

    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "ingest", "--raw", str(raw))
    assert_one_line_error(code, err, "add_to_cart.parquet: 2 of 3 rows (67%) fail validation",
                          "over the limit of 50%", "nothing was written")
    bronze = lakehouse / "bronze"
    assert not bronze.exists() or not any(bronze.iterdir())  # not even the valid product_buy rows

    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "ingest", "--raw", str(raw),
                           "--max-quarantine-share", "0.7")
    assert code == 0, err
    runs = spark.read.format("delta").load(str(old_runs)).collect()
    old = [r for r in runs if r["run_id"] == "old"]
    assert len(old) == 1 and old[0]["ignored_columns"] is None and old[0]["unknown_skus"] is None
    new = [r for r in runs if r["run_id"] != "old"]
    assert sorted((r["source_file"].rsplit("/", 1)[-1], r["accepted"], r["quarantined"]) for r in new) == [
        ("add_to_cart.parquet", 1, 2), ("product_buy.parquet", 2, 0)]

    with pytest.raises(ValueError, match="max_quarantine_share must be in 0..1"):
        IngestOptions(max_quarantine_share=1.5)
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "ingest", "--raw", str(raw),
                           "--max-quarantine-share", "1.5")
    assert_one_line_error(code, err, "max_quarantine_share must be in 0..1")
    code, _, err = run_cli(monkeypatch, capsys, "--lakehouse", str(lakehouse), "ingest", "--raw", str(raw),
                           "--min-timestamp", "yesterday")
    assert_one_line_error(code, err, "--min-timestamp expects YYYY-MM-DD")
