"""Silver `item_content` + a saved item model -> gold `item_vectors` for EVERY catalog item.

vector = transform(raw content) + offset, where transform is the model's warm-fitted StandardScaler -> PCA -> L2
and offset is the item's trained delta (0 for cold items and for items added to the catalog after training).
So a new item gets a vector from its content alone, without retraining: `ubp item-content` then `ubp item-vectors`.
The transform runs in the executors (`mapInPandas`); the table is overwritten in one commit, and the same model and
content give the same rows (created_at is the model's creation time), so re-runs are idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from ubp.models.content_prep import ContentTransform
from ubp.spark_jobs.layout import in_feast_key_order

from ubp.tables import ITEM_VECTORS


def item_vectors_df(
    content: DataFrame, offsets: DataFrame, transform: ContentTransform, model_version: str,
    as_of: datetime, created_at: datetime, space_id: str = "", rotation: np.ndarray | None = None,
) -> DataFrame:
    """(sku, encoder, embedding) x (sku, offset) -> rows in the ITEM_VECTORS contract (one per content row).
    `rotation` [dim, dim] (orthogonal) aligns the vectors to an earlier model's space (`ubp/spaces.py`)."""
    mean, scale, pca_mean, comps = transform.mean, transform.scale, transform.pca_mean, transform.components
    dim = transform.dim

    def apply(batches: Iterator):
        import pandas as pd

        for pdf in batches:
            if pdf.empty:
                continue
            raw = np.stack(pdf["embedding"].to_numpy()).astype(np.float32)  # (n, D)
            z = ((raw - mean) / scale - pca_mean) @ comps.T  # (n, dim)
            z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            cold = pdf["offset"].isna().to_numpy()
            if (~cold).any():
                z[~cold] += np.stack(pdf["offset"][~cold].to_numpy()).astype(np.float32).reshape(-1, dim)
            if rotation is not None:
                z = z @ rotation
            yield pd.DataFrame({
                "sku": pdf["sku"].to_numpy(), "vector": list(z.astype(np.float32)), "is_cold": cold,
                "model_version": model_version, "space_id": space_id, "encoder": pdf["encoder"].to_numpy(),
                "as_of": pd.Timestamp(as_of), "created_at": pd.Timestamp(created_at),
            })

    joined = content.select("sku", "encoder", "embedding").join(offsets.select("sku", "offset"), "sku", "left")
    return joined.mapInPandas(apply, ITEM_VECTORS.spark_schema()).select(*ITEM_VECTORS.column_names)


def offsets_frame(spark: SparkSession, skus: np.ndarray, offset: np.ndarray) -> DataFrame:
    """The warm items' offsets as a small DataFrame (sku, offset array<float>), via Arrow."""
    import pyarrow as pa

    table = pa.table({
        "sku": pa.array(skus.astype(np.int64)),
        "offset": pa.FixedSizeListArray.from_arrays(pa.array(offset.reshape(-1).astype(np.float32)),
                                                    offset.shape[1]).cast(pa.list_(pa.float32())),
    })
    return spark.createDataFrame(table.to_pandas(), "sku bigint, offset array<float>")


def write_item_vectors(df: DataFrame, path: str, space_id: str = "") -> None:
    """Replace one vector space's rows of gold `item_vectors` (the other spaces stay served), rows in Feast's key
    order (the publish streams contiguous key ranges). A table from before `space_id` existed is overwritten."""
    from pathlib import Path

    from deltalake import DeltaTable

    writer = in_feast_key_order(df, "sku").write.format("delta").mode("overwrite")
    has_space = (Path(path) / "_delta_log").is_dir() and "space_id" in {
        f.name for f in DeltaTable(path).schema().fields}
    if space_id and has_space:
        writer = writer.option("replaceWhere", f"space_id = '{space_id}'")
    else:
        writer = writer.option("overwriteSchema", "true")
    writer.save(path)


def count_by_coldness(spark: SparkSession, path: str, space_id: str | None = None) -> dict[str, int]:
    df = spark.read.format("delta").load(path)
    if space_id:
        df = df.filter(F.col("space_id") == space_id)
    rows = df.groupBy("is_cold").agg(F.count("*").alias("n")).collect()
    return {("cold" if r["is_cold"] else "warm"): int(r["n"]) for r in rows}
