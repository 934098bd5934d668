"""The one Spark session factory: Delta enabled, UTC, sensible local defaults, overridable for a cluster."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from ubp.config import Settings
from ubp.jars import ensure_delta_jars

_OFFHEAP = os.environ.get("UBP_SPARK_OFFHEAP_MEMORY", "1500m")

# Local defaults for a 2-core / 24 GB machine. Anything here can be overridden with --conf key=value.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.driver.memory": os.environ.get("UBP_SPARK_DRIVER_MEMORY", "4g"),
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    # Tungsten's sort and aggregation pages off the Java heap, so the garbage collector does not copy and compact
    # hundreds of MB of sort buffers in every full collection (1g measured slower than none at all, so the size
    # matters; docs/benchmarks.md). UBP_SPARK_OFFHEAP_MEMORY=0 turns it off.
    "spark.memory.offHeap.enabled": str(_OFFHEAP != "0").lower(),
    "spark.memory.offHeap.size": _OFFHEAP,
    # JVM options of a local driver (one process for driver and tasks):
    # - CompileThresholdScaling=3: JIT-compile only code that stays hot 3x longer. A local ubp job runs for tens of
    #   seconds in a fresh JVM, and C2 compiling lukewarm planning code competes with the two task threads for the
    #   two cores (compiling sooner, e.g. 0.1, is much slower).
    # - UseParallelGC: a batch job wants throughput, not G1's short pauses (G1's write barriers, concurrent marking
    #   and humongous-region handling of Spark's large arrays).
    # - MetaspaceSize=256m: Spark loads ~80 MB of classes; the default 20 MB threshold cost two full collections.
    "spark.driver.extraJavaOptions": "-Dlog4j2.level=ERROR -XX:CompileThresholdScaling=3 -XX:+UseParallelGC "
    "-XX:MetaspaceSize=256m",
}


def quiet_pyspark_error_logs() -> None:
    """PySpark logs every SQL analysis error as a JSON blob on stderr; our callers turn errors into one clear line
    (the CLI) or a task failure with the message (Airflow), so the blob is only noise. Idempotent."""
    import logging

    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def get_spark(settings: Settings | None = None, app_name: str = "ubp") -> SparkSession:
    """Create (or reuse) the Delta-enabled session.

    Under `spark-submit` (a master already set in the environment) we leave master and memory alone and only add
    Delta and the UTC time zone, so the same job runs on a cluster.
    """
    settings = settings or Settings()
    quiet_pyspark_error_logs()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    submitted = "SPARK_SUBMIT_ARGS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"
    master = settings.master or os.environ.get("UBP_SPARK_MASTER")
    if master:
        builder = builder.master(master)
    elif not submitted:
        builder = builder.master("local[2]")
    local_driver = not submitted and (master is None or master.startswith("local"))  # we start the driver JVM
    if local_driver:
        # Python workers must run the driver's interpreter (the venv), not whatever `python3` is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = dict(LOCAL_DEFAULTS) if not submitted else {}
    conf.update(
        {
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.sql.session.timeZone": "UTC",
            "spark.jars": ",".join(ensure_delta_jars()),
            "spark.sql.warehouse.dir": str(settings.lakehouse / "_warehouse"),
        }
    )
    conf.update(dict(settings.spark_conf))
    if local_driver:
        from ubp.jvm_cds import java_options

        # use the class-data-sharing archive when `make bootstrap` made one
        cds = java_options()
        if cds:
            conf["spark.driver.extraJavaOptions"] = f"{conf.get('spark.driver.extraJavaOptions', '')} {cds}".strip()
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def with_sql_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """Set runtime SQL confs for the queries executed inside the block (planning happens at the action), then put
    the previous values back, so one job's planner choice does not leak into the next stage of the same session."""
    before = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
