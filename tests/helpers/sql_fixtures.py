"""A tiny lakehouse for the SQL console and the tables reference: events with two Delta versions (2 rows, then 3),
products with one."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from ubp.config import Settings
from ubp.tables import EVENTS, PRODUCTS


def _event(i: int, day: int) -> dict:
    ts = datetime(2024, 3, day, 10, i, tzinfo=UTC)
    return {"event_id": i, "event_type": "search_query", "client_id": i, "timestamp": ts, "sku": None, "url": None,
            "query": list(range(16)), "source_file": "raw/search_query.parquet", "ingested_at": ts,
            "event_date": date(2024, 3, day)}


def write_sql_lakehouse(spark, root: Path) -> Path:
    """A tiny lakehouse at `root`: events with two versions (2 rows, then 3), products with one."""
    settings = Settings(lakehouse=root)
    events = str(settings.table_path("events"))
    spark.createDataFrame([_event(1, 1), _event(2, 1)], EVENTS.spark_schema()).write.format("delta") \
        .partitionBy("event_date").save(events)
    spark.createDataFrame([_event(3, 2)], EVENTS.spark_schema()).write.format("delta").mode("append").save(events)
    spark.createDataFrame(
        [{"sku": 7, "category": 3, "price": 9, "name": None, "source_file": "p", "ingested_at": datetime.now(UTC)}],
        PRODUCTS.spark_schema(),
    ).write.format("delta").save(str(settings.table_path("products")))
    return root
