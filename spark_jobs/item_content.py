"""Bronze `products` + `product_text` -> silver `item_content`: one raw content embedding per catalog item.

Cached by (sku, text hash, encoder): a re-run encodes only items that are new or whose text / name codes (or the
encoder) changed. The encoder runs in the driver, in batches streamed from Spark (`toLocalIterator`), and each
batch is MERGEd into the table, so memory is bounded by the batch, not the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ubp.config import Settings
from ubp.log import get_logger
from ubp.tables import ITEM_CONTENT, PRODUCT_TEXT

log = get_logger(__name__)


def _latest(df: DataFrame, key: str = "sku", order: str = "ingested_at") -> DataFrame:
    w = Window.partitionBy(key).orderBy(F.col(order).desc())
    return df.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")


def encoder_inputs(products: DataFrame, product_text: DataFrame, text_encoder: str, codes_encoder: str) -> DataFrame:
    """One row per catalog sku (products or product_text): what to encode and its cache key.

    -> (sku, source, encoder, text_hash, text, name). The text is the latest non-blank description; without one
    the product's 16 name codes are the input (`source = name_codes`).
    """
    text = _latest(product_text.where(F.length(F.trim("text")) > 0)).select("sku", "text")
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
    """Inputs whose (sku, text_hash, encoder) is not cached yet."""
    if existing is None:
        return inputs
    return inputs.join(existing.select("sku", "text_hash", "encoder"), ["sku", "text_hash", "encoder"], "left_anti")


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


def build_item_content(spark: SparkSession, settings: Settings, batch_rows: int = 4096,
                       device: str | None = None, show_progress: bool = True) -> dict:
    """Encode new/changed catalog items and MERGE them into `item_content`; returns counts."""
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
    inputs = encoder_inputs(products, texts, encoder.name, NAME_CODES_ENCODER)
    path = str(settings.table_path("item_content"))
    existing = _read_delta(spark, path)
    if existing is None:
        DeltaTable.createIfNotExists(spark).location(path).addColumns(ITEM_CONTENT.spark_schema()).execute()
    # materialise the to-do list: the table is MERGEd into while we stream it
    todo = pending(inputs, existing).localCheckpoint(eager=True)
    n_inputs, n_todo = inputs.count(), todo.count()
    target = DeltaTable.forPath(spark, path)
    counts = {"text": 0, "name_codes": 0}
    t0 = time.perf_counter()
    bar = progress(total=n_todo, desc="encoding items", disable=not show_progress)
    for chunk in _chunks(todo.toLocalIterator(), batch_rows):
        text_rows = [r for r in chunk if r["source"] == "text"]
        code_rows = [r for r in chunk if r["source"] != "text"]
        now = datetime.now(UTC)
        out = []
        if text_rows:
            vecs = encoder.encode([r["text"] for r in text_rows])
            out += [(r["sku"], r["text_hash"], r["encoder"], "text", v.tolist(), now) for r, v in zip(text_rows, vecs, strict=True)]
        if code_rows:
            vecs = encode_name_codes([r["name"] for r in code_rows])
            out += [(r["sku"], r["text_hash"], r["encoder"], "name_codes", v.tolist(), now)
                    for r, v in zip(code_rows, vecs, strict=True)]
        counts["text"] += len(text_rows)
        counts["name_codes"] += len(code_rows)
        batch = spark.createDataFrame(out, ITEM_CONTENT.spark_schema())
        (
            target.alias("t").merge(batch.alias("s"), "t.sku = s.sku")
            .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
        )
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - t0
    total = spark.read.format("delta").load(path).count()
    log.info("item_content: %d catalog items, %d encoded (%d text, %d name codes), %d cached",
             n_inputs, n_todo, counts["text"], counts["name_codes"], n_inputs - n_todo)
    return {
        "rows": {"item_content": total}, "catalog_items": n_inputs, "encoded": n_todo,
        "encoded_text": counts["text"], "encoded_name_codes": counts["name_codes"], "cached": n_inputs - n_todo,
        "encode_seconds": round(seconds, 3),
        "items_per_s": round(n_todo / seconds, 1) if n_todo and seconds > 0 else None,
        "encoder": encoder.name,
    }
