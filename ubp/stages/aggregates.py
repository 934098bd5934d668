"""Stage `aggregates`: gold user_aggregates (the challenge's baseline counts and the seed solution's statistics).

Same as-of rule as `sequences` (only events strictly before `as_of`; None = all events) and the same pinned bronze
read, so both stages see the same events; those helpers live in `ubp.stages.sequences`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ubp.config import Settings
from ubp.log import get_logger
from ubp.stages.sequences import PROP_AS_OF, _bronze, _ensure, _require_events, _set_props, resolve_as_of

log = get_logger(__name__)


def aggregates(settings: Settings, as_of: datetime | None = None) -> dict[str, Any]:
    """Build gold `user_aggregates`: the challenge's baseline counts + the seed solution's statistics per user."""
    from ubp.reader import count_rows
    from ubp.spark_jobs.aggregates import build_aggregates, feature_names, feature_names_version
    from ubp.spark_jobs.layout import in_feast_key_order
    from ubp.spark_jobs.session import get_spark
    from ubp.spark_jobs.vocab import prepare_events

    t0 = time.perf_counter()
    _require_events(settings)
    spark = get_spark(settings)
    events, products, events_version = _bronze(spark, settings)
    as_of, _, all_before = resolve_as_of(events, as_of, settings.table_path("events"), events_version)
    out_path = settings.table_path("user_aggregates")
    rows, top_values = build_aggregates(prepare_events(events, products, as_of, all_before), as_of)
    _ensure(spark, "user_aggregates", out_path)
    (in_feast_key_order(rows, "client_id")  # the publish streams contiguous key ranges (spark_jobs/layout.py)
     .write.format("delta").mode("overwrite").option("overwriteSchema", "false").save(str(out_path)))
    _set_props(spark, out_path, {PROP_AS_OF: as_of.isoformat(), "ubp.feature_names_version": feature_names_version()})
    n = count_rows(out_path)
    seconds = round(time.perf_counter() - t0, 1)
    log.info("user_aggregates: %d users x %d features, as of %s (%.1fs)", n, len(feature_names()),
             as_of.isoformat(), seconds)
    return {"stage": "aggregates", "as_of": as_of.isoformat(), "rows": {"user_aggregates": n},
            "n_features": len(feature_names()), "feature_names_version": feature_names_version(),
            "top_values": top_values, "table": str(out_path), "seconds": seconds}
