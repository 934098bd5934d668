"""Training loop of a user model (GRU autoencoder or next-event transformer, `build_user_model`), streaming one
pinned version of the silver `user_sequences` table.

`train(job)` runs in a work directory that is a pure function of (config, seed, table version, vocabulary), so
running the same command again after a kill finds the same directory and resumes from its last checkpoint
(one per epoch: weights, optimizer, early-stopping state, metric history). Under `torchrun` (env WORLD_SIZE > 1)
the same code runs DistributedDataParallel (gloo on CPU, nccl on CUDA): every rank streams the same table with the
same seed and takes every world_size-th length-bucketed batch (disjoint users, the same number of steps on every
rank; an incomplete last round is dropped); only rank 0 writes checkpoints, metrics and the registry version.
Test hooks (`ubp/hooks.py`): UBP_TRAIN_TRACE_DIR makes every rank append, per epoch, the client ids it trained on to
`<dir>/rank<r>.jsonl` (the DDP test checks the shards with it); UBP_TRAIN_THROTTLE_S sleeps per batch (kill/resume).

The command-line entry (single process or torchrun) is the stage's: `python -m ubp.stages.train_user_model --help`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ubp.models.common import (
    CheckpointManager,
    EarlyStopping,
    MetricsWriter,
    all_reduce_sum,
    atomic_write_text,
    autocast_context,
    barrier,
    init_distributed,
    pick_device,
    plot_loss_curve,
    progress,
    save_weights,
    seed_everything,
    to_device,
    unwrap,
)
from ubp.models.gru_ae import GRUAEConfig, loss_weight
from ubp.models.user_data import columns_for, prefetch, stream_batches
from ubp.models.user_model import build_user_model

from ubp.hooks import current as current_hooks
from ubp.log import get_logger

log = get_logger("ubp.train_user")


@dataclass
class TrainJob:
    """Everything one training run depends on (the work dir is derived from it by the caller)."""

    config: GRUAEConfig
    sequences_path: str
    table_version: int
    vocab_version: str
    work_dir: Path
    seed: int = 0
    val_fraction: float = 0.1  # 0 = validate on the training users (tiny data, overfit checks)
    sample_fraction: float = 1.0  # < 1: train and validate on this stable share of the users (`in_sample`)
    grad_clip: float = 1.0
    max_batches: int | None = None  # per epoch (benchmarks)
    show_progress: bool = True
    init_weights: str | None = None  # warm start from these safetensors (same vocabulary)
    extra: dict[str, Any] = field(default_factory=dict)


def _reader(job: TrainJob):
    from ubp.reader import iter_batches

    cols = columns_for(job.config.input_fields + job.config.target_fields)

    def read():
        return iter_batches(job.sequences_path, version=job.table_version, columns=cols, batch_size=4096)

    return read


def evaluate(model: torch.nn.Module, batches, device: torch.device) -> dict[str, float]:
    """Validation loss (sum over fields of the token-weighted mean CE, each divided by log(its classes) with
    `loss_norm`, as in training), per-field mean CE and accuracy."""
    model.eval()
    config = unwrap(model).config
    fields = list(config.target_fields)
    sums = {f: [0.0, 0.0, 0.0] for f in fields}  # loss*count, correct, count
    with torch.no_grad():
        for batch in batches:
            with autocast_context(device):
                _, stats = unwrap(model)(to_device(batch, device))
            for f, s in stats.items():
                sums[f][0] += float(s["loss"]) * s["count"]
                sums[f][1] += float(s["correct"])
                sums[f][2] += s["count"]
    flat = all_reduce_sum([x for f in fields for x in sums[f]], device)
    out: dict[str, float] = {}
    total = 0.0
    for i, f in enumerate(fields):
        loss_sum, correct, count = flat[3 * i: 3 * i + 3]
        if count:
            out[f"val_loss_{f}"] = loss_sum / count
            out[f"val_acc_{f}"] = correct / count
            total += loss_sum / count * loss_weight(config, f)
    out["val_loss"] = total if any(flat[3 * i + 2] for i in range(len(fields))) else math.nan
    return out


def validation_metrics(model: torch.nn.Module, sequences_path: str, table_version: int, val_fraction: float,
                       batch_size: int = 256) -> dict[str, float]:
    """`evaluate` of one model on the validation users (`is_val_user`) of one table version, in this process:
    two versions scored by it are compared on the same users and the same data."""
    from ubp.reader import iter_batches

    cfg = unwrap(model).config
    cols = columns_for(cfg.input_fields + cfg.target_fields)

    def read():
        return iter_batches(sequences_path, version=table_version, columns=cols, batch_size=4096)

    batches = stream_batches(read, cfg.input_fields, batch_size=batch_size, max_len=cfg.max_len, split="val",
                             val_fraction=val_fraction, shuffle=False, events=cfg.events)
    return evaluate(model, batches, next(model.parameters()).device)


def train(job: TrainJob) -> dict[str, Any]:
    """Train (or resume) and return {"best_epoch", "val_loss", "history", "best_weights", ...}."""
    from ubp.reader import check_vocab_version

    device = pick_device()
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    dist = init_distributed(device)
    if dist.enabled:
        log.info("rank %d/%d on %s (backend %s)", dist.rank, dist.world_size, device,
                 torch.distributed.get_backend())
    if os.environ.get("UBP_TORCH_THREADS"):  # on a shared CPU box, fewer threads than cores avoids spin-waits
        torch.set_num_threads(int(os.environ["UBP_TORCH_THREADS"]))
    seed_everything(job.seed)
    job.work_dir.mkdir(parents=True, exist_ok=True)
    run_file = job.work_dir / "run.json"
    run_meta = {"sequences_path": job.sequences_path, "table_version": job.table_version,
                "vocab_version": job.vocab_version, "seed": job.seed, "config": job.config.to_dict()}
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        check_vocab_version(previous["vocab_version"], job.vocab_version)
    elif dist.is_main:  # atomic: another rank may be reading it right now (it finds the same run)
        atomic_write_text(run_file, json.dumps(run_meta, indent=2))
    barrier()

    model = build_user_model(job.config).to(device)
    if job.init_weights:
        from ubp.models.common import load_weights

        load_weights(model, job.init_weights, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=job.config.lr)
    ckpt = CheckpointManager(job.work_dir / "checkpoints")
    early = EarlyStopping(patience=job.config.patience)
    metrics = MetricsWriter(job.work_dir / "metrics.jsonl")
    history: list[dict[str, Any]] = []
    start_epoch, step, resumed_from = 0, 0, None
    state = ckpt.load_latest(model, opt, device=device)
    if state is not None:
        start_epoch, step, resumed_from = state.epoch + 1, state.step, state.epoch
        early.load_state_dict(state.extra.get("early", {}))
        history = list(state.extra.get("history", []))
        if dist.is_main:  # drop records of a half-finished epoch: the history is the checkpoint's
            metrics.path.write_text("".join(json.dumps(r) + "\n" for r in history))
        log.info("resuming from checkpoint epoch %d (step %d) in %s", state.epoch, state.step, job.work_dir)
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    read = _reader(job)
    cfg = job.config
    val_split = "val" if job.val_fraction > 0 else "train"

    hooks = current_hooks()
    trace_dir, throttle_s = hooks.train_trace_dir, hooks.train_throttle_s

    def batches(split: str, epoch: int, shuffle: bool):
        # even steps for training (DDP all-reduces every step); validation only all-reduces the sums at the end
        it = stream_batches(read, cfg.input_fields, batch_size=cfg.batch_size, max_len=cfg.max_len, split=split,
                            val_fraction=job.val_fraction, seed=job.seed * 100_003 + epoch, rank=dist.rank,
                            world_size=dist.world_size, shuffle=shuffle, even=shuffle,
                            sample_fraction=job.sample_fraction, events=cfg.events)
        return prefetch(it)

    stopped_early = early.should_stop
    for epoch in range(start_epoch, cfg.max_epochs):
        if stopped_early:
            break
        model.train()
        t0 = time.perf_counter()
        loss_sum, tokens, n_batches = 0.0, 0, 0
        seen: list[np.ndarray] = []
        bar = progress(desc=f"epoch {epoch}", disable=not (job.show_progress and dist.is_main))
        join = model.join() if dist.enabled else _null()
        with join:
            for batch in batches("train", epoch, shuffle=True):
                if job.max_batches is not None and n_batches >= job.max_batches:
                    break
                if trace_dir:
                    seen.append(batch["client_id"].numpy())
                b = to_device(batch, device)
                with autocast_context(device):
                    loss, _ = model(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if job.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip)
                opt.step()
                n_tok = int(batch["lengths"].sum())
                loss_sum += float(loss.detach()) * n_tok
                tokens += n_tok
                n_batches += 1
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                if throttle_s:
                    time.sleep(throttle_s)
        bar.close()
        train_seconds = time.perf_counter() - t0
        own_steps = [0.0] * dist.world_size
        own_steps[dist.rank] = float(n_batches)
        loss_sum, tokens_all, *steps_per_rank = all_reduce_sum([loss_sum, float(tokens), *own_steps], device)
        if dist.enabled:
            log.info("rank %d/%d epoch %d: %d steps, %d tokens", dist.rank, dist.world_size, epoch, n_batches, tokens)
        if trace_dir:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            ids = np.concatenate(seen).tolist() if seen else []
            with open(Path(trace_dir) / f"rank{dist.rank}.jsonl", "a") as fh:
                fh.write(json.dumps({"rank": dist.rank, "world_size": dist.world_size, "pid": os.getpid(),
                                     "epoch": epoch, "steps": n_batches, "client_ids": ids}) + "\n")
        val = evaluate(model, batches(val_split, epoch, shuffle=False), device)
        record = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(tokens_all, 1.0), **val,
                  "train_tokens": int(tokens_all), "train_seconds": round(train_seconds, 3),
                  "tokens_per_s": round(tokens_all / max(train_seconds, 1e-9), 1), "lr": cfg.lr,
                  "world_size": dist.world_size, "steps_per_rank": [int(x) for x in steps_per_rank]}
        if resumed_from is not None and epoch == start_epoch:
            record["resumed_from"] = resumed_from
        improved = early.step(val["val_loss"] if math.isfinite(val["val_loss"]) else record["train_loss"], epoch)
        record["best"] = improved
        history.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()})
        if dist.is_main:
            if improved:
                save_weights(model, job.work_dir / "best.safetensors")
            ckpt.save(model, opt, epoch, step, extra={"early": early.state_dict(), "history": history,
                                                      "written_by": {"rank": dist.rank, "pid": os.getpid()}})
            metrics.write(history[-1])
            if train_seconds > 30:  # long epochs: keep the curve current for whoever watches the run
                plot_loss_curve(history, job.work_dir / "loss.png", title="user-model loss")
            log.info("epoch %d: train %.4f val %.4f (%s tok/s)%s", epoch, record["train_loss"], val["val_loss"],
                     record["tokens_per_s"], " *" if improved else "")
        barrier()
        stopped_early = early.should_stop
    if dist.is_main:
        if not (job.work_dir / "best.safetensors").exists():
            save_weights(model, job.work_dir / "best.safetensors")
        plot_loss_curve(history, job.work_dir / "loss.png", title=f"user-model loss (vocab {job.vocab_version[:12]})")
    barrier()  # rank 0 has written best.safetensors before any rank returns
    if dist.enabled and owns_group:
        torch.distributed.destroy_process_group()
    return {"best_epoch": early.best_epoch, "val_loss": early.best, "history": history, "rank": dist.rank,
            "world_size": dist.world_size,
            "stopped_early": early.should_stop, "epochs_run": len(history), "resumed_from": resumed_from,
            "best_weights": str(job.work_dir / "best.safetensors"), "work_dir": str(job.work_dir)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
