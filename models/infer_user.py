"""Load a trained user model version safely (config JSON + safetensors, no unpickling) and encode users.

`encode_*` return served vectors: the raw latent through the version's `LatentTransform` (centre, PCA, row L2;
see `models.latent`) when the version has one, the raw latent for versions trained before transforms existed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from ubp.models.common import autocast_context, load_weights, pick_device, to_device
from ubp.models.gru_ae import GRUAEConfig
from ubp.models.latent import LatentTransform
from ubp.models.user_data import SequenceChunk, bucket_batches
from ubp.models.user_model import build_user_model

MANIFEST = "model.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def load_model(model_dir: str | Path, device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """The model of a registry version directory in eval mode, and its manifest (vocab version, table version...).
    The version's serving transform, if any, rides along as `model.serving_transform` (None: raw latents)."""
    model = load_network(model_dir, device)
    model.serving_transform = LatentTransform.load(model_dir)
    return model, read_manifest(model_dir)


def load_network(model_dir: str | Path, device: torch.device | str | None = None) -> nn.Module:
    """Config + weights of a version directory, in eval mode (no manifest needed: used while publishing one)."""
    model_dir = Path(model_dir)
    device = torch.device(device) if device is not None else pick_device()
    model = build_user_model(GRUAEConfig.from_dict(json.loads((model_dir / CONFIG).read_text())))
    load_weights(model, model_dir / WEIGHTS, device="cpu")
    return model.to(device).eval()


@torch.no_grad()
def encode_chunk(model: nn.Module, chunk: SequenceChunk, batch_size: int = 512, raw: bool = False) -> np.ndarray:
    """Served vectors [U, D] float32 for the users of `chunk`, in the chunk's row order (length-bucketed
    internally; packing (GRU-AE) or the causal mask (transformer) makes each vector independent of its
    batch-mates). `raw=True`: the latents [U, H]."""
    device = next(model.parameters()).device
    out = np.zeros((len(chunk), model.config.hidden), dtype=np.float32)
    for idx in bucket_batches(chunk.lengths, batch_size, rng=None):
        with autocast_context(device):
            z = model.encode(to_device(chunk.collate(idx), device))
        out[idx] = z.float().cpu().numpy()
    transform = getattr(model, "serving_transform", None)
    return out if raw or transform is None else transform.apply(out)


def encode_arrow(model: nn.Module, batch: pa.RecordBatch | pa.Table,
                 batch_size: int = 512, raw: bool = False) -> tuple[SequenceChunk, np.ndarray]:
    """Encode one Arrow batch of `user_sequences` rows; rows without events are dropped (no profile)."""
    chunk = SequenceChunk.from_arrow(batch, model.config.input_fields, model.config.max_len, model.config.events)
    return chunk, encode_chunk(model, chunk, batch_size, raw=raw)


def encode_batches(model: nn.Module, batches: Iterator[pa.RecordBatch], batch_size: int = 512,
                   raw: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(client_id, n_events, vectors) per Arrow batch: the in-process path (benchmarks, tests, small tables)."""
    for rb in batches:
        chunk, z = encode_arrow(model, rb, batch_size, raw=raw)
        if len(chunk):
            yield chunk.client_id, chunk.n_events, z


def fit_serving_transform(model: nn.Module, batches: Iterator[pa.RecordBatch], post: Any,
                          max_users: int = 50_000, batch_size: int = 512) -> tuple[LatentTransform, dict, dict]:
    """Fit the serving transform on (at most `max_users` of) the users in `batches` (the training users) and
    measure latent health before and after it: (transform, raw health, served health)."""
    from ubp.models.latent import fit_transform, latent_health

    model.serving_transform = None
    parts, n = [], 0
    for _, _, z in encode_batches(model, batches, batch_size, raw=True):
        parts.append(z[: max_users - n])
        n += len(parts[-1])
        if n >= max_users:
            break
    z = np.concatenate(parts) if parts else np.zeros((0, model.config.hidden), np.float32)
    transform = fit_transform(z, pca_dim=post.pca_dim, whiten=post.whiten, row_norm=post.row_norm)
    model.serving_transform = transform
    return transform, latent_health(z), latent_health(transform.apply(z))
