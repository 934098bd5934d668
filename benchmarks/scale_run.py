"""Every stage of the pipeline at challenge scale, one process per stage: wall time, peak RSS, disk, rows.

    flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/scale_run.py --users 1000000 --work /data/scale1m
    .venv/bin/python benchmarks/scale_run.py --report /data/scale100k /data/scale1m   # the table, with growth

Input: `ubp demo-data --scale challenge --users N` (generated into WORK/raw unless `--raw` names one). Then, each as
its own `ubp` process on WORK/lakehouse (as an Airflow task would run it): ingest, sequences, aggregates, per GRU-AE
member train-user-model (on a stable hashed sample of `--train-users` users, `--epochs` epochs: an epoch over 1M
users is hours on a CPU) and embed-users (every user), item-content (from the name codes, as the challenge's data
has no text, unless `--item-text`), train-item-model (same sample), item-vectors,
ensemble, publish into SQLite, publish into Redis (`--redis`, when given). While a stage runs, the parent samples
every 0.5 s the RSS of the stage's process tree, split into the Python driver, the Spark JVM and the other
processes (Spark's Python workers; not the programs the JVM shells out to, see `proctree.jvm_or`), and the CPU
seconds of the tree. After it: the lakehouse's size on disk and the stage's own row counts (its JSON output). Results go to WORK/scale_run.json after
every stage, so a killed run resumes at the first unfinished stage (`--redo STAGE` runs one again).

`--report DIR...` prints the per-stage table of one or more runs (users ascending) and, for two runs, the growth
ratio of time and of peak memory: time should grow about with the data (10x users -> ~10x), memory far less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from proctree import jvm_or, run_sampled

ROOT = Path(__file__).resolve().parents[1]
UBP = str(Path(sys.executable).with_name("ubp"))
MEMBERS = ("day_event", "week_all", "all_fields")
RESULTS = "scale_run.json"


def stages(args: argparse.Namespace, raw: Path) -> list[tuple[str, list[str]]]:
    """(name, ubp arguments) in pipeline order."""
    train = ["--train-users", str(args.train_users), "--epochs", str(args.epochs)]
    out: list[tuple[str, list[str]]] = [
        ("ingest", ["ingest", "--raw", str(raw)]),
        ("sequences", ["sequences"]),
        ("aggregates", ["aggregates"]),
    ]
    for m in args.members:
        out.append((f"train-user-model {m}", ["train-user-model", "--member", m, *train]))
        out.append((f"embed-users {m}", ["embed-users", "--member", m]))
    out += [
        ("item-content", ["item-content", *([] if args.item_text else ["--source", "codes"])]),
        ("train-item-model", ["train-item-model", *train]),
        ("item-vectors", ["item-vectors"]),
        ("ensemble", ["ensemble"]),
        ("publish sqlite", ["publish"]),
    ]
    if args.redis:
        out.append(("publish redis", ["publish", "--online", "redis"]))
    return out


def du(path: Path) -> int:
    """Bytes on disk under `path` (0 when it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                continue
    return total


def written(name: str, lakehouse: Path) -> dict[str, dict[str, float]]:
    """Rows (from the Delta log) and GiB on disk of each table the stage writes, by the stage registry."""
    from ubp import reader, stage_registry
    from ubp.config import Settings

    settings = Settings(lakehouse=lakehouse)
    stage = next((s for s in stage_registry.STAGES if s.name == name.split()[0].replace("-", "_")), None)
    out = {}
    for table in stage.writes if stage else ():
        path = settings.table_path(table)
        if (path / "_delta_log").is_dir():
            out[table] = {"rows": reader.count_rows(path), "gib": round(du(path) / 2**30, 3)}
    return out


def run_stage(name: str, argv: list[str], lakehouse: Path, log_dir: Path, env: dict[str, str]) -> dict:
    """One stage in its own `ubp` process, sampled; raises SystemExit with its log's tail when it fails."""
    log_file = log_dir / (name.replace(" ", "_") + ".log")
    cmd = [UBP, "--lakehouse", str(lakehouse), *argv]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    other = jvm_or("other")
    with open(log_file, "w") as fh:
        proc, stdout, wall, peaks = run_sampled(cmd, lambda p, root: "driver" if p.pid == root else other(p, root),
                                                ("driver", "jvm", "other"), stderr=fh, cwd=ROOT, env=env)
    (log_dir / (name.replace(" ", "_") + ".out")).write_text(stdout)
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise SystemExit(f"stage {name} failed (rc {proc.returncode}) after {wall:.0f}s; log {log_file}:\n{tail}")
    gib = 2**30
    row = {
        "stage": name, "argv": argv, "wall_s": round(wall, 1), "cpu_s": round(peaks["cpu_s"], 1),
        "rss_driver_gib": round(peaks["driver"] / gib, 2), "rss_jvm_gib": round(peaks["jvm"] / gib, 2),
        "rss_other_gib": round(peaks["other"] / gib, 2), "rss_total_gib": round(peaks["total"] / gib, 2),
        "lakehouse_gib": round(du(lakehouse) / gib, 2), "tables": written(name, lakehouse),
        "load_avg": [round(x, 1) for x in os.getloadavg()],
    }
    print("   " + json.dumps(row), flush=True)
    return row


def run(args: argparse.Namespace) -> None:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lakehouse, logs = work / "lakehouse", work / "logs"
    logs.mkdir(exist_ok=True)
    results_file = work / RESULTS
    state = json.loads(results_file.read_text()) if results_file.exists() else {}
    raw = Path(args.raw).resolve() if args.raw else work / "raw"
    env = dict(os.environ)
    if args.redis:
        env["UBP_REDIS_URL"] = args.redis
    if not (raw / "_truth" / "meta.json").exists():
        row = run_stage("demo-data", ["demo-data", "--out", str(raw), "--scale", "challenge",
                                      "--users", str(args.users)], lakehouse, logs, env)
        state["demo_data"] = {**row, "lakehouse_gib": None, "raw_gib": round(du(raw) / 2**30, 2)}
    meta = json.loads((raw / "_truth" / "meta.json").read_text())
    state.update({
        "users": int(meta.get("users") or args.users), "raw": str(raw),
        "events": int(sum(v for k, v in (meta.get("rows") or {}).items()
                          if k in ("product_buy", "add_to_cart", "remove_from_cart", "page_visit", "search_query"))),
        "train_users": args.train_users, "epochs": args.epochs, "members": list(args.members),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB",
    })
    done = {r["stage"]: r for r in state.get("stages", [])}
    for name in args.redo or ():
        done.pop(name, None)
    rows = []
    t0 = time.perf_counter()
    for name, argv in stages(args, raw):
        if name in done:
            rows.append(done[name])
            continue
        if name in (args.redo or ()) and argv[0] in ("train-user-model", "publish"):
            argv = [*argv, "--force" if argv[0] == "train-user-model" else "--full"]  # else it finds its work done
        rows.append(run_stage(name, argv, lakehouse, logs, env))
        state.update({"stages": rows + [r for r in done.values() if r not in rows],
                      "date": datetime.now(UTC).isoformat(timespec="seconds")})
        results_file.write_text(json.dumps(state, indent=2))
    state["stages"] = rows
    state["this_invocation_s"] = round(time.perf_counter() - t0, 1)
    results_file.write_text(json.dumps(state, indent=2))
    print(report([work]))


def _sample_of(row: dict) -> int | None:
    """The `--train-users` a stage ran with (None: not a training stage)."""
    argv = row.get("argv") or []
    return int(argv[argv.index("--train-users") + 1]) if "--train-users" in argv else None


def report(dirs: list[Path]) -> str:
    """Markdown: one row per stage, a column group per run (users ascending), growth of the last over the first."""
    runs = sorted((json.loads((Path(d) / RESULTS).read_text()) for d in dirs), key=lambda s: s["users"])
    names = list(dict.fromkeys(s["stage"] for r in sorted(runs, key=lambda r: -len(r["stages"]))
                               for s in r["stages"]))
    head = ["stage"]
    for r in runs:
        k = f"{r['users'] // 1000}k"
        head += [f"{k} wall s (CPU s)", f"{k} peak RSS GiB (driver / JVM / other)", f"{k} lakehouse GiB"]
    if len(runs) > 1:
        head += ["time growth: wall (CPU)", "memory growth"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        samples = []  # each run's training sample (a stage is compared across runs only when they match)
        for r in runs:
            n = next((_sample_of(s) for s in r["stages"] if s["stage"] == name), None)
            if n is not None:
                samples.append(f"~{n:,}")
        label = f" ({' / '.join(dict.fromkeys(samples))} users)" if samples else ""
        cells = [name + label]
        per = []
        for r in runs:
            row = next((s for s in r["stages"] if s["stage"] == name), None)
            per.append(row)
            cells += ["-"] * 3 if row is None else [
                f"{row['wall_s']:,.0f} ({row['cpu_s']:,.0f})",
                f"{row['rss_total_gib']:.2f} ({row['rss_driver_gib']:.2f} / {row['rss_jvm_gib']:.2f} / "
                f"{row['rss_other_gib']:.2f})", f"{row['lakehouse_gib']:.2f}"]
        if len(runs) > 1:
            a, b = per[0], per[-1]
            cells += ["-", "-"] if a is None or b is None or len(set(samples)) > 1 else [
                f"{b['wall_s'] / max(a['wall_s'], 0.1):.1f}x ({b['cpu_s'] / max(a['cpu_s'], 0.1):.1f}x)",
                f"{b['rss_total_gib'] / max(a['rss_total_gib'], 0.01):.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    totals = ["**all stages**"]
    for r in runs:
        totals += [f"**{sum(s['wall_s'] for s in r['stages']) / 60:,.0f} min**",
                   f"max {max(s['rss_total_gib'] for s in r['stages']):.2f}", f"{r['stages'][-1]['lakehouse_gib']:.2f}"]
    if len(runs) > 1:  # growth over the stages both runs finished with the same arguments
        argvs = [{s["stage"]: _sample_of(s) for s in r["stages"]} for r in (runs[0], runs[-1])]
        both = {n for n in argvs[0] if n in argvs[1] and argvs[0][n] == argvs[1][n]}
        ta, tb = (sum(s["wall_s"] for s in r["stages"] if s["stage"] in both) for r in (runs[0], runs[-1]))
        ca, cb = (sum(s["cpu_s"] for s in r["stages"] if s["stage"] in both) for r in (runs[0], runs[-1]))
        ma, mb = (max(s["rss_total_gib"] for s in r["stages"] if s["stage"] in both) for r in (runs[0], runs[-1]))
        totals += [f"{tb / ta:.1f}x ({cb / ca:.1f}x) over {len(both)} stages", f"{mb / ma:.2f}x"]
    lines.append("| " + " | ".join(totals) + " |")
    facts = "; ".join(f"{r['users']:,} users, {r['events']:,} events, models trained {r['epochs']} epoch(s) on the "
                      "sample in brackets" for r in runs)
    return "\n".join(lines) + f"\n\n{facts}; {runs[-1]['machine']}.\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000, help="users of the generated challenge-scale demo")
    ap.add_argument("--work", default="/tmp/ubp-scale", help="raw data, lakehouse, logs and results go here")
    ap.add_argument("--raw", default=None, help="an existing `ubp demo-data` folder instead of generating one")
    ap.add_argument("--train-users", type=int, default=20_000, help="the models' hashed user sample")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per model (on the sample)")
    ap.add_argument("--members", nargs="+", default=list(MEMBERS), help="GRU-AE members to train and embed")
    ap.add_argument("--item-text", action="store_true",
                    help="encode the product texts with MiniLM (default: name codes, as the challenge's data has no "
                         "text; MiniLM on 2 CPU cores needs ~1-2 hours for 1.26M texts)")
    ap.add_argument("--redis", default=os.environ.get("UBP_REDIS_URL"), help="host:port: also publish into Redis")
    ap.add_argument("--redo", nargs="*", help="stage names to run again (a user model with --force: the new version "
                    "also aligns to the serving one; a publish with --full)")
    ap.add_argument("--clean", action="store_true", help="start over: delete WORK's lakehouse and results")
    ap.add_argument("--report", nargs="+", metavar="WORK", help="print the table of these runs and exit")
    args = ap.parse_args()
    if args.report:
        print(report([Path(d) for d in args.report]))
        return
    if args.clean:
        shutil.rmtree(Path(args.work) / "lakehouse", ignore_errors=True)
        (Path(args.work) / RESULTS).unlink(missing_ok=True)
    run(args)


if __name__ == "__main__":
    main()
