"""Tiny hand-made Delta tables (contract schemas) for the item stages: a catalog of 3 departments (cold items
included, some without text), bronze products / product_text, and user_sequences in which users shop in one
department and end on one of its cold items."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from ubp.tables import PRODUCT_TEXT, PRODUCTS, USER_SEQUENCES

INGESTED = datetime(2024, 3, 1, tzinfo=UTC)
DEPARTMENTS = {
    "shoes": ["trail running shoes", "leather boots", "hiking sandals", "road running sneakers"],
    "kitchen": ["chef knife", "cast iron pan", "espresso cups", "bread baking tin"],
    "garden": ["garden hose", "pruning shears", "flower seeds", "wooden planter"],
}
COLOURS = ["red", "blue", "green"]


def catalog() -> list[dict]:
    """3 departments x 12 items (the last 2 of each are cold) + 2 catalog-only items; 3 items have no text."""
    items = []
    for d, (dept, kinds) in enumerate(DEPARTMENTS.items()):
        for j in range(12):
            sku = 100 * (d + 1) + j
            text = f"{kinds[j % 4].capitalize()}, {COLOURS[j % 3]}, {dept} department"
            items.append({"sku": sku, "dept": d, "cold": j >= 10, "text": None if j == 3 else text,
                          "name": [(d * 80 + j * 3 + k) % 256 for k in range(16)]})
    items.append({"sku": 901, "dept": 0, "cold": True, "text": "Trail running shoes, blue, shoes", "name": None})
    items.append({"sku": 902, "dept": 1, "cold": True, "text": "Chef knife, green, kitchen", "name": [5] * 16})
    return items


def write_bronze(spark, settings, items: list[dict], ingested=INGESTED, mode="overwrite") -> None:
    prows = [(it["sku"], 10 + it["dept"], 50, it["name"], "product_properties.parquet", ingested) for it in items]
    trows = [(it["sku"], it["text"], "product_text.parquet", ingested) for it in items if it["text"]]
    (spark.createDataFrame(prows, PRODUCTS.spark_schema()).write.format("delta").mode(mode)
     .save(str(settings.table_path("products"))))
    (spark.createDataFrame(trows, PRODUCT_TEXT.spark_schema()).write.format("delta").mode(mode)
     .save(str(settings.table_path("product_text"))))


def write_sequences(spark, settings, items: list[dict], users: int = 72, seed: int = 0) -> None:
    """Each user shops in one department (warm items early), then one last event: a cold item of that department
    for even users (the latest events of all, so after the 0.9 time quantile), an unseen warm item otherwise."""
    rng = np.random.default_rng(seed)
    as_of = datetime(2024, 3, 1, tzinfo=UTC)
    rows = []
    for u in range(users):
        d = u % 3
        warm = [it["sku"] for it in items if it["dept"] == d and not it["cold"] and it["sku"] < 900]
        cold = [it["sku"] for it in items if it["dept"] == d and it["cold"] and it["sku"] < 900]
        hist = list(rng.choice(warm, 6, replace=False))
        last = int(rng.choice(cold)) if u % 2 == 0 else int(rng.choice(sorted(set(warm) - set(hist))))
        skus = [int(s) for s in hist] + [-1, last]  # -1: a page visit between
        ts = sorted(int(t) for t in rng.integers(1_700_000_000, 1_700_500_000, 7))
        ts += [1_700_900_000 + u * 10] if u % 2 == 0 else [1_700_600_000 + u * 10]
        n = len(skus)
        pad = [0] * n
        rows.append((u + 1, as_of, "v1", n, datetime.fromtimestamp(ts[0], UTC), datetime.fromtimestamp(ts[-1], UTC),
                     n, [4] * n, pad, pad, pad, pad, [0] * (16 * n), pad, pad, skus, ts, None))  # no name codes
    (spark.createDataFrame(rows, USER_SEQUENCES.spark_schema()).write.format("delta").mode("overwrite")
     .save(str(settings.table_path("user_sequences"))))


def read_vectors(spark, settings) -> dict[int, dict]:
    rows = spark.read.format("delta").load(str(settings.table_path("item_vectors"))).collect()
    return {r["sku"]: r.asDict() for r in rows}


def write_item_lake(spark, settings) -> tuple:
    """The catalog's bronze tables and user_sequences in `settings`' lakehouse; returns (settings, catalog)."""
    items = catalog()
    write_bronze(spark, settings, items)
    write_sequences(spark, settings, items)
    return settings, items
