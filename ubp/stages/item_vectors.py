"""Stage `item_vectors`: `item_content` + the serving item model -> gold `item_vectors` for every catalog item,
cold and new ones included (their delta is 0)."""

from __future__ import annotations

import time
from datetime import datetime

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.reader import require_table

log = get_logger(__name__)


def item_vectors(settings: Settings, model_version: str | None = None) -> dict:
    """Gold `item_vectors` for every item in `item_content` from model `model_version` (None = CURRENT)."""
    from ubp import registry
    from ubp.models.train_item import load_item_model
    from ubp.spark_jobs.item_vectors import (
        count_by_coldness,
        item_vectors_df,
        offsets_frame,
        write_item_vectors,
    )
    from ubp.spark_jobs.session import get_spark

    t0 = time.perf_counter()
    version = model_version or registry.require_current(settings, registry.ITEM_KIND)
    model_dir = registry.version_dir(settings, registry.ITEM_KIND, version)
    saved = load_item_model(model_dir)
    if saved["transform"] is None:
        raise UbpError(f"item model {version} ({saved['info'].get('variant')}) has no content transform: "
                       "item vectors need a content-based variant (delta, frozen, content_finetune, history_avg)")
    content_path = settings.table_path("item_content")
    require_table(content_path, "item_content", "item-content")
    spark = get_spark(settings)
    content = spark.read.format("delta").load(str(content_path))
    offsets = offsets_frame(spark, saved["skus"], saved["offset"])
    info = saved["info"]
    created_at = datetime.fromisoformat(info["created_at"])
    as_of = datetime.fromisoformat(info["as_of"]) if info.get("as_of") else created_at
    df = item_vectors_df(content, offsets, saved["transform"], version, as_of, created_at)
    path = str(settings.table_path("item_vectors"))
    rotation, space = _align(settings, df, version, saved["transform"].dim, path)
    df = item_vectors_df(content, offsets, saved["transform"], version, as_of, created_at,
                         space_id=space["space_id"], rotation=rotation)
    write_item_vectors(df, path, space["space_id"])
    counts = count_by_coldness(spark, path, space["space_id"])
    total = sum(counts.values())
    log.info("item_vectors: %d items (%d cold) from model %s", total, counts.get("cold", 0), version)
    return {
        "stage": "item_vectors", "rows": {"item_vectors": total}, "cold": counts.get("cold", 0),
        "warm": counts.get("warm", 0), "model_version": version, "dim": saved["transform"].dim, "space": space,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _align(settings: Settings, df, version: str, dim: int, path: str, max_items: int = 20_000):
    """(rotation or None, space): align a new item model's vectors to the last assigned version's rows in
    `item_vectors` on shared items (orthogonal Procrustes; a hashed quarter of them measures the error)."""
    import numpy as np

    from ubp import reader, spaces
    from ubp.models.latent import align

    family = spaces.ITEM_FAMILY
    prev = spaces.last_version(settings, family)
    if prev is None or prev == version or spaces.space_of(settings, family, version):
        return None, spaces.assign(settings, family, version, dim=dim)
    old = reader.version_vectors(path, prev, "sku", "vector", limit=max_items)
    if len(old) < 4 or len(next(iter(old.values()))) != dim:
        return None, spaces.assign(settings, family, version, dim=dim)
    rows = df.filter(df.sku.isin(list(old))).select("sku", "vector").toPandas()
    skus = rows["sku"].to_numpy(np.int64)
    new_x = np.stack(rows["vector"].to_numpy()).astype(np.float32)
    old_x = np.stack([old[int(s)] for s in skus])
    rotation, err = align(new_x, old_x, skus)
    space = spaces.assign(settings, family, version, dim=dim, aligned_to=prev, alignment_error=err)
    return (rotation if space["aligned_to"] == prev else None), {**space, "items": int(len(skus))}
