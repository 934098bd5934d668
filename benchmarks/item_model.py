"""Benchmark the item model: content encoding, training sequences/s per variant, the paper-style evaluation table
(every variant x every training seed on one temporal split: mean ± std, and a paired bootstrap CI of delta vs
content-init fine-tuned on the same users) and gold item vectors, on the default demo data.

    flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/item_model.py [--work DIR] [--max-epochs 40]
        [--seeds 0,1,2] [--variants history_avg,content_finetune,frozen,delta] [--users 3000] [--reuse]

Steps: `generate_demo_data` (default arguments) -> ingest -> sequences -> item_content -> evaluate_item_model
(history_avg, id_only, content_finetune, frozen, delta) -> item_vectors. Results: stdout and `<work>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ubp-bench-item"))
    ap.add_argument("--max-epochs", type=int, default=40, help="cap per variant (early stopping, patience 5)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds: table cells are mean ± std over them")
    ap.add_argument("--variants", default="history_avg,id_only,content_finetune,frozen,delta")
    ap.add_argument("--delta-max", type=float, default=0.5)
    ap.add_argument("--users", type=int, default=None, help="demo users (default: the demo's default, 3,000)")
    ap.add_argument("--reuse", action="store_true", help="reuse the lakehouse of a previous run if present")
    ap.add_argument("--coherent-segments", action="store_true",
                    help="demo data whose segments shop related departments (item text predicts behaviour)")
    args = ap.parse_args()
    os.environ.setdefault("UBP_NO_PROGRESS", "1")
    os.environ.setdefault("UBP_TORCH_THREADS", "1")  # the 2 shared cores are oversubscribed: 1 thread is faster

    import shutil

    import torch

    from ubp.config import Settings
    from ubp.demo_data import generate_demo_data
    from ubp.stages.ingest import ingest
    from ubp.stages.item_content import item_content
    from ubp.stages.item_vectors import item_vectors
    from ubp.stages.sequences import sequences
    from ubp.stages.train_item_model import evaluate_item_model

    load_at_start = os.getloadavg()
    raw, lake = args.work / "raw", args.work / "lakehouse"
    settings = Settings(lakehouse=lake)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (args.reuse and (lake / "silver" / "user_sequences").exists()):
        shutil.rmtree(args.work, ignore_errors=True)
        sizes = {} if args.users is None else {"users": args.users}
        demo = generate_demo_data(raw, coherent_segments=args.coherent_segments, **sizes)
        timings["demo_data"] = time.perf_counter() - t
        t = time.perf_counter()
        ingest(settings, raw)
        timings["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        sequences(settings)
        timings["sequences"] = time.perf_counter() - t
    else:
        demo = json.loads((raw / "_truth" / "meta.json").read_text())
    t = time.perf_counter()
    content = item_content(settings)
    timings["item_content"] = time.perf_counter() - t
    t = time.perf_counter()
    content_again = item_content(settings)
    timings["item_content_rerun"] = time.perf_counter() - t
    t = time.perf_counter()
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    ev = evaluate_item_model(settings, variants=variants, max_epochs=args.max_epochs, seeds=seeds,
                             delta_max=args.delta_max)
    timings["evaluate_all_variants"] = time.perf_counter() - t
    t = time.perf_counter()
    vec = item_vectors(settings)
    timings["item_vectors"] = time.perf_counter() - t

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} torch threads",
        "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(),
        "demo": {k: demo.get(k) for k in ("users", "skus", "new_skus", "rows")},
        "item_content": {k: content.get(k) for k in ("catalog_items", "encoded", "encoded_text",
                                                     "encoded_name_codes", "items_per_s")},
        "item_content_rerun_encoded": content_again["encoded"],
        "seeds": list(seeds), "delta_max": args.delta_max, "max_epochs": args.max_epochs,
        "runs": ev["runs"], "results": ev["results"], "comparisons": ev["comparisons"], "table": ev["table"],
        "item_vectors": {k: vec[k] for k in ("rows", "cold", "warm")},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2, default=str))
    print(ev["table"])


if __name__ == "__main__":
    main()
