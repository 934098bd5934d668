"""GPU check (run on a lent GPU machine; models/ only, no Spark): the user model's training step and encode, and the
item model's delta training, on CUDA, with the auto device the training code uses.

Inputs are prepared here, where Delta is readable: `benchmarks/gpu_check.py --prepare` writes the exact length-bucketed
batches the user-model loop streams from the 3,000-user bench lakehouse into `.gpu/` (git-ignored; carried to the GPU
machine). There: `python3 benchmarks/gpu_check.py --out DIR`. Measures (CUDA-synchronised wall clock):
- GRU-AE `small` and `paper` presets: training tokens/s (forward, 5 heads, backward, Adam) and encode users/s;
- SASRec delta variant (50k items, 40k warm): training sequences/s with the per-step renorm, then checks that every
  delta row is within delta_max and that cold rows are exactly their content vectors, on the GPU; once more at a
  50x learning rate so that many rows reach the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GPU_DIR = REPO / ".gpu"


def prepare(n_batches: int = 10, batch_size: int = 256) -> None:
    import tempfile

    sys.path.insert(0, str(REPO / "tests" / "helpers"))
    os.environ["UBP_NO_PROGRESS"] = "1"
    from safetensors.torch import save_file
    from user_model_fixtures import bench_job_batches

    from ubp.config import Settings

    settings = Settings(lakehouse=Path(tempfile.mkdtemp(prefix="ubp-gpu-prep-")))
    cfg, _, batches = bench_job_batches(settings, 3000, "small", batch_size, n_batches)
    tensors = {f"b{n}.{k}": v.contiguous() for n, b in enumerate(batches) for k, v in b.items()}
    GPU_DIR.mkdir(exist_ok=True)
    save_file(tensors, str(GPU_DIR / "batches.safetensors"))
    (GPU_DIR / "meta.json").write_text(json.dumps({"vocab_sizes": cfg.vocab_sizes, "n_batches": len(batches),
                                                   "batch_size": batch_size}))
    print(f"wrote {len(batches)} batches to {GPU_DIR}")


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def user_model(dev, preset: str, batches: list[dict], sizes: dict, reps: int = 3) -> dict:
    import torch
    from ubp.models.common import to_device
    from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder

    cfg = GRUAEConfig.preset(preset, sizes, batch_size=int(batches[0]["lengths"].shape[0]))
    torch.manual_seed(0)
    model = GRUAutoencoder(cfg).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    on_dev = [to_device(b, dev) for b in batches]

    def step(b) -> None:
        loss = model(b)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in on_dev[:2]:  # warm-up (cuDNN autotune, allocator)
        step(b)
    _sync(dev)
    t0, tokens = time.perf_counter(), 0
    for _ in range(reps):
        for b in on_dev:
            step(b)
            tokens += int(b["lengths"].sum())
    _sync(dev)
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        model.encode(on_dev[0])
        _sync(dev)
        t0, users = time.perf_counter(), 0
        for _ in range(reps):
            for b in on_dev:
                z = model.encode(b)
                users += z.shape[0]
        _sync(dev)
    enc_s = time.perf_counter() - t0
    return {"preset": preset, "params": sum(p.numel() for p in model.parameters()),
            "train_tokens_per_s": round(tokens / train_s), "encode_users_per_s": round(users / enc_s),
            "latent_dim": int(z.shape[1]), "finite_latents": bool(torch.isfinite(z).all())}


def item_model(dev, n_items: int = 50_000, n_warm: int = 40_000, steps: int = 60, batch: int = 128,
               lr: float | None = None) -> dict:
    import torch
    import torch.nn.functional as F
    from ubp.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    d = 64
    content = F.normalize(torch.randn(n_items + 1, d), dim=1)
    content[0] = 0
    cfg = SASRecConfig(n_items=n_items + 1, n_warm=n_warm, d_model=d, variant="delta", delta_max=0.5,
                       batch_size=batch, **({"lr": lr} if lr else {}))
    model = SASRec(cfg, content).to(dev).train()
    opt = torch.optim.Adam(model.param_groups(), lr=cfg.lr)
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(1, n_warm + 1, (steps, batch, cfg.max_len + 1), generator=g)

    def step(s) -> None:
        s = s.to(dev, non_blocking=True)
        loss = model.loss(s[:, :-1], s[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.items.constrain_()

    for s in seqs[:3]:
        step(s)
    _sync(dev)
    t0 = time.perf_counter()
    for s in seqs:
        step(s)
    _sync(dev)
    sec = time.perf_counter() - t0
    delta = model.items.delta.detach()
    norms = delta.norm(dim=1)
    vectors = model.item_vectors()
    cold = vectors[n_warm + 1 :].cpu()
    return {"n_items": n_items, "n_warm": n_warm, "lr": cfg.lr, "train_sequences_per_s": round(steps * batch / sec),
            "max_delta_norm": round(float(norms.max()), 6),
            "delta_within_bound": bool((norms <= cfg.delta_max + 1e-5).all()),
            "rows_at_bound": int((norms > cfg.delta_max - 1e-4).sum()),
            "cold_rows_equal_content": bool(torch.equal(cold, content[n_warm + 1 :]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="write .gpu/ inputs (here, where Delta is readable)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.prepare:
        prepare()
        return
    import torch
    from safetensors.torch import load_file
    from ubp.models.common import pick_device

    dev = pick_device()
    meta = json.loads((GPU_DIR / "meta.json").read_text())
    flat = load_file(str(GPU_DIR / "batches.safetensors"))
    batches = [{k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(f"b{i}.")}
               for i in range(meta["n_batches"])]
    res = {"device": str(dev), "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
           "torch": torch.__version__, "python": platform.python_version(),
           "batch_size": meta["batch_size"], "batches": meta["n_batches"],
           "mean_tokens_per_user": round(float(torch.cat([b["lengths"] for b in batches]).float().mean()), 1)}
    for preset in ("small", "paper"):
        res[f"user_{preset}"] = user_model(dev, preset, batches, meta["vocab_sizes"])
        print(json.dumps(res[f"user_{preset}"]), flush=True)
    res["item_delta"] = item_model(dev)
    print(json.dumps(res["item_delta"]), flush=True)
    # a learning rate 50x the default drives many deltas into the bound: the renorm must still hold every row
    res["item_delta_bound"] = item_model(dev, lr=0.05)
    print(json.dumps(res["item_delta_bound"]), flush=True)
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
