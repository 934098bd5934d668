"""Ensemble profile (`spark_jobs/ensemble.py`), no Spark: member normalisation, missing-user fill, float16,
<= 2048 columns."""

from __future__ import annotations

import numpy as np
import pytest
from ubp.spark_jobs.ensemble import Member, combine, l2_normalise, quantile_normalise


def test_combine_fills_missing_users_with_the_member_mean():
    a = Member("a", np.array([1, 2, 3]), l2_normalise(np.array([[3, 4], [0, 2], [1, 0]], np.float32)), "va")
    b = Member("b", np.array([2, 4]), l2_normalise(np.array([[1, 1, 0], [0, 0, 5]], np.float32)), "vb")
    ids, x, layout = combine([a, b])
    assert ids.tolist() == [1, 2, 3, 4] and x.dtype == np.float16 and x.shape == (4, 5)
    assert layout["a"]["filled"] == 1 and layout["b"]["filled"] == 2
    np.testing.assert_allclose(x[0, :2], [0.6, 0.8], atol=1e-3)
    np.testing.assert_allclose(x[3, :2], a.values.mean(axis=0), atol=1e-3)  # user 4 missing from a
    np.testing.assert_allclose(x[0, 2:], b.values.mean(axis=0), atol=1e-3)  # user 1 missing from b
    assert np.isfinite(x).all()


def test_combine_reduces_wide_members_and_caps_columns():
    rng = np.random.default_rng(0)
    wide = Member("wide", np.arange(300), l2_normalise(rng.normal(size=(300, 600))), "w")
    ids, x, layout = combine([wide], pca_above=256, pca_dim=32)
    assert x.shape == (300, 32) and layout["wide"]["width"] == 32
    with pytest.raises(ValueError, match="2048"):
        combine([Member("huge", np.arange(10), np.ones((10, 2100), np.float32), "h")], pca_above=10_000)


def test_quantile_normalise_is_unit_norm_and_robust_to_outliers():
    x = np.array([[1, 1e9], [2, 3], [3, 2], [4, 1]], np.float32)
    q = quantile_normalise(x)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(q).all()
