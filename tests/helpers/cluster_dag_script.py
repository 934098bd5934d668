"""The Airflow run behind `tests/integration/test_standalone_cluster.py`, in its own process:
`python tests/helpers/cluster_dag_script.py WORK DAGS [--full]`.

The test starts the Spark standalone cluster and sets the environment (AIRFLOW_HOME, UBP_SPARK_MODE=submit, the
`spark_default` connection to the cluster's master, SPARK_HOME / SPARK_CONF_DIR, spark-submit on PATH); this script
writes tiny demo data (with invalid rows and duplicates), migrates Airflow's metadata DB and runs the `user_profiles`
DAG with `dag.test()`: by default its Spark part up to silver user_sequences (validate_config -> ingest ->
sequences, each a spark-submit), with `--full` the whole DAG (user models trained first, in this process, since
the daily DAG never trains). It prints one JSON line starting with `@@`: task states, the raw input counts and the
rows each table holds (read back with `ubp.reader`, not through Spark), and Feast's online row of one user when the
DAG published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SPARK_PART = ["ingest", "sequences"]  # with their upstream validate_config


def main(work: Path, dags: str, full: bool) -> dict:
    out: dict = {"timings": {}}
    t_start = time.perf_counter()
    migrate = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    from ubp.config import Settings
    from ubp.demo_data import generate_demo_data

    raw = Path(os.environ["UBP_RAW_DIR"])
    meta = generate_demo_data(raw, users=40, days=10, seed=11, skus=100, bad_row_rate=0.02)
    logical = datetime.strptime(meta["end"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)  # as-of: after the data
    out["logical_date"] = logical.isoformat()
    raw_rows: Counter = Counter()  # rows per target table in the raw drop, as written
    for part in raw.iterdir():
        if part.name.startswith("_"):
            continue
        target = {"product_properties": "products", "product_text": "product_text"}.get(part.stem, "events")
        raw_rows[target] += pq.read_metadata(part).num_rows if part.is_file() else sum(
            pq.read_metadata(f).num_rows for f in part.glob("*.parquet"))
    out["raw_rows"] = dict(raw_rows)

    settings = Settings(lakehouse=os.environ["UBP_LAKEHOUSE"])
    if full:
        # the daily DAG only embeds with each member's CURRENT model: train 1-epoch models on the same data in a
        # scratch lakehouse (same vocabulary) and hand over its model registry, so the DAG's ingest is the first
        import shutil

        from ubp.registry import DEFAULT_USER_MEMBERS
        from ubp.stages.pipeline import run_stage

        t0 = time.perf_counter()
        scratch = Settings(lakehouse=work / "setup_lakehouse")
        run_stage(scratch, "ingest", raw_dir=raw)
        run_stage(scratch, "sequences", as_of=logical)
        for member in DEFAULT_USER_MEMBERS:
            run_stage(scratch, "train_user_model", member=member, max_epochs=1, promote="always",
                      show_progress=False)
        shutil.copytree(scratch.models_dir, settings.models_dir)
        out["timings"]["setup"] = round(time.perf_counter() - t0, 1)
        from pyspark.sql import SparkSession

        SparkSession.getActiveSession().stop()  # the DAG's stages run on the cluster, not in this process
    assert migrate.wait(timeout=600) == 0, migrate.stdout.read()[-3000:]

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dags)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("user_profiles")
    if not full:
        dag = dag.partial_subset(task_ids=SPARK_PART, include_upstream=True)
    out["operators"] = {t.task_id: type(t).__name__ for t in dag.tasks}
    t0 = time.perf_counter()
    dr = dag.test(logical_date=logical)
    out["timings"]["dag_test"] = round(time.perf_counter() - t0, 1)
    out["state"] = str(dr.state)
    out["tis"] = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in dr.get_task_instances()}
    out["results"] = {p.stem: json.loads(p.read_text())  # what each spark-submit driver wrote (--result)
                      for p in (settings.logs_dir / "airflow" / "user_profiles").glob("*/*.json")
                      if not p.name.endswith(".before.json")}
    out["tables"] = tables(settings, logical)
    if full:
        from ubp.stages.publish import profile

        cid = min(out["tables"]["sequence_users"])
        p = profile(settings, cid, service="user_profile_ensemble_v1")
        out["online"] = {"client_id": cid, "dim": p["dim"], "model_version": p.get("model_version")}
    out["timings"]["total"] = round(time.perf_counter() - t_start, 1)
    return out


def tables(settings, as_of: datetime) -> dict:
    """Row counts and keys of what the stages wrote, read with delta-rs (`ubp.reader`)."""
    from ubp import reader

    def read(name: str, cols: list[str]) -> pa.Table | None:
        path = settings.table_path(name)
        if not (path / "_delta_log").is_dir():
            return None
        batches = list(reader.iter_batches(path, columns=cols, batch_size=65536))
        return pa.Table.from_batches(batches) if batches else pa.table({c: [] for c in cols})

    out: dict = {}
    events = read("events", ["event_id", "client_id", "timestamp"])
    out["events"] = {"rows": events.num_rows, "distinct": len(set(events["event_id"].to_pylist()))}
    before = events.filter(pc.less(events["timestamp"], pa.scalar(as_of, pa.timestamp("us", tz="UTC"))))
    out["event_users"] = sorted(set(before["client_id"].to_pylist()))
    quarantine = read("quarantine", ["target_table"])
    out["quarantined"] = dict(Counter(quarantine["target_table"].to_pylist()))
    runs = read("ingest_runs", ["target_table", "rows_read", "accepted", "quarantined", "duplicates"]).to_pylist()
    out["ingest_runs"] = {t: {k: sum(r[k] for r in runs if r["target_table"] == t)
                              for k in ("rows_read", "accepted", "quarantined", "duplicates")}
                          for t in {r["target_table"] for r in runs}}
    for name in ("products", "product_text"):
        out[name] = read(name, ["sku"]).num_rows
    seqs = read("user_sequences", ["client_id", "as_of"])
    out["sequence_users"] = sorted(seqs["client_id"].to_pylist())
    out["sequence_as_of"] = sorted({v.isoformat() for v in seqs["as_of"].to_pylist()})
    aggs = read("user_aggregates", ["client_id", "as_of"])
    out["aggregate_users"] = None if aggs is None else sorted(aggs["client_id"].to_pylist())
    for name in ("user_profiles", "user_profiles_ensemble"):
        t = read(name, ["client_id"])
        out[name] = None if t is None else t.num_rows
    return out


if __name__ == "__main__":
    print("@@" + json.dumps(main(Path(sys.argv[1]), sys.argv[2], "--full" in sys.argv[3:]), default=str))
