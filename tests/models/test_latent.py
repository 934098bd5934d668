"""Serving transform and latent health (models/latent.py): fitted once, stored safely, flags a collapsed latent."""

from __future__ import annotations

import numpy as np
import pytest
from ubp.models.latent import LatentTransform, fit_transform, is_healthy, latent_health


def _spread(n: int = 500, d: int = 32, seed: int = 0) -> np.ndarray:
    """A healthy latent: values spread inside (-1, 1), several independent directions."""
    rng = np.random.default_rng(seed)
    return np.tanh(rng.standard_normal((n, d)) * 0.5).astype(np.float32)


def _saturated(n: int = 500, d: int = 32, seed: int = 0) -> np.ndarray:
    """What the demo's GRU-AE produced: every user near the same corner of the cube, one shared direction."""
    rng = np.random.default_rng(seed)
    corner = np.sign(rng.standard_normal(d))
    common = rng.standard_normal((n, 1)) * 0.05
    return np.tanh(3.0 * corner + common * corner + rng.standard_normal((n, d)) * 0.02).astype(np.float32)


def test_health_tells_a_saturated_latent_from_a_spread_one():
    good, bad = latent_health(_spread()), latent_health(_saturated())
    assert is_healthy(good) and not is_healthy(bad)
    assert bad["saturated_share"] > 0.9 and good["saturated_share"] < 0.1
    assert bad["median_dim_std"] < 0.02 < good["median_dim_std"]
    assert bad["one_sign_dims"] == 1.0 and good["one_sign_dims"] < 0.1
    collapsed = np.repeat(_spread(1, 32), 200, axis=0) + np.random.default_rng(1).standard_normal((200, 1)) * 0.1
    assert latent_health(collapsed)["pc1_share"] > 0.99 and not is_healthy(latent_health(collapsed))


def test_transform_centres_projects_normalises_and_round_trips(tmp_path):
    z = _saturated(400, 32)
    t = fit_transform(z, pca_dim=8, whiten=True, row_norm=False)
    x = t.apply(z)
    assert x.shape == (400, 8) and t.dim == 8
    assert np.abs(x.mean(axis=0)).max() < 1e-4  # centred
    assert np.allclose(x.std(axis=0, ddof=1), 1.0, atol=1e-3)  # whitened: unit variance per component
    assert latent_health(z)["median_dim_std"] < 0.02  # the raw latent is nearly constant ...
    assert latent_health(x)["median_dim_std"] > 0.9  # ... the served one is not
    t.save(tmp_path)
    back = LatentTransform.load(tmp_path)
    assert np.array_equal(back.apply(z), x)
    assert LatentTransform.load(tmp_path / "nothing") is None  # an older model version: raw latents
    rows = fit_transform(z, row_norm=True).apply(z)
    assert rows.shape == (400, 32) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fit_transform(z[:1])
