"""Ensemble profile (`spark_jobs/ensemble.py`), no Spark: the recipe's member transforms, missing-user fill and
has_<member> flags, float16, <= 2048 columns."""

from __future__ import annotations

import numpy as np
import pytest
from ubp.spark_jobs.ensemble import Member, MemberSpec, combine, fit_block, l2_normalise, load_recipe


def test_combine_fills_missing_users_with_the_member_mean_and_flags_them():
    a = Member("a", np.array([1, 2, 3]), np.array([[3, 4], [0, 2], [1, 0]], np.float32), "va")
    b = Member("b", np.array([2, 4]), np.array([[1, 1, 0], [0, 0, 5]], np.float32), "vb")
    ids, x, layout = combine([a, b])  # members the recipe does not name are row-normalised
    assert ids.tolist() == [1, 2, 3, 4] and x.dtype == np.float16 and x.shape == (4, 2 + 3 + 2)
    assert layout["a"]["filled"] == 1 and layout["b"]["filled"] == 2
    np.testing.assert_allclose(x[0, :2], [0.6, 0.8], atol=1e-3)
    np.testing.assert_allclose(x[3, :2], l2_normalise(a.values).mean(axis=0), atol=1e-3)  # user 4 missing from a
    np.testing.assert_allclose(x[0, 2:5], l2_normalise(b.values).mean(axis=0), atol=1e-3)  # user 1 missing from b
    # has_<member>: 1 where the member really covers the user (the mean row is a fill, not a profile)
    assert x[:, layout["a"]["indicator_column"]].tolist() == [1, 1, 1, 0]
    assert x[:, layout["b"]["indicator_column"]].tolist() == [0, 1, 0, 1]
    assert np.isfinite(x).all()


def test_combine_reduces_wide_members_and_caps_columns():
    rng = np.random.default_rng(0)
    wide = Member("wide", np.arange(300), rng.normal(size=(300, 600)).astype(np.float32), "w")
    fitted = {}
    ids, x, layout = combine([wide], pca={"wide": 32}, fitted=fitted)
    assert x.shape == (300, 32) and layout["wide"]["width"] == 32 and layout["wide"]["transform"] == "pca"
    np.testing.assert_allclose(fitted["wide"].apply(wide.values), x.astype(np.float32), atol=2e-3)  # stored = used
    with pytest.raises(ValueError, match="2048"):
        combine([Member("huge", np.arange(10), np.ones((10, 2100), np.float32), "h")])


def test_recipe_lists_the_next_event_members_opt_in():
    """The transformer members have their `gru_<member>` blocks in the recipe, row-normalised, off by default."""
    recipe = load_recipe()
    for name in ("gru_next_sku", "gru_next_url"):
        assert recipe.spec(name).transform == "row_norm" and not recipe.members[name].enabled
        assert name not in recipe.enabled


def test_recipe_lists_the_text_member_opt_in_with_pca_128():
    recipe = load_recipe()
    spec = recipe.spec("text")
    assert (spec.transform, spec.pca_dim, spec.enabled) == ("pca", 128, False) and "text" not in recipe.enabled


def test_statistics_are_quantile_transformed_only():
    """The seed's recipe: statistics through the uniform quantile transform, no L2 and no PCA, so they keep their
    weight next to unit-norm blocks; the stored transform reproduces sklearn's and is robust to outliers."""
    from sklearn.preprocessing import QuantileTransformer

    recipe = load_recipe()
    assert recipe.spec("aggregates").transform == "quantile" and "items" not in recipe.enabled
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.lognormal(size=(400, 6)), [[1e9] * 6]]).astype(np.float32)
    t = fit_block(x, MemberSpec(transform="quantile"))
    got = t.apply(x)
    want = QuantileTransformer(n_quantiles=401, subsample=401, random_state=0).fit(x).transform(x) - 0.5
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.min() >= -0.5 and got.max() <= 0.5 and np.isfinite(got).all()
    norms = np.linalg.norm(got, axis=1)  # not unit rows: ~sqrt(d / 12) on average (354 columns: ~5.4)
    assert abs(norms.mean() - np.sqrt(6 / 12)) < 0.1 and norms.std() > 0.05
