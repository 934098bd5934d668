"""The item content encoder (`models/content_encoder.py`): the bundled sentence encoder offline, and the
name-code fallback."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from user_model_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def encoder():
    from ubp.models.content_encoder import TextEncoder

    return TextEncoder(batch_size=8)


def test_encoder_offline_similar_texts(encoder, monkeypatch):
    """The bundled weights load with the hub offline and every socket connect refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    v = encoder.encode(["Trail running shoes, waterproof, red", "Red waterproof trail running shoes",
                        "Stainless steel kitchen knife set"])
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    assert v[0] @ v[1] > 0.8 > v[0] @ v[2] + 0.3


def test_name_code_fallback_is_deterministic_and_similarity_preserving():
    from ubp.models.content_encoder import encode_name_codes

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, 16)
    near = np.clip(a + rng.integers(-5, 6, 16), 0, 255)
    far = rng.integers(0, 256, 16)
    v = encode_name_codes([a.tolist(), near.tolist(), far.tolist(), None])
    assert v.shape == (4, 384) and np.isfinite(v).all()
    np.testing.assert_array_equal(v, encode_name_codes([a.tolist(), near.tolist(), far.tolist(), None]))
    assert v[0] @ v[1] > 0.95 and v[0] @ v[1] > v[0] @ v[2]
