"""Ingest on real Delta tables: validation reasons, reconciliation, idempotency, incremental loads, timestamp forms.

One module fixture runs three ingests into one lakehouse (day 1, day 1 again, day 2) and snapshots the tables after
each, so the expensive part runs once and every test asserts on what really landed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.ingest_fixtures import make_day1, make_day2
from ubp.config import IngestOptions, Settings
from ubp.tables import EVENTS, PRODUCT_TEXT, PRODUCTS, QUARANTINE

DATA_TABLES = (EVENTS.name, PRODUCTS.name, PRODUCT_TEXT.name, QUARANTINE.name)


def _snapshot(spark, settings: Settings) -> dict:
    snap = {}
    for name in DATA_TABLES:
        path = settings.table_path(name)
        df = spark.read.format("delta").load(str(path))
        snap[name] = {
            "version": max(int(p.stem) for p in (path / "_delta_log").glob("*.json")),
            "files": set(df.inputFiles()),
            "rows": sorted(tuple(str(v) for v in r) for r in df.collect()),  # tiny tables
        }
    return snap


pytestmark = pytest.mark.slow  # three real ingests into one lakehouse (a module fixture)


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    from ubp.stages.ingest import ingest

    root = tmp_path_factory.mktemp("ingest")
    # day 1 holds files that are mostly bad rows on purpose: the failure threshold is off here (tested elsewhere)
    settings = Settings(lakehouse=root / "lakehouse", ingest=IngestOptions(max_quarantine_share=1.0))
    expected1 = make_day1(root / "raw_day1")
    expected2 = make_day2(root / "raw_day2")
    out = {"settings": settings, "root": root, "expected1": expected1, "expected2": expected2}
    out["r1"] = ingest(settings, root / "raw_day1")
    out["s1"] = _snapshot(spark, settings)
    out["r2"] = ingest(settings, root / "raw_day1")
    out["s2"] = _snapshot(spark, settings)
    out["r3"] = ingest(settings, root / "raw_day2")
    out["s3"] = _snapshot(spark, settings)
    return out


def _by_stem(result: dict) -> dict[str, dict]:
    return {f["stem"]: f for f in result["files"]}


def _counts(entry: dict) -> dict[str, int]:
    return dict(read=entry["rows_read"], accepted=entry["accepted"], quarantined=entry["quarantined"],
                duplicates=entry["duplicates"])


def test_reconciliation_per_file_matches_what_landed(spark, runs):
    from pyspark.sql import functions as F

    r1, settings = runs["r1"], runs["settings"]
    files = _by_stem(r1)
    assert {stem: _counts(f) for stem, f in files.items()} == runs["expected1"]
    for f in files.values():
        assert f["rows_read"] == f["accepted"] + f["quarantined"] + f["duplicates"]
    # the stored summary equals the returned one
    stored = {
        r["source_file"]: r.asDict()
        for r in spark.read.format("delta").load(str(settings.table_path("ingest_runs")))
        .where(F.col("run_id") == r1["run_id"]).collect()
    }
    assert len(stored) == len(files)
    for f in files.values():
        s = stored[f["source_file"]]
        assert (s["rows_read"], s["accepted"], s["quarantined"], s["duplicates"]) == (
            f["rows_read"], f["accepted"], f["quarantined"], f["duplicates"])
    # accepted and quarantined counts agree with the tables' contents after run 1
    s1 = runs["s1"]
    assert len(s1["events"]["rows"]) == sum(f["accepted"] for f in files.values() if f["target_table"] == "events")
    assert len(s1["products"]["rows"]) == files["product_properties"]["accepted"]
    assert len(s1["product_text"]["rows"]) == files["product_text"]["accepted"]
    assert len(s1["quarantine"]["rows"]) == r1["totals"]["quarantined"]
    assert r1["rows"]["events"] == 5 and r1["missing"] == []
    # product texts of skus missing from `products` are accepted and counted (sku 999), stored and returned
    assert files["product_text"]["unknown_skus"] == 1
    assert stored[files["product_text"]["source_file"]]["unknown_skus"] == 1
    assert all(f["unknown_skus"] is None for f in files.values() if f["stem"] != "product_text")


def test_every_quarantine_reason_is_recorded(spark, runs):
    import json

    from pyspark.sql import functions as F

    q = spark.read.format("delta").load(str(runs["settings"].table_path("quarantine")))
    rows = q.select("source_file", "target_table", "raw", "reason").collect()
    by_reason: dict[str, list] = {}
    for r in rows:
        by_reason.setdefault(r["reason"], []).append(r)
    assert {k: len(v) for k, v in by_reason.items()} == {
        "negative_id: sku": 1,
        "null_id: client_id": 1,
        "bad_timestamp: timestamp": 2,
        "out_of_range: timestamp": 2,
        "negative_id: client_id": 1,
        "null_id: url": 1,
        "bad_codes: query": 3,
        "bad_category: category": 1,
        "bad_price: price": 1,
        "bad_codes: name": 1,
        "null_id: sku": 1,
        "null_text: text": 1,
    }  # day 2's page_visit has an extra column: ignored by default, no unknown_columns rows
    # the raw row is kept as JSON with its position in the part file
    neg = json.loads(by_reason["negative_id: sku"][0]["raw"])
    assert neg["sku"] == -5 and neg["client_id"] == 3 and neg["_part"] == "part-1.parquet" and neg["_row"] == 0
    bad_ts = sorted(json.loads(r["raw"])["timestamp"] or "" for r in by_reason["bad_timestamp: timestamp"])
    assert bad_ts == ["", "2024-13-45 99:00:00"]
    out_of_range = sorted(str(json.loads(r["raw"])["timestamp"])[:4] for r in by_reason["out_of_range: timestamp"])
    assert out_of_range == ["0001", "2099"]
    assert {r["target_table"] for r in by_reason["bad_price: price"]} == {"products"}
    assert q.where(F.col("source_file").endswith("product_buy")).count() == 3  # a part directory is one input


def test_timestamp_string_and_column_forms(spark, runs):
    from pyspark.sql import functions as F

    ev = spark.read.format("delta").load(str(runs["settings"].table_path("events")))
    got = {  # formatted by Spark in the session time zone (UTC), independent of this process's zone
        (r["event_type"], r["client_id"]): (r["ts"], r["event_date"].isoformat())
        for r in ev.select("event_type", "client_id", F.date_format("timestamp", "yyyy-MM-dd HH:mm:ss").alias("ts"),
                           "event_date").collect()
    }
    assert got[("product_buy", 2)] == ("2024-03-02 11:00:00", "2024-03-02")  # UTC timestamp column
    assert got[("add_to_cart", 1)] == ("2024-03-01 09:00:00", "2024-03-01")  # "YYYY-MM-DD HH:MM:SS" string
    assert got[("add_to_cart", 5)] == ("2024-03-03 08:00:00", "2024-03-03")  # naive timestamp column (day 2)
    # the same event given as a timestamp column (day 1) and as a string (day 2) has one event_id: stored once
    assert ev.where((F.col("event_type") == "product_buy") & (F.col("client_id") == 1)
                    & (F.col("timestamp") == F.lit(datetime(2024, 3, 1, 10, tzinfo=UTC)))).count() == 1
    search = ev.where(F.col("event_type") == "search_query").collect()
    assert [list(r["query"]) for r in search] == [list(range(1, 17))]
    assert ev.select("event_id").distinct().count() == ev.count()


def test_second_run_of_the_same_directory_changes_nothing(runs):
    r2, s1, s2 = runs["r2"], runs["s1"], runs["s2"]
    for stem, f in _by_stem(r2).items():
        exp = runs["expected1"][stem]
        assert f["accepted"] == 0, stem
        assert f["quarantined"] == exp["quarantined"], stem
        assert f["duplicates"] == exp["read"] - exp["quarantined"], stem
        assert f["rows_read"] == f["accepted"] + f["quarantined"] + f["duplicates"]
    for name in DATA_TABLES:  # no new commit, no new data file, same rows
        assert s2[name]["version"] == s1[name]["version"], name
        assert s2[name]["files"] == s1[name]["files"], name
        assert s2[name]["rows"] == s1[name]["rows"], name
    assert r2["rows"]["ingest_runs"] == 2 * len(r2["files"])  # only the audit log grows


def test_later_day_adds_only_new_data(spark, runs):
    from delta.tables import DeltaTable

    r3, s2, s3, settings = runs["r3"], runs["s2"], runs["s3"], runs["settings"]
    assert {stem: _counts(f) for stem, f in _by_stem(r3).items()} == runs["expected2"]
    assert set(r3["missing"]) == {"search_query", "product_text"}
    # old event files untouched, new files only in the new partition
    old, new = s2["events"]["files"], s3["events"]["files"]
    assert old <= new
    assert new - old and all("event_date=2024-03-03" in f for f in new - old)
    assert r3["rows"]["events"] == 5 + 4
    # the unknown column of day 2's page_visit is ignored (its rows land) and recorded in ingest_runs
    runs_r3 = {r["source_file"].rsplit("/", 1)[-1]: r["ignored_columns"] for r in spark.read.format("delta")
               .load(str(settings.table_path("ingest_runs"))).where(f"run_id = '{r3['run_id']}'").collect()}
    assert runs_r3["page_visit.parquet"] == "referrer"
    assert {k: v for k, v in runs_r3.items() if k != "page_visit.parquet"} == {
        "product_buy.parquet": None, "add_to_cart.parquet": None, "remove_from_cart.parquet": None,
        "product_properties.parquet": None}
    visits = spark.read.format("delta").load(str(settings.table_path("events"))).where(
        "event_type = 'page_visit' AND event_date = DATE'2024-03-03'")
    assert sorted((r["client_id"], r["url"]) for r in visits.collect()) == [(1, 7), (2, 8)]
    history = DeltaTable.forPath(spark, str(settings.table_path("events"))).history().collect()
    assert {h["operation"] for h in history} <= {"CREATE TABLE", "MERGE"}  # never an overwrite
    # products: latest properties win, unchanged rows keep their first ingestion time
    prods = {r["sku"]: r for r in spark.read.format("delta").load(str(settings.table_path("products"))).collect()}
    assert sorted(prods) == [100, 101, 105]
    assert prods[100]["price"] == 11 and prods[101]["price"] == 25 and prods[105]["category"] == 8
    assert prods[101]["ingested_at"] > prods[100]["ingested_at"]
    assert list(prods[100]["name"]) == list(range(1, 17)) and prods[101]["name"] is None


def test_run_summary_is_printed_as_a_table(runs):
    from rich.console import Console

    from ubp.commands.ingest import print_summary

    console = Console(width=200, record=True)
    with console.capture() as cap:
        print_summary(runs["r1"], console=console)
    out = cap.get()
    assert "product_properties.parquet" in out and "quarantined" in out
    assert "bad_codes 3" in out  # search_query's reasons


def test_missing_directory_and_empty_inputs(tmp_path: Path):
    from ubp.spark_jobs.ingest import discover

    from ubp.errors import UbpError

    with pytest.raises(UbpError, match="raw directory not found"):
        discover(tmp_path / "nope")
    (tmp_path / "raw").mkdir()
    with pytest.raises(UbpError, match="no raw files"):
        discover(tmp_path / "raw")
    (tmp_path / "raw" / "page_visit").mkdir()
    (tmp_path / "raw" / "page_visit" / "_SUCCESS").write_text("")
    (tmp_path / "raw" / "product_buy.parquet").write_bytes(b"")
    found = {s.stem: s for s in discover(tmp_path / "raw")}
    assert set(found) == {"page_visit", "product_buy"} and all(not s.files for s in found.values())
