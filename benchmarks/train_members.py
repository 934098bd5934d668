"""Benchmark: the GRU-AE members trained to their early-stopping point, all together, on a CPU machine.

The target (docs/benchmarks.md): `day_event`, `week_all`, `all_fields` and `sku_text` on the 10,000-user demo train
to their early-stopping point (each member's epoch cap and patience; the large members at their CPU size) in under
an hour on 2 cores. Lanes run at once, one process and one torch thread each, members in a lane one after another
(default: `day_event` alone in one lane, the other three in the other). Each member trains on the lakehouse's
current `user_sequences`; its version goes to the lakehouse's registry unpromoted (the serving versions do not
change). Prints one JSON line per member (seconds, epochs run, best epoch, stopped early,
tokens/s, load average) and the wall time of the whole run.

Run: .venv/bin/python benchmarks/train_members.py --lakehouse DIR [--namespace NS]
         [--lanes day_event/week_all,all_fields,sku_text] [--max-batches N (a smoke run)]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def train_lane(lakehouse: str, namespace: str | None, members: list[str], max_batches: int | None) -> None:
    """One lane: train `members` one after another in this process; one JSON line per member on stdout."""
    os.environ["UBP_TORCH_THREADS"] = "1"
    from ubp.config import Settings
    from ubp.log import setup_logging
    from ubp.stages.train_user_model import train_user_model

    settings = Settings(lakehouse=lakehouse)
    if namespace:
        settings = settings.with_namespace(namespace)
    setup_logging(settings.logs_dir)
    for member in members:
        t0 = time.time()
        out = train_user_model(settings, member=member, seed=0, promote="never", show_progress=False,
                               max_batches=max_batches)
        m = out.get("metrics") or {}
        print(json.dumps({"member": member, "seconds": round(time.time() - t0, 1), "version": out.get("version"),
                          **{k: m.get(k) for k in ("epochs_run", "best_epoch", "stopped_early", "val_loss")},
                          "load": [round(x, 2) for x in os.getloadavg()]}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lakehouse", required=True)
    ap.add_argument("--namespace", default=None, help="e.g. an evaluation namespace `_eval/<as-of>`")
    ap.add_argument("--lanes", default="day_event/week_all,all_fields,sku_text",
                    help="lanes separated by '/', members in a lane by ','")
    ap.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (a smoke run)")
    ap.add_argument("--lane", default=None, help=argparse.SUPPRESS)  # internal: run one lane in this process
    args = ap.parse_args()
    if args.lane is not None:
        train_lane(args.lakehouse, args.namespace, args.lane.split(","), args.max_batches)
        return
    t0 = time.time()
    procs = []
    for lane in args.lanes.split("/"):
        cmd = [sys.executable, __file__, "--lakehouse", args.lakehouse, "--lane", lane]
        cmd += ["--namespace", args.namespace] if args.namespace else []
        cmd += ["--max-batches", str(args.max_batches)] if args.max_batches else []
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a lane failed (exit {p.returncode}); see the lakehouse's _logs")
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:
        print(json.dumps(r))
    print(json.dumps({"wall_s": round(time.time() - t0, 1), "lanes": args.lanes, "machine": platform.machine(),
                      "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
