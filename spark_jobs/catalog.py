"""Register every lakehouse table by its contract name in a Spark session, so `SELECT * FROM events` works.

Tables are registered as EXTERNAL Delta tables in the session catalog (`CREATE TABLE name USING DELTA LOCATION`),
not as temp views: only catalog tables support Delta time travel (`SELECT * FROM events VERSION AS OF 0`).
Dropping such an external table removes the name only, never the data.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from ubp.config import Settings
from ubp.tables import TABLES


def is_delta_table(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def register_tables(spark: SparkSession, settings: Settings, names: list[str] | None = None) -> list[str]:
    """Register each existing lakehouse table (default: all contracts) under its name; return those registered.

    Re-registering points the name at this settings' lakehouse (a session can serve several lakehouses in turn).
    A managed table with the same name is left alone (dropping it would delete its data).
    """
    registered: list[str] = []
    for name in names or list(TABLES):
        path = settings.table_path(name)
        if spark.catalog.tableExists(name):
            table = spark.catalog.getTable(name)
            if table.tableType != "EXTERNAL" or table.isTemporary:
                continue
            spark.sql(f"DROP TABLE IF EXISTS `{name}`")
        if not is_delta_table(path):
            continue
        location = str(path).replace("\\", "\\\\").replace("'", "\\'")
        spark.sql(f"CREATE TABLE `{name}` USING DELTA LOCATION '{location}'")
        registered.append(name)
    return registered
