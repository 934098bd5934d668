"""The workload whose classes go into the Spark driver's class-data-sharing archive (see `ubp/jvm_cds.py`).

It runs real stages (ingest, sequences, aggregates) on a tiny demo data set, so the archive holds exactly the
classes a ubp Spark command loads. It lives at the stage level because it calls stages; `ubp/jvm_cds.py` (core)
names it only as the string `WORKLOAD` and imports it in the archive-building subprocess, so the core imports
nothing above itself.
"""

from __future__ import annotations

from pathlib import Path


def run(workdir: Path) -> None:
    """A tiny real ingest -> sequences (full and incremental) -> aggregates run, then stop the JVM and wait for it:
    the JVM writes the archive while it exits."""
    from ubp.config import Settings
    from ubp.demo_data import generate_demo_data
    from ubp.spark_jobs.session import get_spark
    from ubp.stages.aggregates import aggregates
    from ubp.stages.ingest import ingest
    from ubp.stages.sequences import sequences

    raw = workdir / "raw"
    generate_demo_data(raw, users=60, days=14, seed=3)
    settings = Settings(lakehouse=workdir / "lakehouse")
    ingest(settings, raw)
    sequences(settings)
    sequences(settings, incremental=True)
    aggregates(settings)
    spark = get_spark(settings)
    gateway = spark.sparkContext._gateway
    spark.stop()
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=300)
