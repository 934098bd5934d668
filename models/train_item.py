"""Training of the item model (SASRec, any variant) on an `ItemSplit`, and its artifacts.

Same habits as the user model (`models.common`): auto device, seeds, early stopping on validation NDCG@10
(patience), a checkpoint per epoch with resume, metrics.jsonl, a loss PNG, safetensors only.

Artifacts written into the model directory (see `save_item_model` / `load_item_model`):
- `config.json`: SASRecConfig + the split summary + training facts;
- `model.safetensors`: the best network weights (not for `history_avg`);
- `content_transform.safetensors|json`: the warm-fitted StandardScaler -> PCA -> L2 transform;
- `item_offsets.safetensors`: `skus` (warm, int64) and `offset` (n_warm, d) = final item vector - content vector,
  i.e. the bounded delta (or the free drift of `content_finetune`). A catalog item's vector is then
  `transform(raw content) + offset` with offset 0 for cold and new items: no retraining needed for new items.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ubp.models.common import (
    CheckpointManager,
    EarlyStopping,
    MetricsWriter,
    load_weights,
    pick_device,
    plot_loss_curve,
    progress,
    save_weights,
    seed_everything,
)
from ubp.models.content_prep import ContentTransform
from ubp.models.item_eval import ItemIndex, ItemSplit, evaluate_cases, pad_left
from ubp.models.sasrec import SASRec, SASRecConfig, score_history_avg

OFFSETS_FILE = "item_offsets.safetensors"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def prepare_content(
    index: ItemIndex, skus: np.ndarray, raw: np.ndarray, d_model: int, seed: int = 0
) -> tuple[ContentTransform, np.ndarray, int]:
    """Fit the transform on the WARM items' raw vectors; -> (transform, (n_items, d) content table, missing).

    Items without a raw content vector get a zero row (`missing` counts them); row 0 (PAD) is zero.
    """
    pos = {int(s): i for i, s in enumerate(skus)}
    where = np.array([pos.get(int(s), -1) for s in index.skus], dtype=np.int64)  # item row -> raw row
    where[0] = -1
    warm_rows = np.arange(1, index.n_warm + 1)
    have = where[warm_rows] >= 0
    transform = ContentTransform.fit(raw[where[warm_rows][have]], d_model, seed=seed)
    table = np.zeros((index.n_items, d_model), dtype=np.float32)
    ok = where >= 0
    if ok.any():
        table[ok] = transform.transform(raw[where[ok]])
    return transform, table, int((~ok[1:]).sum())


def make_training_tensors(train: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each training sequence's newest max_len+1 items -> (inputs, next-item targets), both (U, max_len)."""
    windows = [s[-(max_len + 1) :] for s in train if len(s) >= 2]
    return pad_left([w[:-1] for w in windows], max_len), pad_left([w[1:] for w in windows], max_len)


def train_sasrec(
    split: ItemSplit,
    content: np.ndarray | None,
    config: SASRecConfig,
    out_dir: Path,
    max_epochs: int = 100,
    patience: int = 5,
    seed: int = 0,
    device: str | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> tuple[SASRec, dict[str, Any]]:
    """Train with early stopping on validation NDCG@10; resumes from `out_dir/checkpoints` when present.

    On CPU, env UBP_TORCH_THREADS (if > 0) sets torch's thread count.

    Returns the model with its BEST weights loaded and a summary (best epoch, val NDCG, sequences/s...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    dev = pick_device(device)
    threads = int(os.environ.get("UBP_TORCH_THREADS", "0"))
    if dev.type == "cpu" and threads > 0:  # on a shared, oversubscribed CPU one thread is often fastest
        torch.set_num_threads(threads)
    model = SASRec(config, torch.from_numpy(content) if content is not None else None).to(dev)
    opt = torch.optim.Adam(model.param_groups(), lr=config.lr)
    ckpts = CheckpointManager(out_dir / "checkpoints", keep=1)
    metrics = MetricsWriter(out_dir / "metrics.jsonl")
    early = EarlyStopping(patience=patience)
    start_epoch, step = 0, 0
    if resume:
        ck = ckpts.load_latest(model, opt, device=dev)
        if ck is not None:
            start_epoch, step = ck.epoch + 1, ck.step
            early.load_state_dict(ck.extra.get("early", {}))
    X, Y = make_training_tensors(split.train, config.max_len)
    n = X.shape[0]
    if n == 0:
        raise ValueError("no training sequences with at least 2 items")
    best_path = out_dir / WEIGHTS_FILE
    seqs_seen, train_seconds = 0, 0.0
    epoch = start_epoch - 1
    for epoch in range(start_epoch, max_epochs):
        if early.should_stop:
            break
        model.train()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)  # per-epoch order survives a resume
        perm = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        t0 = time.perf_counter()
        bar = progress(range(0, n, config.batch_size), desc=f"{config.variant} epoch {epoch}",
                       disable=not show_progress)
        for i in bar:
            idx = perm[i : i + config.batch_size]
            loss = model.loss(X[idx].to(dev), Y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.items.constrain_()  # the bound holds after EVERY optimizer step
            total += float(loss.item())
            batches += 1
            step += 1
        train_seconds += time.perf_counter() - t0
        seqs_seen += n
        val = evaluate(model, split.val, config.max_len, dev) if split.val else {}
        val_ndcg = val.get("ndcg@10_total", float("nan"))
        train_loss = total / max(batches, 1)
        # lower is better for EarlyStopping: -NDCG (or the training loss when there is no validation user)
        score = -val_ndcg if val_ndcg == val_ndcg else train_loss
        if early.step(score, epoch):
            save_weights(model, best_path)
        metrics.write({"epoch": epoch, "step": step, "train_loss": train_loss, "val_ndcg@10": val_ndcg,
                       "val_recall@10": val.get("recall@10_total"), "epoch_seconds": time.perf_counter() - t0,
                       "delta_max_norm": _max_delta_norm(model)})
        ckpts.save(model, opt, epoch, step, extra={"early": early.state_dict()})
    records = metrics.read()
    plot_loss_curve(records, out_dir / "loss.png", keys=("train_loss",), title=f"item model ({config.variant})")
    if best_path.exists():
        load_weights(model, best_path, device=dev)
    model.eval()
    best = [r for r in records if r.get("epoch") == early.best_epoch]
    summary = {
        "epochs_run": len(records), "best_epoch": early.best_epoch,
        "best_val_ndcg@10": best[0].get("val_ndcg@10") if best else None,
        "stopped_early": early.should_stop, "train_sequences": n,
        "train_seconds_this_run": round(train_seconds, 3),
        "sequences_per_s": round(seqs_seen / train_seconds, 1) if train_seconds > 0 else None,
        "device": str(dev),
    }
    return model, summary


def _max_delta_norm(model: SASRec) -> float:
    d = model.items.delta
    return float(d.detach().norm(dim=1).max().item()) if d is not None else 0.0


def evaluate(model: SASRec, cases, max_len: int, device: torch.device | str = "cpu") -> dict:
    model.eval()
    return evaluate_cases(model.score, cases, max_len, device=device)


def history_avg_scorer(content: np.ndarray):
    """Scores of the untrained history-average baseline: a user's recent items' content vectors, averaged."""
    table = torch.from_numpy(content)
    return lambda seq: score_history_avg(table, seq)


def item_offsets(model: SASRec | None, index: ItemIndex, content: np.ndarray | None) -> np.ndarray:
    """(n_warm, d) final vector - content vector of each warm item (zeros without a trained content model)."""
    d = content.shape[1] if content is not None else (model.config.d_model if model else 0)
    if model is None or model.config.variant == "id_only" or content is None:
        return np.zeros((index.n_warm, d), dtype=np.float32)
    table = model.item_vectors().cpu().numpy()
    return (table[1 : index.n_warm + 1] - content[1 : index.n_warm + 1]).astype(np.float32)


def save_item_model(
    out_dir: Path, config: SASRecConfig, index: ItemIndex, transform: ContentTransform | None,
    offsets: np.ndarray, info: dict[str, Any],
) -> None:
    """Everything `item_vectors` and evaluation need, next to the weights (safetensors + JSON only)."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    if transform is not None:
        transform.save(out_dir)
    save_file({"skus": index.skus[1 : index.n_warm + 1].astype(np.int64), "offset": offsets.astype(np.float32)},
              str(out_dir / OFFSETS_FILE))
    payload = {"config": config.to_dict(), **info}
    (out_dir / CONFIG_FILE).write_text(json.dumps(payload, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def load_item_model(model_dir: Path) -> dict[str, Any]:
    """Read a saved item model: info (config.json), transform, warm skus and offsets. No unpickling."""
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    info = json.loads((model_dir / CONFIG_FILE).read_text())
    transform = ContentTransform.load(model_dir) if (model_dir / "content_transform.json").exists() else None
    arrays = load_file(str(model_dir / OFFSETS_FILE))
    return {"info": info, "transform": transform, "skus": arrays["skus"], "offset": arrays["offset"]}
