"""Daily user profiles: validate the knobs -> ingest the day's landing folder -> sequences + aggregates -> embed
users with the CURRENT model -> ensemble -> publish to Feast. Never trains (see `ubp_user_model_training`).

Runs at 00:00 UTC for the day that just ended (as-of = data interval end, so a re-run or backfill of a day is
idempotent) and also right after a new user model is promoted (asset `ubp.model.user`) to re-embed everybody.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared helper next to this file
import _ubp_common as c  # noqa: E402

KNOBS = ("lakehouse", "raw_dir", "feast_online", "spark_master", "as_of")


@dag(
    dag_id="user_profiles",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 0 * * *", timezone="UTC", interval=timedelta(days=1)),
        assets=c.any_model_asset(*(c.user_kind(m) for m in c.USER_MEMBERS)),
    ),
    params=c.params(*KNOBS),
    tags=["ubp"],
    doc_md=__doc__,
    **c.DAG_DEFAULTS,
)
def user_profiles():
    validate = c.validate_config(*KNOBS)
    ingest = c.spark_stage("ingest")
    sequences = c.spark_stage("sequences")
    aggregates = c.spark_stage("aggregates")
    embed = [c.spark_stage("embed_users", task_id=c.embed_task_id(m), member=m) for m in c.USER_MEMBERS]
    ensemble = c.spark_stage("ensemble")
    publish = c.publish_stage("user")  # after the gold tables committed (all_success)
    validate >> ingest >> [sequences, aggregates]
    sequences >> embed
    [*embed, aggregates] >> ensemble >> publish


user_profiles()
