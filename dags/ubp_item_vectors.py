"""Item vectors: item content embeddings -> item vectors with the CURRENT item model (new, cold items get their
content vector, no retraining) -> publish to Feast.

Daily at 01:00 UTC, and whenever the catalog table (`ubp.bronze.products`) or the item model (`ubp.model.item`)
changes.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _ubp_common as c  # noqa: E402

KNOBS = ("lakehouse", "feast_online", "spark_master")


@dag(
    dag_id="item_vectors",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 1 * * *", timezone="UTC", interval=timedelta(days=1)),
        assets=(c.table_asset("products") | c.model_asset("item")),
    ),
    params=c.params(*KNOBS),
    tags=["ubp"],
    doc_md=__doc__,
    **c.DAG_DEFAULTS,
)
def item_vectors():
    content = c.spark_stage("item_content")
    vectors = c.spark_stage("item_vectors")
    publish = c.publish_stage("item")
    c.validate_config(*KNOBS) >> content >> vectors >> publish


item_vectors()
