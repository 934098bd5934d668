"""Benchmark `ubp ingest`: events/s and peak memory (Python driver + JVM) for ~1M and ~10M demo events.

    flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/ingest.py --sizes 1000000,10000000

For each size: generate demo data (`ubp.demo_data.generate_demo_data`, 0.1% injected bad rows and duplicates, users
picked from a calibration run to reach the target), then ingest it in a fresh child process (its own JVM) while the
parent samples the RSS of the whole process tree (psutil). With `--rerun` the child ingests the same directory a
second time (the idempotent no-op path: every event is a duplicate). Results go to stdout and `<work>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from proctree import jvm_or, run_sampled

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(raw: str, lakehouse: str, rerun: bool) -> None:
    """Runs in a fresh process: start Spark, ingest (twice with --rerun), print one JSON line."""
    from ubp.spark_jobs.session import get_spark

    from ubp.config import Settings
    from ubp.stages.ingest import ingest

    settings = Settings(lakehouse=Path(lakehouse))
    t0 = time.perf_counter()
    spark = get_spark(settings, app_name="bench-ingest")
    t1 = time.perf_counter()
    first = ingest(settings, raw)
    t2 = time.perf_counter()
    out = {"session_s": t1 - t0, "ingest_s": t2 - t1, "first": first,
           "driver_memory": spark.conf.get("spark.driver.memory", "?")}
    if rerun:
        second = ingest(settings, raw)
        out["rerun_s"] = time.perf_counter() - t2
        out["rerun"] = second
    print("RESULT " + json.dumps(out, default=str), flush=True)


def _events(meta_rows: dict) -> int:
    from ubp.tables import EVENT_TYPES

    return sum(int(meta_rows.get(s, 0)) for s in EVENT_TYPES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="target event counts, comma separated")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--work", default="/tmp/ubp-bench-ingest")
    ap.add_argument("--rerun", action="store_true", help="also time a second (no-op) ingest of the same dir")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and lakehouses")
    ap.add_argument("--child", nargs=2, metavar=("RAW", "LAKEHOUSE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, rerun=args.rerun)
        return

    from ubp.demo_data import generate_demo_data

    load_start = [round(x, 1) for x in os.getloadavg()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    calib = generate_demo_data(work / "calib", users=2000, days=args.days, seed=11)
    per_user = _events(calib["rows"]) / 2000
    shutil.rmtree(work / "calib", ignore_errors=True)
    print(f"calibration: {per_user:.1f} events per user over {args.days} days")

    results = []
    for target in [int(s) for s in args.sizes.split(",")]:
        users = max(1, math.ceil(target / per_user))
        raw, lake = work / f"raw_{target}", work / f"lakehouse_{target}"
        shutil.rmtree(lake, ignore_errors=True)
        t = time.perf_counter()
        meta = generate_demo_data(raw, users=users, days=args.days, seed=11, bad_row_rate=0.001)
        gen_s = time.perf_counter() - t
        n_events = _events(meta["rows"])
        print(f"== {n_events:,} raw event rows ({users:,} users), generated in {gen_s:.0f}s; ingesting...", flush=True)
        cmd = [sys.executable, __file__, "--child", str(raw), str(lake)] + (["--rerun"] if args.rerun else [])
        proc, stdout, wall, peaks = run_sampled(cmd, jvm_or("python"), ("python", "jvm"), interval=0.2, cwd=ROOT)
        line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"ingest child failed (rc={proc.returncode})")
        res = json.loads(line[len("RESULT "):])
        (work / f"child_{target}.json").write_text(json.dumps(res, indent=2))
        first = res["first"]
        ev_files = [f for f in first["files"] if f["target_table"] == "events"]
        ev_read = sum(f["rows_read"] for f in ev_files)
        row = {
            "target": target, "users": users, "raw_event_rows": n_events, "generate_s": round(gen_s, 1),
            "events_read": ev_read,
            "events_accepted": sum(f["accepted"] for f in ev_files),
            "events_quarantined": sum(f["quarantined"] for f in ev_files),
            "events_duplicates": sum(f["duplicates"] for f in ev_files),
            "injected_bad_rows": sum(
                sum(v.values()) if isinstance(v, dict) else int(v) for v in meta.get("injected_bad_rows", {}).values()
            ),
            "injected_duplicates": sum(meta.get("injected_duplicates", {}).values()),
            "session_start_s": round(res["session_s"], 1),
            "ingest_s": round(res["ingest_s"], 1),
            "events_per_s": round(ev_read / res["ingest_s"]),
            "child_wall_s": round(wall, 1),
            "child_cpu_s": round(peaks["cpu_s"], 1),
            "peak_rss_python_mb": round(peaks["python"] / 2**20),
            "peak_rss_jvm_mb": round(peaks["jvm"] / 2**20),
            "peak_rss_total_mb": round(peaks["total"] / 2**20),
            "driver_memory": res["driver_memory"],
        }
        if "rerun" in res:
            row["rerun_s"] = round(res["rerun_s"], 1)
            row["rerun_accepted"] = res["rerun"]["totals"]["accepted"]
            row["rerun_events_per_s"] = round(ev_read / res["rerun_s"])
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
        if not args.keep:
            shutil.rmtree(raw, ignore_errors=True)
            shutil.rmtree(lake, ignore_errors=True)

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus",
        "load_avg_at_start": load_start,
        "load_avg_at_end": [round(x, 1) for x in load],
        "results": results,
    }
    (work / "results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
