"""Weekly (or on demand) model training with guarded promotion.

`user_model_training`: one task group per GRU-AE member (`day_event`, `week_all`, `all_fields`): train a candidate
on the current sequences -> evaluate it against the member's serving model -> promote it only if its validation
metric is not worse than the current one by more than `promote_threshold` (the decision and its reason go to
`<lakehouse>/_models/<kind>/promotions.jsonl`; otherwise the current model keeps serving) -> mark the member's
model asset (`ubp.model.user` for the served `day_event`, `ubp.model.user-<member>` for the others), which
triggers `user_profiles` to re-embed.
`item_model_training`: the same for the item model (SASRec with frozen content + bounded delta).

Training tasks go to the queue `UBP_TRAIN_QUEUE` and pool `UBP_TRAIN_POOL` (e.g. a GPU worker pool).
"""

from __future__ import annotations

import os
import sys

from airflow.sdk import CronTriggerTimetable, TaskGroup, dag

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _ubp_common as c  # noqa: E402

USER_KNOBS = ("lakehouse", "spark_master", "user_max_epochs", "promote_threshold")
ITEM_KNOBS = ("lakehouse", "spark_master", "item_variant", "item_max_epochs", "promote_threshold")


@dag(
    dag_id="user_model_training",
    schedule=CronTriggerTimetable("0 3 * * 0", timezone="UTC"),
    params=c.params(*USER_KNOBS),
    tags=["ubp", "training"],
    doc_md=__doc__,
    **c.DAG_DEFAULTS,
)
def user_model_training():
    validate = c.validate_config(*USER_KNOBS)
    for member in c.USER_MEMBERS:
        with TaskGroup(group_id=member):
            validate >> c.training_chain(c.user_kind(member), "train_user_model", member=member)


@dag(
    dag_id="item_model_training",
    schedule=CronTriggerTimetable("0 4 * * 0", timezone="UTC"),
    params=c.params(*ITEM_KNOBS),
    tags=["ubp", "training"],
    doc_md=__doc__,
    **c.DAG_DEFAULTS,
)
def item_model_training():
    content = c.spark_stage("item_content")
    c.validate_config(*ITEM_KNOBS) >> content >> c.training_chain("item", "train_item_model")


user_model_training()
item_model_training()
