"""Benchmark: training-step throughput of each user-model member, full softmax vs sampled softmax heads.

Side by side in one process, per member: the same batches (the training loop's own length-bucketed stream of a
synthetic lakehouse with the demo's vocabulary sizes: 5,000 skus and urls), the same initial weights, one optimizer
step per batch, non-pad tokens per second. "full" trains every head with the full softmax; "sampled" trains the
heads with more than 4 x K classes (sku, url) on the target plus K = 256 shared uniform negatives (what the
members use); validation always uses the full softmax. Large members run at their CPU size (`models.members`)
unless `--full-size`.

Run: .venv/bin/python benchmarks/member_steps.py [--users 3000 --steps 8 --threads 1 --members next_sku,next_url]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(REPO))


def _tok_s(model, batches, repeats: int = 2) -> float:
    """Tokens per second of full training steps over `batches` (best of `repeats` passes, fresh optimizer)."""
    import torch

    best = 0.0
    for _ in range(repeats):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        tokens, t0 = 0, time.perf_counter()
        for b in batches:
            loss, _ = model({k: v for k, v in b.items() if k != "client_id"})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tokens += int(b["lengths"].sum())
        best = max(best, tokens / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--members", default="small,day_event,week_all,all_fields")
    p.add_argument("--full-size", action="store_true", help="the members' full sizes, not their CPU sizes")
    p.add_argument("--json", default=None)
    a = p.parse_args()

    import torch
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.members import member
    from ubp.models.user_model import build_user_model
    from user_model_fixtures import bench_job_batches

    from ubp.config import Settings

    torch.set_num_threads(a.threads)
    settings = Settings(lakehouse=Path(tempfile.mkdtemp(prefix="ubp-bench-members-")))
    rows = []
    for name in a.members.split(","):
        spec = member(name)
        cfg0, _, batches = bench_job_batches(settings, a.users, name, a.batch_size, a.steps)
        cfg = GRUAEConfig.preset(name, cfg0.vocab_sizes, **({} if a.full_size else spec.cpu), batch_size=a.batch_size)
        speeds = {}
        for label, k in (("full", 0), ("sampled", 256)):
            torch.manual_seed(0)
            model = build_user_model(GRUAEConfig.from_dict({**cfg.to_dict(), "sampled_negatives": k})).train()
            speeds[label] = _tok_s(model, batches)
        row = {"member": name, "size": f"{cfg.emb_dim}/{cfg.hidden}/{cfg.n_layers}", "full_tok_s": speeds["full"],
               "sampled_tok_s": speeds["sampled"], "speedup": speeds["sampled"] / speeds["full"]}
        rows.append(row)
        print(f"{name:<11} {row['size']:<11} full {row['full_tok_s']:8.0f} tok/s   sampled {row['sampled_tok_s']:8.0f}"
              f" tok/s   x{row['speedup']:.2f}", flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {torch.get_num_threads()} thread(s)",
           "users": a.users, "batch_size": a.batch_size, "steps": a.steps, "full_size": a.full_size, "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
