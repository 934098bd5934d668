"""The one list of pipeline stages: what each runs, reads and writes, and what it needs.

`ubp run`'s order (`ubp/stages/pipeline.py`), the Airflow tasks' outlets (`dags/_ubp_common.py`) and the feature
views that `ubp publish` pushes are derived from `STAGES`; `Table.owner` in `ubp/tables.py` must name the stage that
lists the table in `writes` (`tests/ubp/test_stage_registry.py` checks all of it). Stage functions are named as
"module:function" strings: this module is core and light (stdlib + `ubp.registry`), so the DAG files can import it at parse time and
it imports nothing above itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ubp.registry import DEFAULT_USER_MEMBERS, PRIMARY_USER_MEMBER


@dataclass(frozen=True)
class Stage:
    name: str  # also the Airflow task id; the CLI command is the name with dashes
    function: str  # "module:function" of the stage function
    reads: tuple[str, ...]  # lakehouse tables (names in ubp.tables.TABLES)
    writes: tuple[str, ...]  # lakehouse tables this stage alone writes (its Airflow outlets)
    spark: bool  # runs Spark jobs (sent to the cluster in spark-submit mode)
    gpu: bool  # trains or encodes with torch, so a GPU worker helps
    as_of: bool = False  # takes the run's as-of (only events strictly before it count)
    model: str | None = None  # the model kind it trains ("user" | "item"); promotion is decided by the caller
    in_run: bool = True  # part of `ubp run`
    per_member: bool = False  # runs once per GRU-AE member (`ubp run --member`, `models.members.DEFAULT_MEMBERS`)

    @property
    def module(self) -> str:
        return self.function.partition(":")[0]

    @property
    def attr(self) -> str:
        return self.function.partition(":")[2]


# feature view -> the gold table behind it (one view, one vector space); the order is publish order
# (the vector-space families: each space of a family gets its own view, `ubp/spaces.py`)
FEATURE_VIEWS: dict[str, str] = {
    "user_profile": "user_profiles",
    **{f"user_profile_{m}": "user_member_profiles" for m in DEFAULT_USER_MEMBERS if m != PRIMARY_USER_MEMBER},
    "user_profile_ensemble": "user_profiles_ensemble",
    "user_aggregates": "user_aggregates",
    "item_vector": "item_vectors",
}

# In pipeline order: a stage only reads what the stages before it (or an earlier run) wrote.
STAGES: tuple[Stage, ...] = (
    Stage("ingest", "ubp.stages.ingest:ingest", reads=(),
          writes=("events", "products", "product_text", "quarantine", "ingest_runs"), spark=True, gpu=False),
    Stage("sequences", "ubp.stages.sequences:sequences", reads=("events", "products"),
          writes=("user_sequences", "vocabularies"), spark=True, gpu=False, as_of=True),
    Stage("aggregates", "ubp.stages.aggregates:aggregates", reads=("events", "products"),
          writes=("user_aggregates",), spark=True, gpu=False, as_of=True),
    Stage("train_user_model", "ubp.stages.train_user_model:train_user_model", reads=("user_sequences", "vocabularies"),
          writes=(), spark=False, gpu=True, model="user", per_member=True),
    Stage("embed_users", "ubp.stages.embed_users:embed_users", reads=("user_sequences",),
          writes=("user_profiles", "user_member_profiles"), spark=True, gpu=False, per_member=True),
    Stage("item_content", "ubp.stages.item_content:item_content", reads=("products", "product_text"),
          writes=("item_content",), spark=True, gpu=False),
    Stage("train_item_model", "ubp.stages.train_item_model:train_item_model", reads=("user_sequences", "item_content"),
          writes=(), spark=False, gpu=True, model="item"),
    Stage("item_vectors", "ubp.stages.item_vectors:item_vectors", reads=("item_content",),
          writes=("item_vectors",), spark=True, gpu=False),
    Stage("ensemble", "ubp.stages.ensemble:ensemble",
          reads=("user_profiles", "user_aggregates", "events", "products", "user_sequences", "item_content",
                 "item_vectors"),
          writes=("user_factors", "user_stats", "user_text", "user_profiles_ensemble"), spark=True, gpu=False,
          as_of=True),
    Stage("evaluate", "ubp.stages.evaluate:evaluate", reads=("events", "products", "product_text"),
          writes=(), spark=True, gpu=True, in_run=False),  # rebuilds every table in its own namespace
    Stage("publish", "ubp.stages.publish:publish", reads=tuple(FEATURE_VIEWS.values()),
          writes=(), spark=False, gpu=False),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def run_order() -> tuple[Stage, ...]:
    """The stages `ubp run` runs, in order."""
    return tuple(s for s in STAGES if s.in_run)


def writer_of() -> dict[str, str]:
    """Table -> the stage that writes it."""
    return {table: s.name for s in STAGES for table in s.writes}


def views_fed_by(*stages: str) -> list[str]:
    """The feature views whose gold table one of `stages` writes: what to publish after those stages ran."""
    written = {table for name in stages for table in BY_NAME[name].writes}
    return [view for view, table in FEATURE_VIEWS.items() if table in written]
