"""Serving transform and health of a GRU-AE latent.

A GRU's final hidden state lives in (-1, 1) and training drives many dimensions towards the edges and towards a
shared offset: raw, the vectors of different users are nearly parallel, and a downstream model (or an ensemble that
L2-normalises each block) barely sees the differences. `LatentTransform` is fitted once on the training users'
latents (centre, optional PCA and whitening, optional row L2) and stored with the model as safetensors + JSON, so
every consumer (Feast, export, ensemble) gets the same served vectors. `latent_health` measures the raw latent:
share of saturated values, the typical per-dimension spread across users, and the first principal component's
share of the variance. `procrustes` fits the rotation that aligns a retrained model's served vectors to the current
model's (`ubp/spaces.py`): stored in the transform as its last step, it keeps a retrain in the served space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

TRANSFORM_WEIGHTS = "latent_transform.safetensors"
TRANSFORM_CONFIG = "latent_transform.json"
SATURATED = 0.95  # |x| above this counts as saturated (tanh-bounded GRU state)


@dataclass
class LatentTransform:
    mean: np.ndarray  # [H]
    components: np.ndarray | None  # [k, H] principal axes (rows), None = no projection
    scale: np.ndarray | None  # [k or H] divide by this after projecting (whitening), None = no scaling
    row_norm: bool
    rotation: np.ndarray | None = None  # [dim, dim] orthogonal, applied last: aligns to an earlier version's space
    aligned_to: str | None = None  # the model version `rotation` aligns to

    @property
    def dim(self) -> int:
        return int(self.components.shape[0]) if self.components is not None else int(self.mean.shape[0])

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Served vectors [U, dim] float32 from raw latents [U, H]."""
        x = np.asarray(z, dtype=np.float32) - self.mean  # [U, H]
        if self.components is not None:
            x = x @ self.components.T  # [U, k]
        if self.scale is not None:
            x = x / self.scale
        if self.row_norm:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        if self.rotation is not None:
            x = x @ self.rotation  # orthogonal: norms (and row-normalisation) are kept
        return x.astype(np.float32, copy=False)

    def save(self, model_dir: str | Path) -> None:
        tensors = {"mean": self.mean.astype(np.float32)}
        if self.components is not None:
            tensors["components"] = self.components.astype(np.float32)
        if self.scale is not None:
            tensors["scale"] = self.scale.astype(np.float32)
        if self.rotation is not None:
            tensors["rotation"] = self.rotation.astype(np.float32)
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # safetensors writes raw memory
        save_file(tensors, str(Path(model_dir) / TRANSFORM_WEIGHTS))
        meta = {"dim": self.dim, "row_norm": self.row_norm, "pca": self.components is not None,
                "whiten": self.scale is not None, "aligned_to": self.aligned_to}
        (Path(model_dir) / TRANSFORM_CONFIG).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, model_dir: str | Path) -> LatentTransform | None:
        """The stored transform, or None for a model version trained before transforms existed (raw latents)."""
        model_dir = Path(model_dir)
        if not (model_dir / TRANSFORM_WEIGHTS).exists():
            return None
        t = load_file(str(model_dir / TRANSFORM_WEIGHTS))
        meta = json.loads((model_dir / TRANSFORM_CONFIG).read_text())
        return cls(mean=t["mean"], components=t.get("components"), scale=t.get("scale"),
                   row_norm=bool(meta["row_norm"]), rotation=t.get("rotation"), aligned_to=meta.get("aligned_to"))


def fit_transform(z: np.ndarray, pca_dim: int = 0, whiten: bool = False, row_norm: bool = True) -> LatentTransform:
    """Fit on training users' raw latents [U, H]: centre; PCA to `pca_dim` when 0 < pca_dim < H."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"need at least 2 latents to fit a transform, got shape {z.shape}")
    mean = z.mean(axis=0)
    x = z - mean
    components, scale = None, None
    if 0 < pca_dim < z.shape[1]:
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        k = min(pca_dim, len(s))
        components = vt[:k]  # [k, H]
        var = (s[:k] ** 2) / (len(z) - 1)
    else:
        var = x.var(axis=0, ddof=1)
    if whiten:
        scale = np.sqrt(np.maximum(var, 1e-12))
    return LatentTransform(mean=mean.astype(np.float32),
                           components=None if components is None else components.astype(np.float32),
                           scale=None if scale is None else scale.astype(np.float32), row_norm=row_norm)


def procrustes(new: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, float]:
    """Orthogonal R [d, d] minimising ||new @ R - old||_F over the same users' rows [U, d], and the relative error
    ||new @ R - old||_F / ||old - mean(old)||_F (0 = the same space up to a rotation; about 1.4 = unrelated, centred
    vectors). A rotation keeps distances and norms, so a probe trained on `old` reads `new @ R` as it would `old`."""
    new = np.asarray(new, dtype=np.float64)
    old = np.asarray(old, dtype=np.float64)
    if new.shape != old.shape or new.ndim != 2 or len(new) < 2:
        raise ValueError(f"procrustes needs two [U, d] arrays of one shape, got {new.shape} and {old.shape}")
    u, _, vt = np.linalg.svd(new.T @ old)
    r = u @ vt
    return r.astype(np.float32), procrustes_error(new, old, r)


def procrustes_error(new: np.ndarray, old: np.ndarray, rotation: np.ndarray) -> float:
    """Relative error ||new @ R - old||_F / ||old - mean(old)||_F of an alignment (see `procrustes`)."""
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    return float(np.linalg.norm(new @ rotation - old) / max(np.linalg.norm(old - old.mean(axis=0)), 1e-12))


def align(new: np.ndarray, old: np.ndarray, keys: np.ndarray, held_share: float = 0.25) -> tuple[np.ndarray, float]:
    """Procrustes rotation fitted on the rows whose key hashes outside a held-out share, and its error measured on
    the held-out rows (the fit error when too few are held out): an honest figure for "same space"."""
    from ubp.models.user_data import is_val_user

    held = is_val_user(np.asarray(keys, dtype=np.int64), held_share)
    if (~held).sum() < 2:
        held[:] = False
    rotation, err = procrustes(new[~held], old[~held])
    if held.sum() >= 2:
        err = procrustes_error(new[held], old[held], rotation)
    return rotation, err


def latent_health(z: np.ndarray) -> dict[str, float]:
    """Saturation and spread of raw latents [U, H]: the numbers that flag a collapsed or saturated profile.

    saturated_share: share of values with |x| > 0.95; median_dim_std: median over dimensions of the std across
    users; mean_abs: mean |x|; pc1_share: the first principal component's share of the total variance;
    one_sign_dims: share of dimensions whose sign is the same for > 95% of users."""
    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        return {"users": int(len(z))}
    x = z - z.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    var = s ** 2
    pos = (z > 0).mean(axis=0)
    return {
        "users": int(len(z)),
        "saturated_share": float((np.abs(z) > SATURATED).mean()),
        "median_dim_std": float(np.median(z.std(axis=0))),
        "mean_abs": float(np.abs(z).mean()),
        "pc1_share": float(var[0] / var.sum()) if var.sum() > 0 else 1.0,
        "one_sign_dims": float(((pos > 0.95) | (pos < 0.05)).mean()),
    }


def is_healthy(health: dict[str, float], max_saturated: float = 0.5, min_dim_std: float = 0.02,
               max_pc1: float = 0.5) -> bool:
    """A latent is unhealthy when most values are saturated, dimensions barely move across users, or one
    direction holds most of the variance."""
    return (health.get("saturated_share", 1.0) <= max_saturated and health.get("median_dim_std", 0.0) >= min_dim_std
            and health.get("pc1_share", 1.0) <= max_pc1)
