"""Stage `item_content`: bronze products + product_text -> silver `item_content` (cached raw encoder outputs)."""

from __future__ import annotations

import time

from ubp.config import Settings


def item_content(settings: Settings, batch_rows: int = 4096, use_text: bool = True) -> dict:
    """Encode new or changed catalog items (text, else name codes; `use_text=False`: name codes for every item)
    into `item_content`."""
    from ubp.spark_jobs.item_content import build_item_content
    from ubp.spark_jobs.session import get_spark

    t0 = time.perf_counter()
    spark = get_spark(settings)
    out = build_item_content(spark, settings, batch_rows=batch_rows, use_text=use_text)
    return {"stage": "item_content", **out, "seconds": round(time.perf_counter() - t0, 3)}
