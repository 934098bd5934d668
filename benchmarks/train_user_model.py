"""Benchmark: GRU-AE training throughput (non-pad tokens/s).

Side by side in one process, same model init, same batches:
  1. compute limit: the model's full step (forward, 5 heads, backward, Adam) on batches already in memory;
  2. the real training loop (`models.train_user.train`) streaming the Delta table (reader -> chunk -> bucketed
     collate -> prefetch thread -> step), ratio 2/1 (target >= 0.8);
  3. packing: bucketed+packed vs random batches packed vs random batches padded (the seed code: GRU over the padded
     grid and every head on every position), and the step without the big heads (where the time goes).

Run: flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/train_user_model.py [--users 3000 --steps 8]
The glibc allocator settings below are applied by re-executing this script (pass --no-malloc-env to compare).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "17179869184",
              "MALLOC_TOP_PAD_": "1073741824"}
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(REPO))


def _steps(model, opt, batches, padded: bool = False) -> tuple[float, int]:
    """Run one optimizer step per batch; return (seconds, real tokens)."""
    import torch
    from ubp.models.common import to_device

    dev = torch.device("cpu")
    tokens = 0
    t0 = time.perf_counter()
    for b in batches:
        b = to_device(b, dev)
        loss = _padded_loss(model, b) if padded else model(b)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(b["lengths"].sum())
    return time.perf_counter() - t0, tokens


def _padded_loss(model, b):
    """The seed code's step: both GRUs over the right-padded grid, every head on every position (CE ignores pad)."""
    import torch.nn.functional as F

    from ubp.tables import PAD_ID

    emb = model.drop(model.embed(b))  # [B, T, E]
    _, h = model.encoder(emb)  # pads included: the latent is wrong, but this is the cost we compare against
    dec_in = emb[:, :-1] + model.latent_to_input(h[-1])[:, None, :]
    out, _ = model.decoder(dec_in, h)  # [B, T-1, H]
    loss = 0.0
    for f in model.config.target_fields:
        logits = model.heads[f](out)  # [B, T-1, V]
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[f][:, 1:].reshape(-1),
                                      ignore_index=PAD_ID)
    return loss


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="small")
    p.add_argument("--no-malloc-env", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    if not a.no_malloc_env and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    import numpy as np
    import torch
    from ubp.models.gru_ae import GRUAutoencoder
    from ubp.models.train_user import train
    from ubp.models.user_data import SequenceChunk
    from user_model_fixtures import bench_job_batches

    from ubp import reader
    from ubp.config import Settings

    torch.set_num_threads(a.threads)
    os.environ["UBP_TORCH_THREADS"] = str(a.threads)
    os.environ["UBP_NO_PROGRESS"] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="ubp-bench-train-"))
    settings = Settings(lakehouse=tmp)
    t = time.perf_counter()
    # the exact batches the real loop will see (same stream, same seed) materialised in memory
    cfg, job, batches = bench_job_batches(settings, a.users, a.preset, a.batch_size, a.steps)
    path, version = job.sequences_path, job.table_version
    print(f"wrote {a.users} users in {time.perf_counter() - t:.1f}s", flush=True)
    results: dict = {"users": a.users, "batch_size": a.batch_size, "steps": a.steps, "threads": a.threads,
                     "preset": a.preset, "malloc_env": not a.no_malloc_env,
                     "mean_len": float(np.mean([float(b["lengths"].float().mean()) - 2 for b in batches]))}

    def fresh():
        torch.manual_seed(0)
        m = GRUAutoencoder(cfg).train()
        return m, torch.optim.Adam(m.parameters(), lr=cfg.lr)

    m, o = fresh()
    sec, tok = _steps(m, o, batches)
    results["in_memory_tok_s"] = tok / sec
    print(f"in-memory step:      {tok / sec:8.0f} tok/s ({sec:.1f}s)", flush=True)

    torch.manual_seed(0)
    out = train(job)
    rec = out["history"][0]
    results["real_loop_tok_s"] = rec["train_tokens"] / rec["train_seconds"]
    results["ratio_real_over_memory"] = results["real_loop_tok_s"] / results["in_memory_tok_s"]
    print(f"real loop (Delta):   {results['real_loop_tok_s']:8.0f} tok/s  ratio {results['ratio_real_over_memory']:.2f}",
          flush=True)

    # packing / padding on random (not length-bucketed) batches of the same users
    chunk = None
    for rb in reader.iter_batches(path, version, batch_size=a.batch_size * a.steps):
        chunk = SequenceChunk.from_arrow(rb, cfg.input_fields, cfg.max_len, cfg.events)
        break
    rng = np.random.default_rng(0)
    order = rng.permutation(len(chunk))
    n_rand = max(2, a.steps // 2)
    random_batches = [chunk.collate(order[i * a.batch_size:(i + 1) * a.batch_size]) for i in range(n_rand)]
    m, o = fresh()
    sec, tok = _steps(m, o, random_batches)
    results["random_packed_tok_s"] = tok / sec
    m, o = fresh()
    sec, tok = _steps(m, o, random_batches, padded=True)
    results["random_padded_tok_s"] = tok / sec
    print(f"random batches packed {results['random_packed_tok_s']:8.0f} tok/s, padded (seed code) "
          f"{results['random_padded_tok_s']:8.0f} tok/s", flush=True)

    # where the time goes: the same step with only the tiny event-type head
    torch.manual_seed(0)
    m = GRUAutoencoder(dataclasses.replace(cfg, target_fields=("event_type",)))
    o = torch.optim.Adam(m.parameters(), lr=cfg.lr)
    sec, tok = _steps(m, o, batches)
    results["no_big_heads_tok_s"] = tok / sec
    print(f"without the 4 big heads: {tok / sec:8.0f} tok/s", flush=True)
    results["machine"] = f"{platform.node()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    print(json.dumps(results, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
