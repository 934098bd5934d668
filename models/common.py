"""Shared training utilities for every ubp model (the user GRU-AE and the item SASRec).

Nothing here is model-specific: device choice, mixed precision, seeding, safe weight I/O (safetensors; optimizer
state through `torch.save` read back with `weights_only=True`), a checkpoint manager that resumes after a kill,
metrics as JSON lines, a loss-curve PNG, early stopping and the torchrun (DDP) plumbing.
Nothing is ever loaded by unpickling.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# device, precision, seeds
# ---------------------------------------------------------------------------------------------------------------


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (the local rank's GPU under torchrun), else CPU. `prefer` ("cpu", "cuda:1") overrides;
    env `UBP_DEVICE` too. Never hard-code "cuda" elsewhere: call this."""
    prefer = prefer or os.environ.get("UBP_DEVICE")
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def autocast_context(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaler needed), a no-op elsewhere (CPU bf16 is slower on most CPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors to the device; "lengths" stays on CPU (packing wants it there); "client_id" is dropped."""
    return {k: (v if k == "lengths" else v.to(device, non_blocking=True)) for k, v in batch.items() if k != "client_id"}


def seed_everything(seed: int) -> None:
    """Fix python, numpy and torch (all devices) seeds."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        else:
            return model


# ---------------------------------------------------------------------------------------------------------------
# distributed (torchrun)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank info from the torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK); single process otherwise."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (nccl on CUDA, gloo on CPU); no-op otherwise."""
    info = dist_info()
    if info.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    return info


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over ranks (identity without a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------------------------------
# weights (safetensors) and checkpoints
# ---------------------------------------------------------------------------------------------------------------


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write the model's parameters and buffers as safetensors (atomic rename; shared tensors handled)."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_model(unwrap(model), str(tmp))
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load safetensors weights into `model` (strict: every key must match)."""
    from safetensors.torch import load_model

    load_model(unwrap(model), str(path), strict=True, device=str(device))
    return model


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a concurrent reader sees the old file or the new one, never half."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Checkpoint:
    """What a resumed run gets back: the epoch it finished, the global step and the extra JSON state."""

    epoch: int
    step: int
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


class CheckpointManager:
    """One directory per saved epoch (`<root>/epoch-0003/`: weights.safetensors, optimizer.pt, state.json),
    written to a temp dir and renamed, so a kill at any moment leaves either the old or the new checkpoint.

    `optimizer.pt` holds only tensors and plain containers (optimizer/scheduler state dicts, RNG states) and is read
    with `torch.load(weights_only=True)`.
    """

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = keep

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        epoch: int,
        step: int,
        extra: dict[str, Any] | None = None,
        scheduler: Any | None = None,
    ) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"epoch-{epoch:04d}"
        tmp = self.root / f".tmp-epoch-{epoch:04d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_weights(model, tmp / "weights.safetensors")
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / "optimizer.pt")
        meta = {"epoch": epoch, "step": step, "saved_at": time.time(), "extra": extra or {}}
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        return final

    def _dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("epoch-")
                      and (p / "state.json").exists())

    def _prune(self) -> None:
        for old in self._dirs()[: -self.keep] if self.keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        dirs = self._dirs()
        return dirs[-1] if dirs else None

    def load_latest(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        device: torch.device | str = "cpu",
        scheduler: Any | None = None,
    ) -> Checkpoint | None:
        """Restore model (+ optimizer, scheduler, torch RNG) from the newest checkpoint; None when there is none."""
        path = self.latest()
        if path is None:
            return None
        load_weights(model, path / "weights.safetensors", device=device)
        state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
        if optimizer is not None and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"].cpu())
        if "cuda_rng" in state and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        meta = json.loads((path / "state.json").read_text())
        return Checkpoint(epoch=int(meta["epoch"]), step=int(meta["step"]), extra=meta.get("extra", {}), path=path)


# ---------------------------------------------------------------------------------------------------------------
# metrics, plots, early stopping
# ---------------------------------------------------------------------------------------------------------------


class MetricsWriter:
    """Append one JSON object per line (flushed at once, so a killed run keeps what it logged)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in record.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line from a kill is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss_curve(
    records: list[dict[str, Any]],
    out: str | Path,
    keys: tuple[str, ...] = ("train_loss", "val_loss"),
    x: str = "epoch",
    title: str = "loss",
) -> Path:
    """Plot per-epoch curves from metrics records to a PNG (matplotlib Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        pts = [(r[x], r[key]) for r in records if r.get(key) is not None and x in r]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=key)
    ax.set_xlabel(x)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without an improvement of at least `min_delta` (lower is better)."""

    patience: int = 5
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta, "best": _jsonable(self.best),
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.best_epoch = int(state.get("best_epoch", -1))
        self.bad_epochs = int(state.get("bad_epochs", 0))


def progress(iterable: Any = None, total: int | None = None, desc: str = "", disable: bool = False) -> Iterator:
    """A tqdm bar on a terminal, a log line every ~10% / 30 s when piped (`ubp.log.progress`); off when `disable`
    or env UBP_NO_PROGRESS=1."""
    from ubp.log import progress as _progress

    return _progress(iterable, total=total, desc=desc, disable=disable)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in unwrap(model).parameters())
