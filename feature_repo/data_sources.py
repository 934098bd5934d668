"""Batch sources over the gold Delta tables, read through the Delta log by Spark.

Never `FileSource(file_format=DeltaFormat())`: it lists every parquet file in the folder and ignores the Delta log,
so rows that were deleted or overwritten come back. `SparkSource(path=..., table_format=DeltaFormat())` makes
Spark read the table's current snapshot (`spark.read.format("delta")`).

One source per gold table, never chosen at run time: `user_profile` always reads `user_profiles` (GRU space) and
`user_profile_ensemble` always reads `user_profiles_ensemble` (ensemble space), so a feature view (and the service
over it) never changes vector space behind the same name.

The module-level sources (what `feast apply` picks up) point at the lakehouse of `UBP_LAKEHOUSE` (default
`./lakehouse`); `ubp.feast_store` builds the same objects for an explicit `Settings` with `make_sources`.
"""

from __future__ import annotations

from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat

from ubp.config import Settings
from ubp.tables import ITEM_VECTORS, USER_AGGREGATES, USER_PROFILES, USER_PROFILES_ENSEMBLE

# feature view name -> gold table (contract name), fixed
VIEW_TABLES: dict[str, str] = {
    "user_profile": USER_PROFILES.name,
    "user_profile_ensemble": USER_PROFILES_ENSEMBLE.name,
    "user_aggregates": USER_AGGREGATES.name,
    "item_vector": ITEM_VECTORS.name,
}


def delta_source(settings: Settings, table: str, timestamp_field: str = "as_of") -> SparkSource:
    """A Spark source over one gold Delta table (by its contract name)."""
    return SparkSource(
        name=f"{table}_source",
        path=str(settings.table_path(table)),
        table_format=DeltaFormat(),
        timestamp_field=timestamp_field,
        created_timestamp_column="created_at" if table != "user_aggregates" else "",
        description=f"gold Delta table `{table}` (read through the Delta log)",
    )


def make_sources(settings: Settings) -> dict[str, SparkSource]:
    """The batch sources, keyed by feature view name (see `VIEW_TABLES`)."""
    return {view: delta_source(settings, table) for view, table in VIEW_TABLES.items()}


_SOURCES = make_sources(Settings())
user_profile_source = _SOURCES["user_profile"]
user_profile_ensemble_source = _SOURCES["user_profile_ensemble"]
user_aggregates_source = _SOURCES["user_aggregates"]
item_vector_source = _SOURCES["item_vector"]
