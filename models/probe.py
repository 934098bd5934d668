"""Downstream probes that judge a profile: the challenge's fixed MLP (scaled down for CPU) and a logistic regression.

The RecSys Challenge 2025 scores every submission with the same small network trained on the frozen embeddings:
Linear(emb -> 2048) + LayerNorm, 3 residual pre-LN inverted-bottleneck blocks (2048 -> 4096, GELU, -> 2048), a final
LayerNorm and a linear head; AdamW lr 1e-3, batch 128, 3 epochs, BCE-with-logits, the task's score is its best
epoch. `ProbeConfig` keeps that shape with a CPU-sized width. Pure PyTorch + numpy: no Spark here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ProbeConfig:
    hidden: int = 256  # challenge: 2048
    blocks: int = 3  # challenge: 3
    expansion: int = 2  # inverted bottleneck H -> 2H -> H
    epochs: int = 3  # challenge: 3; the best epoch counts
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01  # AdamW default
    linear: bool = False  # True: L2-regularised logistic regression fitted to convergence (full-batch L-BFGS)
    l2: float = 1e-3  # logistic regression penalty (mean loss + l2/2 * ||W||^2)
    lbfgs_iters: int = 100
    seed: int = 0


class Block(nn.Module):
    """Pre-LN residual inverted bottleneck: x + W2(GELU(W1(LN(x))))."""

    def __init__(self, hidden: int, expansion: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, expansion * hidden)
        self.down = nn.Linear(expansion * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class MLPProbe(nn.Module):
    def __init__(self, n_in: int, n_out: int, config: ProbeConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(n_in, config.hidden), nn.LayerNorm(config.hidden))
        self.blocks = nn.ModuleList(Block(config.hidden, config.expansion) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(config.hidden)
        self.head = nn.Linear(config.hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n_in) -> (B, n_out) logits
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


class LogisticProbe(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.head = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n_in) -> (B, n_out) logits
        return self.head(x)


def build_probe(n_in: int, n_out: int, config: ProbeConfig) -> nn.Module:
    return LogisticProbe(n_in, n_out) if config.linear else MLPProbe(n_in, n_out, config)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    score_fn: Callable[[np.ndarray, np.ndarray], dict],
    config: ProbeConfig,
    keep_model: bool = False,
) -> dict:
    """Train on (x_train, y_train); after every epoch score the test logits; return the best epoch's metrics.
    `keep_model`: also return the trained probe ("model", after the last epoch) to apply to other inputs.

    `y` is (N,) for binary tasks or (N, T) for multilabel ones; `score_fn(y_test, logits)` returns a dict with
    at least "score". Returns {"best_epoch", "epochs": [per-epoch dicts], "logits": the best epoch's test logits,
    **best epoch's metrics} (the logits let a caller compare two profiles on the same test users).
    """
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x_train = np.ascontiguousarray(x_train, dtype=np.float32)
    x_test = np.ascontiguousarray(x_test, dtype=np.float32)
    binary = y_train.ndim == 1
    y_tr = torch.from_numpy(np.asarray(y_train, dtype=np.float32).reshape(len(y_train), -1))  # (N, T)
    x_tr = torch.from_numpy(x_train)
    model = build_probe(x_train.shape[1], y_tr.shape[1], config)
    if config.linear:
        out = _fit_logistic(model, x_tr, y_tr, x_test, y_test, binary, score_fn, config)
        return {**out, "model": model} if keep_model else out
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    all_logits: list[np.ndarray] = []
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), config.batch_size):
            idx = perm[i : i + config.batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        logits = predict(model, x_test)
        if binary:
            logits = logits[:, 0]
        metrics = score_fn(y_test, logits)
        history.append({"epoch": epoch, "train_loss": total / max(len(perm), 1), **metrics})
        all_logits.append(logits)
    best = max(history, key=lambda m: -np.inf if m["score"] is None or np.isnan(m["score"]) else m["score"])
    out = {**best, "best_epoch": best["epoch"], "epochs": history, "logits": all_logits[best["epoch"]]}
    return {**out, "model": model} if keep_model else out


def _fit_logistic(model, x_tr, y_tr, x_test, y_test, binary, score_fn, config: ProbeConfig) -> dict:
    """Full-batch L-BFGS on the penalised BCE: a converged logistic regression (one 'epoch')."""
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=config.lbfgs_iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(x_tr), y_tr)
        loss = loss + 0.5 * config.l2 * model.head.weight.pow(2).sum()
        loss.backward()
        return loss

    model.train()
    loss = float(opt.step(closure).detach())
    logits = predict(model, x_test)
    if binary:
        logits = logits[:, 0]
    metrics = {"epoch": 0, "train_loss": loss, **score_fn(y_test, logits)}
    return {**metrics, "best_epoch": 0, "epochs": [metrics], "logits": logits}
