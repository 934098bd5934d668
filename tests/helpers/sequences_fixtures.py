"""Tiny hand-made bronze tables in the contract schemas for the sequences/aggregates tests."""

from __future__ import annotations

from datetime import UTC, datetime

from ubp.tables import EVENTS, PRODUCTS

INGESTED = datetime(2024, 2, 1, tzinfo=UTC)


def ts(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def event(event_type: str, client_id: int, when: str, sku=None, url=None, query=None, ingested_at=INGESTED):
    t = ts(when)
    eid = abs(hash((event_type, client_id, when, sku, url, tuple(query or ())))) % (2**62)
    return (eid, event_type, client_id, t, sku, url, query, f"{event_type}.parquet", ingested_at, t.date())


def write_bronze(spark, settings, events: list[tuple], products: list[tuple], mode: str = "overwrite") -> None:
    """events: rows made with `event(...)`; products: (sku, category, price) tuples, or (sku, category, price, name)
    (16 codes or None; default 16 x code 1)."""
    ev = spark.createDataFrame(events, EVENTS.spark_schema())
    (ev.write.format("delta").mode(mode).partitionBy("event_date").option("partitionOverwriteMode", "static")
     .save(str(settings.table_path("events"))))
    if products is not None:
        prows = [(s, c, p, *(rest or [[1] * 16]), "product_properties.parquet", INGESTED)
                 for s, c, p, *rest in products]
        (spark.createDataFrame(prows, PRODUCTS.spark_schema()).write.format("delta").mode("overwrite")
         .save(str(settings.table_path("products"))))


def read_table(spark, settings, name: str) -> dict[int, dict]:
    rows = spark.read.format("delta").load(str(settings.table_path(name))).collect()
    return {r["client_id"]: r.asDict() for r in rows}
