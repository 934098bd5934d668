"""Bronze `products` + `product_text` -> silver `item_content`: one raw content embedding per catalog item.

Cached by (sku, text hash, encoder): a re-run encodes only items that are new or whose text / name codes (or the
encoder) changed. The encoder runs in the driver, in batches streamed from Spark (`toLocalIterator`); encoded rows
are written every `write_rows` items through Arrow: items the table lacks are appended, changed ones MERGEd, so
memory is bounded by the batch, not the catalog, and a first build of a 1.26M-item catalog is ~20 appends, not a
MERGE per batch over a growing table. `use_text=False` encodes every item from its name codes (the challenge's data
has no text; MiniLM on two CPU cores manages ~150-300 items/s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ubp.config import Settings
from ubp.log import get_logger
from ubp.tables import ITEM_CONTENT, PRODUCT_TEXT

log = get_logger(__name__)


def _latest(df: DataFrame, key: str = "sku", order: str = "ingested_at") -> DataFrame:
    w = Window.partitionBy(key).orderBy(F.col(order).desc())
    return df.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")


def encoder_inputs(products: DataFrame, product_text: DataFrame, text_encoder: str, codes_encoder: str,
                   use_text: bool = True) -> DataFrame:
    """One row per catalog sku (products or product_text): what to encode and its cache key.

    -> (sku, source, encoder, text_hash, text, name). The text is the latest non-blank description; without one
    (or with `use_text=False`) the product's 16 name codes are the input (`source = name_codes`).
    """
    text = _latest(product_text.where(F.length(F.trim("text")) > 0)).select("sku", "text")
    if not use_text:
        text = text.where(F.lit(False))
    names = _latest(products).select("sku", "name")
    df = names.join(text, "sku", "full_outer")
    source = F.when(F.col("text").isNotNull(), F.lit("text")).otherwise(F.lit("name_codes"))
    payload = F.when(F.col("text").isNotNull(), F.col("text")).otherwise(F.coalesce(F.to_json("name"), F.lit("")))
    return (
        df.withColumn("source", source)
        .withColumn("encoder", F.when(source == "text", F.lit(text_encoder)).otherwise(F.lit(codes_encoder)))
        .withColumn("text_hash", F.substring(F.sha2(F.concat_ws("\u0000", F.col("source"), payload), 256), 1, 32))
        .select("sku", "source", "encoder", "text_hash", "text", "name")
    )


def pending(inputs: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Inputs whose (sku, text_hash, encoder) is not cached yet, with `is_new` (the table has no row for the sku)."""
    if existing is None:
        return inputs.withColumn("is_new", F.lit(True))
    todo = inputs.join(existing.select("sku", "text_hash", "encoder"), ["sku", "text_hash", "encoder"], "left_anti")
    known = existing.select("sku", F.lit(False).alias("is_new")).distinct()
    return todo.join(known, "sku", "left").withColumn("is_new", F.coalesce("is_new", F.lit(True)))


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_delta(spark: SparkSession, path) -> DataFrame | None:
    from delta.tables import DeltaTable

    return spark.read.format("delta").load(str(path)) if DeltaTable.isDeltaTable(spark, str(path)) else None


def _content_frame(spark: SparkSession, rows: list, vecs: np.ndarray, source: str, now: datetime) -> DataFrame:
    """Encoded rows as an ITEM_CONTENT DataFrame, through Arrow (no Python float per value)."""
    import pyarrow as pa
    from ubp.spark_jobs.vectors import float_lists

    n = len(vecs)
    table = pa.table({"sku": pa.array([r["sku"] for r in rows], pa.int64()),
                      "text_hash": pa.array([r["text_hash"] for r in rows], pa.string()),
                      "encoder": pa.array([r["encoder"] for r in rows], pa.string()),
                      "source": pa.array([source] * n, pa.string()), "embedding": float_lists(vecs),
                      "computed_at": pa.array([now.replace(tzinfo=None)] * n, pa.timestamp("us"))})
    return spark.createDataFrame(table.select(ITEM_CONTENT.column_names).to_pandas(), ITEM_CONTENT.spark_schema())


def build_item_content(spark: SparkSession, settings: Settings, batch_rows: int = 4096,
                       device: str | None = None, show_progress: bool = True, use_text: bool = True,
                       write_rows: int = 65_536) -> dict:
    """Encode new/changed catalog items and write them into `item_content`; returns counts."""
    from delta.tables import DeltaTable
    from ubp.models.common import progress
    from ubp.models.content_encoder import NAME_CODES_ENCODER, TextEncoder, encode_name_codes

    from ubp.errors import UbpError

    products = _read_delta(spark, settings.table_path("products"))
    if products is None:
        raise UbpError(f"no products table at {settings.table_path('products')}: run `ubp ingest` first")
    texts = _read_delta(spark, settings.table_path("product_text"))
    if texts is None:
        texts = spark.createDataFrame([], PRODUCT_TEXT.spark_schema())
    encoder = TextEncoder(device=device)
    inputs = encoder_inputs(products, texts, encoder.name, NAME_CODES_ENCODER, use_text=use_text)
    path = str(settings.table_path("item_content"))
    existing = _read_delta(spark, path)
    if existing is None:
        DeltaTable.createIfNotExists(spark).location(path).addColumns(ITEM_CONTENT.spark_schema()).execute()
    # materialise the to-do list: the table is written into while we stream it
    todo = pending(inputs, existing).localCheckpoint(eager=True)
    n_inputs, n_todo = inputs.count(), todo.count()
    target = DeltaTable.forPath(spark, path)
    counts = {"text": 0, "name_codes": 0, "appended": 0, "merged": 0}
    t0 = time.perf_counter()
    bar = progress(total=n_todo, desc="encoding items", disable=not show_progress)
    buffered: list[tuple[bool, DataFrame]] = []
    n_buffered = {True: 0, False: 0}

    def flush() -> None:
        for new in (True, False):
            parts = [df for is_new, df in buffered if is_new == new]
            if not parts:
                continue
            batch = parts[0]
            for df in parts[1:]:
                batch = batch.unionByName(df)
            if new:
                batch.write.format("delta").mode("append").save(path)
            else:
                (target.alias("t").merge(batch.alias("s"), "t.sku = s.sku")
                 .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
            counts["appended" if new else "merged"] += n_buffered[new]
            n_buffered[new] = 0
        buffered.clear()

    for chunk in _chunks(todo.toLocalIterator(), batch_rows):
        now = datetime.now(UTC)
        for new in (True, False):
            text_rows = [r for r in chunk if r["source"] == "text" and r["is_new"] == new]
            code_rows = [r for r in chunk if r["source"] != "text" and r["is_new"] == new]
            if text_rows:
                vecs = encoder.encode([r["text"] for r in text_rows])
                buffered.append((new, _content_frame(spark, text_rows, vecs, "text", now)))
            if code_rows:
                vecs = encode_name_codes([r["name"] for r in code_rows])
                buffered.append((new, _content_frame(spark, code_rows, vecs, "name_codes", now)))
            counts["text"] += len(text_rows)
            counts["name_codes"] += len(code_rows)
            n_buffered[new] += len(text_rows) + len(code_rows)
        if sum(n_buffered.values()) >= write_rows:
            flush()
        bar.update(len(chunk))
    flush()
    bar.close()
    seconds = time.perf_counter() - t0
    total = spark.read.format("delta").load(path).count()
    log.info("item_content: %d catalog items, %d encoded (%d text, %d name codes; %d appended, %d merged), %d cached",
             n_inputs, n_todo, counts["text"], counts["name_codes"], counts["appended"], counts["merged"],
             n_inputs - n_todo)
    return {
        "rows": {"item_content": total}, "catalog_items": n_inputs, "encoded": n_todo,
        "encoded_text": counts["text"], "encoded_name_codes": counts["name_codes"], "cached": n_inputs - n_todo,
        "appended": counts["appended"], "merged": counts["merged"],
        "encode_seconds": round(seconds, 3),
        "items_per_s": round(n_todo / seconds, 1) if n_todo and seconds > 0 else None,
        "encoder": encoder.name,
    }
