"""The item content transform (`models/content_prep.py`): saved without pickle, loaded back identical."""

from __future__ import annotations

import numpy as np
from ubp.models.content_prep import ContentTransform


def test_transform_save_load_roundtrip(tmp_path):
    x = np.random.default_rng(0).standard_normal((30, 12)).astype(np.float32)
    t = ContentTransform.fit(x, 16)  # more dims than rank: zero-padded
    t.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    u = ContentTransform.load(tmp_path)
    np.testing.assert_array_equal(t.transform(x), u.transform(x))
    assert u.dim == 16
