"""The Spark stages on a standalone cluster (spark-submit, as the DAGs' submit mode runs them) vs local mode.

    .venv/bin/python benchmarks/cluster_vs_local.py --events 10000000 --work /data/cluster10m
    .venv/bin/python benchmarks/cluster_vs_local.py --report /data/cluster10m       # the table again

Input: `ubp demo-data --scale challenge` with enough users for about `--events` events (the challenge's ~169 per
user; `--raw` takes an existing folder). Each Spark stage of the profile path (ingest, sequences, aggregates,
embed-users for the `day_event` member, ensemble) runs twice through the entry point the DAGs submit, `ubp/stages/pipeline.py --stage S --lakehouse L --kwargs ... --as-of ...`:
- local: `python ubp/stages/pipeline.py ...`, a `local[2]` session with `spark_jobs.session`'s local defaults;
- cluster: `spark-submit --master spark://... --jars <Delta jars> --conf spark.pyspark.python=<python>
  ubp/stages/pipeline.py ...` against a master and `--workers` workers started from the installed pyspark
  (`ubp.cluster`), client deploy mode, the cluster's sizes from a spark-defaults.conf (below).
The `day_event` model is trained once (a Python task in the DAGs, not a Spark stage: 1 epoch on a 5k-user sample,
in the local lakehouse) and copied into the cluster's lakehouse, so both modes embed with the same weights. Each
run is sampled every 0.5 s (`proctree.py`): wall time, CPU seconds, peak RSS of the submitting process tree
(Python + driver JVM) and, for the cluster, of the executors under the worker daemons. Afterwards both lakehouses'
tables are compared (rows, and sums that change if any row does), so the numbers are of the same work. The cluster
runs on the same 2 cores: this measures what the cluster mode costs (extra JVMs, shuffles between executors), not
a speed-up. Results go to WORK/cluster_vs_local.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from proctree import jvm_or, run_sampled

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
UBP = str(Path(sys.executable).with_name("ubp"))
ENTRY = str(ROOT / "ubp" / "stages" / "pipeline.py")
STAGES = ("ingest", "sequences", "aggregates", "embed_users", "ensemble")
TRAINED_BEFORE = "embed_users"  # the member's model is trained (once, locally) before this stage
RESULTS = "cluster_vs_local.json"
EVENTS_PER_USER = 169  # the challenge's data: ~169M events of 1M users

SPARK_DEFAULTS = """\
spark.driver.host 127.0.0.1
spark.driver.bindAddress 127.0.0.1
spark.driver.memory {driver_memory}
spark.executor.memory {executor_memory}
spark.sql.shuffle.partitions 4
spark.default.parallelism 4
spark.sql.adaptive.enabled true
spark.databricks.delta.snapshotPartitions 2
spark.ui.enabled false
spark.ui.showConsoleProgress false
spark.locality.wait 0
spark.driver.extraJavaOptions -XX:CompileThresholdScaling=3 -XX:+UseParallelGC -XX:MetaspaceSize=256m
spark.executor.extraJavaOptions -XX:+UseParallelGC -XX:MetaspaceSize=256m
"""


def summary(lakehouse: Path) -> dict:
    """Rows and order-free sums of the tables the three stages write, read without Spark."""
    import pyarrow.compute as pc

    from ubp import reader
    from ubp.config import Settings

    s = Settings(lakehouse=str(lakehouse))

    def total(table: str, column: str) -> int:
        return int(sum(pc.sum(b.column(column)).as_py() or 0
                       for b in reader.iter_batches(s.table_path(table), columns=[column])))

    def vector_sum(table: str) -> float:  # float: the modes may sum in another order, compared with a tolerance
        return float(sum(pc.sum(pc.list_flatten(b.column("embedding"))).as_py() or 0.0
                         for b in reader.iter_batches(s.table_path(table), columns=["embedding"])))

    tables = ("events", "quarantine", "user_sequences", "user_aggregates", "user_profiles", "user_profiles_ensemble")
    out: dict = {t: reader.count_rows(s.table_path(t)) for t in tables}
    out["events.client_id sum"] = total("events", "client_id")
    out["user_sequences.n_events sum"] = total("user_sequences", "n_events")
    out["user_aggregates.client_id sum"] = total("user_aggregates", "client_id")
    out["user_profiles.client_id sum"] = total("user_profiles", "client_id")
    out["user_profiles.embedding sum"] = vector_sum("user_profiles")
    out["user_profiles_ensemble.embedding sum"] = vector_sum("user_profiles_ensemble")
    return out


def same(a: dict, b: dict) -> bool:
    """Equal counts and integer sums; float sums within 1e-4 relative."""
    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])) if isinstance(a[k], float) else a[k] == b[k] for k in a)


def stage_args(stage: str, lakehouse: Path, raw: Path, as_of: str) -> list[str]:
    """The application arguments the DAG's SparkSubmitOperator passes (`dags/_ubp_common.submit_args`)."""
    kwargs = {"raw_dir": str(raw)} if stage == "ingest" else {}
    args = ["--stage", stage, "--lakehouse", str(lakehouse), "--kwargs", json.dumps(kwargs)]
    from ubp import stage_registry

    takes_as_of = {s.name for s in stage_registry.STAGES if s.as_of}
    return args + (["--as-of", as_of] if stage in takes_as_of else [])


def run_one(cmd: list[str], env: dict[str, str], log: Path, workers: list[int]) -> dict:
    """Run and sample one stage; raises SystemExit with the log's tail when it fails."""
    jvm = jvm_or("python")

    def role(p, tree: int) -> str | None:
        r = jvm(p, tree)
        return r if tree not in workers or r is None else "executors"

    with open(log, "w") as fh:
        proc, _, wall, peaks = run_sampled(cmd, role, ("python", "jvm", "executors"), stderr=fh, cwd=ROOT, env=env,
                                           also=workers)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed (rc {proc.returncode}); log {log}:\n"
                         f"{log.read_text()[-3000:]}")
    gib = 2**30
    return {"wall_s": round(wall, 1), "cpu_s": round(peaks["cpu_s"], 1),
            "rss_python_gib": round(peaks["python"] / gib, 2), "rss_jvm_gib": round(peaks["jvm"] / gib, 2),
            "rss_executors_gib": round(peaks["executors"] / gib, 2), "rss_total_gib": round(peaks["total"] / gib, 2),
            "load_avg": [round(x, 1) for x in os.getloadavg()]}


def run(args: argparse.Namespace) -> dict:
    from ubp.cluster import spark_home, start_cluster
    from ubp.jars import ensure_delta_jars

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    raw = Path(args.raw).resolve() if args.raw else work / "raw"
    if not (raw / "_truth" / "meta.json").exists():
        users = max(1, round(args.events / EVENTS_PER_USER))
        print(f"== demo-data: {users:,} users (~{args.events:,} events)", flush=True)
        subprocess.run([UBP, "demo-data", "--out", str(raw), "--scale", "challenge", "--users", str(users)],
                       check=True, cwd=ROOT)
    meta = json.loads((raw / "_truth" / "meta.json").read_text())
    as_of = meta["end"].replace(" ", "T")
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    conf_dir = work / "spark_conf"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "spark-defaults.conf").write_text(SPARK_DEFAULTS.format(driver_memory=args.driver_memory,
                                                                        executor_memory=args.executor_memory))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UBP_", "SPARK_", "PYSPARK_"))}
    env.update({"PYSPARK_PYTHON": sys.executable, "SPARK_HOME": str(spark_home()), "SPARK_CONF_DIR": str(conf_dir),
                "SPARK_LOCAL_IP": "127.0.0.1", "UBP_SPARK_DRIVER_MEMORY": args.driver_memory,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    jars = ",".join(ensure_delta_jars())
    result: dict = {"raw": str(raw), "events": int(sum(v for k, v in meta["rows"].items() if k in (
        "product_buy", "add_to_cart", "remove_from_cart", "page_visit", "search_query"))),
        "users": int(meta["args"]["users"]), "workers": args.workers, "executor_memory": args.executor_memory,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "stages": {}}
    lakes = {"local": work / "lakehouse_local", "cluster": work / "lakehouse_cluster"}
    for lake in lakes.values():
        if lake.exists():
            raise SystemExit(f"{lake} exists: remove it (each mode must start from an empty lakehouse)")
    for stage in STAGES:  # local first, then the cluster (stopped in between: it holds memory while idle)
        if stage == TRAINED_BEFORE:
            print("== train-user-model day_event (once, for both modes)", flush=True)
            subprocess.run([UBP, "--lakehouse", str(lakes["local"]), "train-user-model", "--member", "day_event",
                            "--train-users", "5000", "--epochs", "1"], check=True, cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL)
            shutil.copytree(lakes["local"] / "_models", lakes["cluster"] / "_models")
        cmd = [sys.executable, ENTRY, *stage_args(stage, lakes["local"], raw, as_of)]
        print(f"== {stage} local", flush=True)
        result["stages"].setdefault(stage, {})["local"] = run_one(cmd, env, logs / f"{stage}_local.log", [])
        print("   " + json.dumps(result["stages"][stage]["local"]), flush=True)
    with start_cluster(workers=args.workers, cores=1, memory=args.worker_memory, work_dir=work / "cluster") as c:
        workers = [p.pid for p in c.procs[1:]]
        for stage in STAGES:
            cmd = ["spark-submit", "--master", c.master_url, "--name", f"ubp-{stage}", "--jars", jars,
                   "--conf", f"spark.pyspark.python={sys.executable}", ENTRY,
                   *stage_args(stage, lakes["cluster"], raw, as_of)]
            print(f"== {stage} cluster", flush=True)
            result["stages"][stage]["cluster"] = run_one(cmd, env, logs / f"{stage}_cluster.log", workers)
            print("   " + json.dumps(result["stages"][stage]["cluster"]), flush=True)
        apps = c.state().get("completedapps", [])
        result["cluster_apps"] = {a["name"]: a["state"] for a in apps}
        result["executors"] = {a["name"]: len(c.executors().get(a["id"], [])) for a in apps}
    result["tables"] = {mode: summary(lake) for mode, lake in lakes.items()}
    result["same_tables"] = same(result["tables"]["local"], result["tables"]["cluster"])
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    (work / RESULTS).write_text(json.dumps(result, indent=2))
    return result


def report(result: dict) -> str:
    """Markdown: per stage, local vs cluster wall / CPU / peak memory and the ratio."""
    lines = ["| stage | local wall s (CPU s) | cluster wall s (CPU s) | cluster / local wall | local peak RSS GiB "
             "(Python / JVM) | cluster peak RSS GiB (Python / driver JVM / executors) |", "|---|---|---|---|---|---|"]
    tot = {"local": 0.0, "cluster": 0.0}
    for stage, modes in result["stages"].items():
        lo, cl = modes["local"], modes["cluster"]
        tot["local"] += lo["wall_s"]
        tot["cluster"] += cl["wall_s"]
        lines.append(f"| {stage} | {lo['wall_s']:,.0f} ({lo['cpu_s']:,.0f}) | {cl['wall_s']:,.0f} ({cl['cpu_s']:,.0f}) "
                     f"| {cl['wall_s'] / lo['wall_s']:.2f}x | {lo['rss_total_gib']:.2f} ({lo['rss_python_gib']:.2f} / "
                     f"{lo['rss_jvm_gib']:.2f}) | {cl['rss_total_gib']:.2f} ({cl['rss_python_gib']:.2f} / "
                     f"{cl['rss_jvm_gib']:.2f} / {cl['rss_executors_gib']:.2f}) |")
    lines.append(f"| **all** | **{tot['local']:,.0f}** | **{tot['cluster']:,.0f}** | "
                 f"**{tot['cluster'] / tot['local']:.2f}x** | | |")
    same = "identical" if result["same_tables"] else "DIFFERENT"
    return ("\n".join(lines) + f"\n\n{result['users']:,} users, {result['events']:,} events; cluster: "
            f"{result['workers']} workers x 1 core, executors {result['executor_memory']}; tables of both modes "
            f"{same} ({result['tables']['local']}); {result['machine']}.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="about this many events (challenge proportions)")
    ap.add_argument("--work", default="/tmp/ubp-cluster-vs-local", help="raw data, both lakehouses, logs, results")
    ap.add_argument("--raw", default=None, help="an existing `ubp demo-data` folder instead of generating one")
    ap.add_argument("--workers", type=int, default=2, help="standalone workers (1 core each)")
    ap.add_argument("--worker-memory", default="4g", help="memory each worker offers its executors")
    ap.add_argument("--executor-memory", default="3g")
    ap.add_argument("--driver-memory", default="4g", help="of both modes' driver (local: the whole of Spark)")
    ap.add_argument("--report", metavar="WORK", help="print the table of a finished run and exit")
    args = ap.parse_args()
    if args.report:
        print(report(json.loads((Path(args.report) / RESULTS).read_text())))
        return
    t0 = time.perf_counter()
    result = run(args)
    print(report(result) + f"\n(whole benchmark {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
