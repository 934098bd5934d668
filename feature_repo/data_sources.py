"""Batch sources over the gold Delta tables, read through the Delta log by Spark.

Never `FileSource(file_format=DeltaFormat())`: it lists every parquet file in the folder and ignores the Delta log,
so rows that were deleted or overwritten come back. Spark reads the table's current snapshot instead.

One source per vector space (`ubp/spaces.py`): a profile or item-vector table holds every space of its family, told
apart by `space_id`, so a space's source is a query that keeps its own rows only
(`SELECT * FROM delta.`<path>` WHERE space_id = '<space>'`). A feature view over it, and the service over the view,
never return rows of two spaces, online (the publish applies the same filter) or point-in-time. `user_aggregates`
has no space: its source is the table itself.

The module-level sources (what `feast apply` picks up) point at the lakehouse of `UBP_LAKEHOUSE` (default
`./lakehouse`) and its registered spaces; `ubp.feast_store` builds the same objects for an explicit `Settings`.
"""

from __future__ import annotations

from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat

from ubp import spaces
from ubp.config import Settings
from ubp.tables import USER_AGGREGATES


def view_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Feature view name -> {"table", "path", "space_id", "family"} ("" for the aggregates, which have no space)."""
    specs = {s["view"]: {**s, "path": str(settings.table_path(s["table"]))} for s in spaces.served_spaces(settings)}
    specs[USER_AGGREGATES.name] = {
        "table": USER_AGGREGATES.name, "path": str(settings.table_path(USER_AGGREGATES.name)),
        "space_id": "", "family": ""}
    return specs


def delta_source(view: str, spec: dict[str, str]) -> SparkSource:
    """A Spark source over one gold Delta table, restricted to one vector space when the spec names one."""
    if not spec["space_id"]:
        return SparkSource(
            name=f"{spec['table']}_source", path=spec["path"], table_format=DeltaFormat(), timestamp_field="as_of",
            description=f"gold Delta table `{spec['table']}` (read through the Delta log)",
        )
    return SparkSource(
        name=f"{view}_source",
        query=f"SELECT * FROM delta.`{spec['path']}` WHERE space_id = '{spec['space_id']}'",
        timestamp_field="as_of",
        created_timestamp_column="created_at",
        description=f"gold Delta table `{spec['table']}`, rows of vector space {spec['space_id']}",
    )


def make_sources(settings: Settings, specs: dict[str, dict[str, str]] | None = None) -> dict[str, SparkSource]:
    """The batch sources, keyed by feature view name (`specs`: `view_specs(settings)`, read when not given)."""
    return {view: delta_source(view, spec) for view, spec in (specs or view_specs(settings)).items()}


_SPECS = view_specs(Settings())
_SOURCES = make_sources(Settings(), _SPECS)
user_profile_source = _SOURCES["user_profile"]
user_profile_ensemble_source = _SOURCES["user_profile_ensemble"]
user_aggregates_source = _SOURCES["user_aggregates"]
item_vector_source = _SOURCES["item_vector"]
