"""Load a trained user model version safely (config JSON + safetensors, no unpickling) and encode users."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from models.common import autocast_context, load_weights, pick_device
from models.gru_ae import GRUAEConfig, GRUAutoencoder
from models.train_user import to_device
from models.user_data import SequenceChunk, bucket_batches

MANIFEST = "model.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def load_model(model_dir: str | Path, device: torch.device | str | None = None) -> tuple[GRUAutoencoder, dict]:
    """The model of a registry version directory in eval mode, and its manifest (vocab version, table version...)."""
    model_dir = Path(model_dir)
    device = torch.device(device) if device is not None else pick_device()
    config = GRUAEConfig.from_dict(json.loads((model_dir / CONFIG).read_text()))
    model = GRUAutoencoder(config)
    load_weights(model, model_dir / WEIGHTS, device="cpu")
    return model.to(device).eval(), read_manifest(model_dir)


@torch.no_grad()
def encode_chunk(model: GRUAutoencoder, chunk: SequenceChunk, batch_size: int = 512) -> np.ndarray:
    """Latents [U, H] float32 for the users of `chunk`, in the chunk's row order (length-bucketed internally;
    packing makes each latent independent of its batch-mates)."""
    device = next(model.parameters()).device
    out = np.zeros((len(chunk), model.config.hidden), dtype=np.float32)
    for idx in bucket_batches(chunk.lengths, batch_size, rng=None):
        with autocast_context(device):
            z = model.encode(to_device(chunk.collate(idx), device))
        out[idx] = z.float().cpu().numpy()
    return out


def encode_arrow(model: GRUAutoencoder, batch: pa.RecordBatch | pa.Table,
                 batch_size: int = 512) -> tuple[SequenceChunk, np.ndarray]:
    """Encode one Arrow batch of `user_sequences` rows; rows without events are dropped (no profile)."""
    chunk = SequenceChunk.from_arrow(batch, model.config.input_fields, model.config.max_len)
    return chunk, encode_chunk(model, chunk, batch_size)


def encode_batches(model: GRUAutoencoder, batches: Iterator[pa.RecordBatch],
                   batch_size: int = 512) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(client_id, n_events, latents) per Arrow batch: the in-process path (benchmarks, tests, small tables)."""
    for rb in batches:
        chunk, z = encode_arrow(model, rb, batch_size)
        if len(chunk):
            yield chunk.client_id, chunk.n_events, z
