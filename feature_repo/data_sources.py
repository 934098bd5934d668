"""Batch sources over the gold Delta tables, read through the Delta log by Spark.

Never `FileSource(file_format=DeltaFormat())`: it lists every parquet file in the folder and ignores the Delta log,
so rows that were deleted or overwritten come back. `SparkSource(path=..., table_format=DeltaFormat())` makes
Spark read the table's current snapshot (`spark.read.format("delta")`).

The module-level sources (what `feast apply` picks up) point at the lakehouse of `UBP_LAKEHOUSE` (default
`./lakehouse`) and the profile table of `UBP_PROFILE_TABLE` (default: the ensemble table if it exists, else
`user_profiles`); `ubp.feast_store` builds the same objects for an explicit `Settings` with `make_sources`.
"""

from __future__ import annotations

import os

from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat

from ubp.config import Settings
from ubp.tables import PROFILE_TABLES


def default_profile_table(settings: Settings) -> str:
    """The profile table published as `user_profile`: env `UBP_PROFILE_TABLE`, else the ensemble when it exists."""
    chosen = os.environ.get("UBP_PROFILE_TABLE")
    if chosen:
        if chosen not in PROFILE_TABLES:
            raise ValueError(f"UBP_PROFILE_TABLE must be one of {PROFILE_TABLES}, got {chosen!r}")
        return chosen
    ensemble = settings.table_path("user_profiles_ensemble")
    return "user_profiles_ensemble" if (ensemble / "_delta_log").is_dir() else "user_profiles"


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


def make_sources(settings: Settings, profile_table: str | None = None) -> dict[str, SparkSource]:
    """The three batch sources, keyed by feature view name."""
    profile_table = profile_table or default_profile_table(settings)
    return {
        "user_profile": delta_source(settings, profile_table),
        "user_aggregates": delta_source(settings, "user_aggregates"),
        "item_vector": delta_source(settings, "item_vectors"),
    }


_SOURCES = make_sources(Settings())
user_profile_source = _SOURCES["user_profile"]
user_aggregates_source = _SOURCES["user_aggregates"]
item_vector_source = _SOURCES["item_vector"]
