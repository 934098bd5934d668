"""Vector spaces (`ubp/spaces.py`) and the alignment that keeps a retrain in one (`ubp/models/latent.py`)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ubp.models.latent import LatentTransform, align, procrustes

from ubp import spaces
from ubp.errors import UbpError


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_procrustes_recovers_a_rotation_and_flags_unrelated_vectors():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(500, 16))
    rot = _rotation(16, 1)
    new = old @ rot.T + 0.01 * rng.normal(size=old.shape)  # the same space, turned, plus a little noise
    r, err = procrustes(new, old)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-5)  # orthogonal: distances are kept
    assert err < 0.02
    np.testing.assert_allclose(new @ r, old, atol=0.05)
    _, unrelated = procrustes(rng.normal(size=(500, 16)), old)
    assert unrelated > 0.9  # independent vectors cannot be rotated onto each other
    # align(): fitted on some users, measured on held-out ones; an overfit rotation would show there
    keys = np.arange(500)
    r2, held_err = align(new, old, keys)
    assert held_err < 0.02
    few = rng.normal(size=(40, 32))
    _, fit_err = procrustes(rng.normal(size=(40, 32)), few)  # 40 users, 32 dims: a rotation nearly fits noise
    _, honest = align(rng.normal(size=(40, 32)), few, np.arange(40))
    assert honest > fit_err


def test_rotation_is_stored_with_the_transform(tmp_path):
    t = LatentTransform(mean=np.zeros(4, np.float32), components=None, scale=None, row_norm=True,
                        rotation=_rotation(4, 3).astype(np.float32), aligned_to="user-a")
    t.save(tmp_path)
    back = LatentTransform.load(tmp_path)
    assert back.aligned_to == "user-a"
    z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(back.apply(z), t.apply(z), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(back.apply(z), axis=1), 1.0, atol=1e-5)  # rotation keeps row norm


def test_assign_joins_a_space_only_when_aligned(settings, caplog):
    fam = "user_profile"
    first = spaces.assign(settings, fam, "user-a", dim=8)
    assert (first["space_id"], first["new_space"]) == ("user_profile_v1", True)
    ok = spaces.assign(settings, fam, "user-b", dim=8, aligned_to="user-a", alignment_error=0.2)
    assert (ok["space_id"], ok["new_space"], ok["aligned_to"]) == ("user_profile_v1", False, "user-a")
    with caplog.at_level(logging.WARNING, logger="ubp.spaces"):
        bad = spaces.assign(settings, fam, "user-c", dim=8, aligned_to="user-b", alignment_error=0.9)
    assert (bad["space_id"], bad["new_space"]) == ("user_profile_v2", True)
    assert "alignment error 0.900" in bad["reason"]
    assert any("NEW VECTOR SPACE user_profile_v2" in r.getMessage() for r in caplog.records)  # never silent
    wide = spaces.assign(settings, fam, "user-d", dim=16, aligned_to="user-c", alignment_error=0.0)
    assert wide["space_id"] == "user_profile_v3" and "dimension" in wide["reason"]
    # idempotent per version, and readable back
    assert spaces.assign(settings, fam, "user-b", dim=8)["space_id"] == "user_profile_v1"
    assert spaces.space_of(settings, fam, "user-c") == "user_profile_v2"
    assert spaces.space_of(settings, fam, "nope") is None
    assert [s["founded_by"] for s in spaces.spaces(settings, fam)] == ["user-a", "user-c", "user-d"]


def test_served_spaces_declare_v1_of_every_family_and_every_registered_space(settings):
    got = {s["space_id"]: (s["view"], s["table"]) for s in spaces.served_spaces(settings)}
    assert got == {
        "user_profile_v1": ("user_profile", "user_profiles"),
        "user_profile_week_all_v1": ("user_profile_week_all", "user_member_profiles"),
        "user_profile_all_fields_v1": ("user_profile_all_fields", "user_member_profiles"),
        "user_profile_ensemble_v1": ("user_profile_ensemble", "user_profiles_ensemble"),
        "item_vector_v1": ("item_vector", "item_vectors"),
    }
    spaces.assign(settings, "item_vector", "item-a", dim=4)
    spaces.assign(settings, "item_vector", "item-b", dim=4)  # not aligned: a second item space
    got = {s["space_id"]: s["view"] for s in spaces.served_spaces(settings)}
    assert got["item_vector_v2"] == "item_vector_v2" and got["item_vector_v1"] == "item_vector"


def test_space_ids_and_mixing_are_one_line_errors():
    assert spaces.parse_space_id("user_profile_week_all_v12") == ("user_profile_week_all", 12)
    assert spaces.kind_family("user") == "user_profile"
    assert spaces.kind_family("user-week_all") == "user_profile_week_all"
    assert spaces.kind_family("item") == "item_vector"
    for bad in ("user_profile", "v1", "user_profile_v0", ""):
        with pytest.raises(UbpError, match="not a vector-space id"):
            spaces.parse_space_id(bad)
    assert spaces.require_same_space("x", "item_vector_v1", "item_vector_v1") == "item_vector_v1"
    with pytest.raises(UbpError, match="different spaces") as err:
        spaces.require_same_space("similar items", "item_vector_v1", "item_vector_v2")
    assert "\n" not in str(err.value)
    with pytest.raises(UbpError, match="no space id"):
        spaces.require_same_space("x", "item_vector_v1", None)


def test_retrain_joins_the_space_when_aligned_and_founds_one_when_not(settings, monkeypatch, caplog):
    """A warm-started retrain aligns to the serving version (rotation stored with it, same service name); with
    the threshold at 0 the next retrain founds user_profile_v2 and says so. Promotion scores both versions on the
    same validation users of the same data version."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from user_model_fixtures import write_lakehouse

    from ubp.stages.pipeline import compare_models
    from ubp.stages.train_user_model import train_user_model

    write_lakehouse(settings, n_users=120, seed=0, min_len=3, max_len=10)
    small = dict(hidden=16, n_layers=1, batch_size=16, dropout=0.0)

    def train(**kw):
        return train_user_model(settings, member="day_event", overrides=small, show_progress=False, **kw)

    first = train(max_epochs=2, seed=0, promote="always")
    assert first["space"]["space_id"] == "user_profile_v1" and first["space"]["new_space"]
    warm = train(max_epochs=1, seed=1, promote="never", init_from="current")
    space = warm["space"]
    assert space["aligned_to"] == first["version"] and space["space_id"] == "user_profile_v1", space
    assert 0 <= space["alignment_error"] <= spaces.ALIGN_MAX_ERROR and space["users"] >= 100
    stored = LatentTransform.load(warm["model_dir"])
    assert stored.aligned_to == first["version"] and stored.rotation.shape == (stored.dim, stored.dim)

    decision = compare_models(settings, "user", warm["version"])
    fair = decision["scored_on"]
    assert fair["comparable"] and fair["table_version"] == 0
    assert decision["candidate_value"] == fair["candidate"] and decision["current_value"] == fair["current"]
    assert np.isfinite(fair["candidate"]) and np.isfinite(fair["current"])

    monkeypatch.setattr(spaces, "ALIGN_MAX_ERROR", 0.0)
    with caplog.at_level(logging.WARNING, logger="ubp.spaces"):
        cold = train(max_epochs=1, seed=2, promote="never")
    assert cold["space"]["space_id"] == "user_profile_v2" and cold["space"]["new_space"], cold["space"]
    assert any("NEW VECTOR SPACE user_profile_v2" in r.getMessage() for r in caplog.records)
    assert LatentTransform.load(cold["model_dir"]).rotation is None  # a new space keeps its own coordinates
    from ubp.spark_jobs.embed_users import _manifest_space

    assert _manifest_space(cold["model_dir"]) == "user_profile_v2"  # what embed-users writes in `space_id`
