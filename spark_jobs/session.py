"""The one Spark session factory: Delta enabled, UTC, sensible local defaults, overridable for a cluster.

Two kinds of settings. `JOB_CONF` is how ubp's jobs must run wherever they run (Delta, UTC, Arrow, Delta's dynamic
partition overwrite); `LOCAL_DEFAULTS` sizes a local driver on a small machine (memory, partitions, JVM options).
Under `spark-submit` (a driver in a JVM that spark-submit started, on a cluster) the submitted configuration wins:
the master, the application name and every resource setting are left as submitted; `JOB_CONF` is set, with
Delta's SQL extension appended to any the job brought. The Delta jars must come with the job (`--jars`): the
driver's class path is fixed by then.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from ubp.config import Settings
from ubp.jars import ensure_delta_jars

_OFFHEAP = os.environ.get("UBP_SPARK_OFFHEAP_MEMORY", "1500m")

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"

# How ubp's jobs run, locally and on a cluster (what the code relies on, so set under spark-submit too).
JOB_CONF: dict[str, str] = {
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
}

# Local defaults for a 2-core / 24 GB machine. Anything here can be overridden with --conf key=value.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.driver.memory": os.environ.get("UBP_SPARK_DRIVER_MEMORY", "4g"),
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
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
    "spark.driver.extraJavaOptions": "-XX:CompileThresholdScaling=3 -XX:+UseParallelGC -XX:MetaspaceSize=256m",
}

SHELL_LOGGERS = ("org.apache.spark.SparkContext", "org.apache.spark.api.python.PythonGatewayServer",
                 "org.apache.spark.deploy.SparkSubmit", "org.apache.spark.repl.Main")
LOG_LEVELS = ("ALL", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")


def spark_log_level() -> str:
    """The JVM's console log level: ERROR unless `UBP_SPARK_LOG_LEVEL` says otherwise. Spark's WARN lines (hostname,
    native-hadoop, default profile) are noise in a scheduled run's log; a real problem surfaces as an error."""
    level = (os.environ.get("UBP_SPARK_LOG_LEVEL") or "ERROR").strip().upper()
    if level == "WARNING":
        level = "WARN"
    if level not in LOG_LEVELS:
        raise ValueError(f"UBP_SPARK_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def log4j2_config(level: str) -> Path:
    """A log4j2 configuration file for a local driver: root logger at `level`, to stderr. Given to the JVM at start,
    so the lines printed before `setLogLevel` (Spark's default-profile banner, startup WARNs) follow it too."""
    path = Path(tempfile.gettempdir()) / f"ubp-log4j2-{level.lower()}-{os.getuid()}.properties"
    low = level.lower()
    text = (
        f"rootLogger.level = {low}\n"
        "rootLogger.appenderRef.stderr.ref = console\n"
        "appender.console.type = Console\n"
        "appender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex\n"
    )
    # PySpark's driver counts as a shell: Spark then resets the console to the level of the logger that starts
    # logging (WARN unless configured) and prints "Setting default log level"; configured, it keeps ours.
    for i, name in enumerate(SHELL_LOGGERS):
        text += f"logger.shell{i}.name = {name}\nlogger.shell{i}.level = {low}\n"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def quiet_pyspark_error_logs() -> None:
    """PySpark logs every SQL analysis error as a JSON blob on stderr; our callers turn errors into one clear line
    (the CLI) or a task failure with the message (Airflow), so the blob is only noise. Idempotent."""
    import logging

    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def submitted_conf() -> dict[str, str] | None:
    """The configuration spark-submit gave this driver (master, app name, jars, `--conf`, spark-defaults.conf), or
    None when this process is not a spark-submit driver (then `get_spark` starts the JVM itself).

    spark-submit starts the JVM first and then this Python with `PYSPARK_GATEWAY_PORT` set; PySpark connects to that
    JVM, whose system properties hold the submitted `spark.*` settings."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM; starts nothing
    return dict(SparkConf().getAll())


def _with_extension(value: str | None) -> str:
    """spark.sql.extensions with Delta's appended to the submitted ones (not replacing them)."""
    items = [x.strip() for x in (value or "").split(",") if x.strip()]
    return ",".join(items + ([] if DELTA_EXTENSION in items else [DELTA_EXTENSION]))


def _require_delta_on_driver() -> None:
    """Under spark-submit the driver JVM's class path is fixed before Python runs: Delta must have come with the
    job (`--jars`, which also ships the jars to the executors). Setting `spark.jars` now would reach the executors
    only, and Spark would just warn and run without Delta; fail with the fix instead."""
    from py4j.java_gateway import JavaClass
    from pyspark import SparkContext

    from ubp.errors import UbpError

    if not isinstance(SparkContext._jvm.io.delta.sql.DeltaSparkSessionExtension, JavaClass):
        raise UbpError("spark-submit without the Delta jars: add --jars $(python -m ubp.jars | paste -sd, -) (the "
                       "DAGs' submit mode passes them; docs/operations.md, Running on a Spark standalone cluster)")


def get_spark(settings: Settings | None = None, app_name: str = "ubp") -> SparkSession:
    """Create (or reuse) the Delta-enabled session.

    Locally: master `local[2]` (or `--master`), `LOCAL_DEFAULTS` and `JOB_CONF`. Under `spark-submit`: master, app
    name and resources as submitted, plus `JOB_CONF` (Delta's extension appended to the submitted ones; see the
    module docstring), so the same job runs on a cluster.
    """
    settings = settings or Settings()
    level = spark_log_level()
    quiet_pyspark_error_logs()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    submitted = submitted_conf()
    builder = SparkSession.builder
    master = None if submitted is not None else (
        settings.master or os.environ.get("UBP_SPARK_MASTER") or "local[2]")
    if submitted is None:
        builder = builder.appName(app_name).master(master)
        conf = {**LOCAL_DEFAULTS, **JOB_CONF, "spark.jars": ",".join(ensure_delta_jars()),
                "spark.sql.warehouse.dir": str(settings.lakehouse / "_warehouse")}
    else:
        _require_delta_on_driver()
        conf = dict(JOB_CONF)
        conf["spark.sql.extensions"] = _with_extension(submitted.get("spark.sql.extensions"))
        if "spark.sql.warehouse.dir" not in submitted:
            conf["spark.sql.warehouse.dir"] = str(settings.lakehouse / "_warehouse")
    local_driver = master is not None and master.startswith("local")  # we start the driver JVM
    if local_driver:
        # Python workers must run the driver's interpreter (the venv), not whatever `python3` is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf.update(dict(settings.spark_conf))
    if local_driver:
        from ubp.jvm_cds import java_options

        # the console log level from the JVM's start; the class-data-sharing archive when `make bootstrap` made one
        extra = [f"-Dlog4j2.configurationFile={log4j2_config(level)}", java_options()]
        conf["spark.driver.extraJavaOptions"] = " ".join(
            filter(None, [conf.get("spark.driver.extraJavaOptions", ""), *extra]))
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(level)
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
