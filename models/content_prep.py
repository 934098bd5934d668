"""Content vectors as in the paper: StandardScaler -> PCA to the model dimension -> L2 normalise.

Fitted on WARM items only (items with training interactions) and applied unchanged to cold ones, so a cold item's
vector never influences the space it is placed in. Saved as safetensors (arrays) + JSON (metadata), never pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS_FILE = "content_transform.safetensors"
META_FILE = "content_transform.json"


@dataclass
class ContentTransform:
    mean: np.ndarray  # (D,) scaler mean
    scale: np.ndarray  # (D,) scaler std (1 where the std is 0)
    pca_mean: np.ndarray  # (D,) mean of the scaled warm vectors (0 up to rounding)
    components: np.ndarray  # (dim, D) principal axes; rows beyond the fitted rank are zero
    n_fit: int = 0  # warm items it was fitted on

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, warm: np.ndarray, dim: int, seed: int = 0) -> ContentTransform:
        """Fit on (n_warm, D) raw warm embeddings; output dimension `dim` (zero-padded if rank is smaller).

        Same math as sklearn's StandardScaler (population std) + PCA (sign-fixed axes), in numpy: the PCA axes are
        the top eigenvectors of the scaled covariance (D x D), so memory is O(n D) once and O(D^2) after that.
        `seed` is unused (the fit is deterministic) and kept for a uniform signature.
        """
        warm = np.asarray(warm, dtype=np.float64)
        if warm.ndim != 2 or warm.shape[0] < 2:
            raise ValueError(f"need at least 2 warm items to fit the content transform, got {warm.shape}")
        mean = warm.mean(axis=0)
        std = warm.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        scaled = (warm - mean) / scale  # (n, D)
        pca_mean = scaled.mean(axis=0)
        centred = scaled - pca_mean
        cov = centred.T @ centred / max(warm.shape[0] - 1, 1)  # (D, D)
        eigval, eigvec = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigval)[::-1]
        k = min(dim, warm.shape[0] - 1, warm.shape[1])
        axes = eigvec[:, order[:k]].T  # (k, D)
        signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])  # like sklearn's svd_flip
        axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
        components = np.zeros((dim, warm.shape[1]), dtype=np.float32)
        components[:k] = axes
        return cls(
            mean=mean.astype(np.float32), scale=scale.astype(np.float32), pca_mean=pca_mean.astype(np.float32),
            components=components, n_fit=int(warm.shape[0]),
        )

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """(n, D) raw embeddings -> (n, dim) unit vectors (all-zero input rows after PCA stay zero)."""
        raw = np.asarray(raw, dtype=np.float32)
        z = ((raw - self.mean) / self.scale - self.pca_mean) @ self.components.T  # (n, dim)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.maximum(norm, 1e-12)).astype(np.float32)

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        directory = Path(directory)
        save_file(
            {"mean": self.mean, "scale": self.scale, "pca_mean": self.pca_mean, "components": self.components},
            str(directory / WEIGHTS_FILE),
        )
        meta = {"steps": ["StandardScaler", "PCA", "L2"], "dim": self.dim,
                "input_dim": int(self.mean.shape[0]), "n_fit": self.n_fit, "fitted_on": "warm items only"}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ContentTransform:
        from safetensors.numpy import load_file

        directory = Path(directory)
        arrays = load_file(str(directory / WEIGHTS_FILE))
        meta = json.loads((directory / META_FILE).read_text())
        return cls(arrays["mean"], arrays["scale"], arrays["pca_mean"], arrays["components"], int(meta["n_fit"]))
