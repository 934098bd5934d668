"""What the item-content job encodes (`spark_jobs/item_content.py`), without running an encoder: one input per
catalog sku (the latest non-blank text, else the latest name codes), the cache key that changes with the input or
the encoder, the to-do list left after the cache, and the driver-side batching."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ubp.spark_jobs.item_content import _chunks, encoder_inputs, pending

from ubp.tables import ITEM_CONTENT, PRODUCT_TEXT, PRODUCTS

T1, T2 = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC)


def _products(spark, rows):
    return spark.createDataFrame([(s, 1, 1, name, "p.parquet", t) for s, name, t in rows], PRODUCTS.spark_schema())


def _texts(spark, rows):
    return spark.createDataFrame([(s, text, "t.parquet", t) for s, text, t in rows], PRODUCT_TEXT.spark_schema())


@pytest.fixture(scope="module")
def inputs(spark):
    products = _products(spark, [(1, [1] * 16, T1), (1, [2] * 16, T2), (2, [3] * 16, T1), (3, None, T1)])
    texts = _texts(spark, [(1, "Old text", T1), (1, "New text", T2), (2, "   ", T2), (4, "Catalog only", T1)])
    return {r["sku"]: r.asDict() for r in encoder_inputs(products, texts, "minilm", "codes").collect()}


def test_one_input_per_catalog_sku(inputs):
    assert sorted(inputs) == [1, 2, 3, 4]  # products and product_text, either side
    assert (inputs[1]["source"], inputs[1]["text"], inputs[1]["encoder"]) == ("text", "New text", "minilm")
    assert (inputs[2]["source"], inputs[2]["text"], inputs[2]["encoder"]) == ("name_codes", None, "codes")  # blank
    assert inputs[2]["name"] == [3] * 16
    assert inputs[3]["source"] == "name_codes" and inputs[3]["name"] is None  # nothing at all: still an input
    assert inputs[4]["source"] == "text" and inputs[4]["name"] is None
    assert all(len(r["text_hash"]) == 32 for r in inputs.values())
    assert len({r["text_hash"] for r in inputs.values()}) == 4


def test_cache_key_follows_the_input(spark, inputs):
    products = _products(spark, [(1, [9] * 16, T2), (2, [3] * 16, T1)])
    texts = _texts(spark, [(1, "New text", T1)])
    again = {r["sku"]: r["text_hash"] for r in encoder_inputs(products, texts, "other", "codes").collect()}
    assert again[1] == inputs[1]["text_hash"]  # same text: same key (name codes and encoder name aside)
    assert again[2] == inputs[2]["text_hash"]  # same name codes: same key
    changed = encoder_inputs(products, _texts(spark, [(1, "Newer text", T1)]), "minilm", "codes")
    assert {r["sku"]: r["text_hash"] for r in changed.collect()}[1] != inputs[1]["text_hash"]


def test_pending_leaves_out_what_is_cached(spark, inputs):
    frame = spark.createDataFrame(list(inputs.values()))
    assert [r["is_new"] for r in pending(frame, None).collect()] == [True] * 4
    cached = [(1, inputs[1]["text_hash"], "minilm", "text", [0.0], T2),  # same key: cached
              (2, inputs[2]["text_hash"], "older-codes", "name_codes", [0.0], T2),  # another encoder: redo
              (3, "0" * 32, "codes", "name_codes", [0.0], T2)]  # another input: redo
    existing = spark.createDataFrame(cached, ITEM_CONTENT.spark_schema())
    todo = {r["sku"]: r["is_new"] for r in pending(frame, existing).collect()}
    assert todo == {2: False, 3: False, 4: True}  # 2 and 3 are in the table (MERGE), 4 is not (append)


def test_codes_only_ignores_the_text(spark):
    """`ubp item-content --source codes`: every item from its name codes, text present or not."""
    products = _products(spark, [(1, [1] * 16, T1), (2, [3] * 16, T1)])
    texts = _texts(spark, [(1, "A text", T1), (4, "Catalog only", T1)])
    rows = {r["sku"]: r for r in encoder_inputs(products, texts, "minilm", "codes", use_text=False).collect()}
    assert sorted(rows) == [1, 2] and {r["source"] for r in rows.values()} == {"name_codes"}
    assert rows[1]["encoder"] == "codes" and rows[1]["text"] is None


def test_chunks():
    assert list(_chunks(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(_chunks(iter(range(6)), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(_chunks(iter([]), 3)) == []
