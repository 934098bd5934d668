"""`ubp export --format challenge`: dtypes, shapes, slice choice, --clients order and mean fill, bad input."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from ubp.errors import UbpError
from ubp.tables import USER_PROFILES

T1 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)


def _profiles(ids, emb, version="user-a", as_of=T2) -> pa.Table:
    n = len(ids)
    return pa.Table.from_pydict({
        "client_id": np.asarray(ids, np.int64), "embedding": [list(map(float, r)) for r in emb],
        "model_version": [version] * n, "space_id": ["user_profile_v1"] * n, "as_of": [as_of] * n, "n_events": [3] * n,
        "created_at": [dt.datetime(2024, 4, 2, tzinfo=dt.UTC)] * n,
    }, schema=USER_PROFILES.arrow_schema())


def _write(settings, table: pa.Table, name: str = "user_profiles", mode: str = "append") -> None:
    from deltalake import write_deltalake

    path = settings.table_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(str(path), table, mode=mode)


@pytest.fixture
def profiles(settings):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    ids = np.arange(100, 150)
    _write(settings, _profiles(ids[:25], emb[:25]))
    _write(settings, _profiles(ids[25:], emb[25:]))
    _write(settings, _profiles([1, 2], np.ones((2, 8)), as_of=T1))  # an older as-of slice: not exported
    _write(settings, _profiles([7], np.ones((1, 8)) * 5, version="user-b", as_of=T1))
    return settings, dict(zip(ids.tolist(), emb, strict=True)), emb


def test_export_all_rows_of_newest_slice(profiles, tmp_path):
    from ubp.export import export_challenge

    settings, by_id, _ = profiles
    info = export_challenge(settings, tmp_path / "out", batch_size=7)
    ids = np.load(tmp_path / "out" / "client_ids.npy")
    emb = np.load(tmp_path / "out" / "embeddings.npy")
    assert ids.dtype == np.int64 and ids.ndim == 1 and emb.dtype == np.float16 and emb.shape == (50, 8)
    assert sorted(ids.tolist()) == list(range(100, 150))
    assert np.isfinite(emb).all()
    for i, cid in enumerate(ids):
        np.testing.assert_allclose(emb[i], by_id[int(cid)], atol=2e-3)
    assert info["model_version"] == "user-a" and info["as_of"].startswith("2024-04-01")
    assert json.loads((tmp_path / "out" / "export.json").read_text())["rows"]["client_ids"] == 50
    # an explicit older slice
    old = export_challenge(settings, tmp_path / "old", model_version="user-b")
    assert old["rows"]["client_ids"] == 1 and np.load(tmp_path / "old" / "client_ids.npy").tolist() == [7]


def test_export_clients_order_and_mean_fill(profiles, tmp_path):
    from typer.testing import CliRunner

    from ubp.cli import app

    settings, by_id, emb_all = profiles
    wanted = np.array([149, 5, 100, 120, 999, 101], dtype=np.int64)  # 5 and 999 have no profile
    np.save(tmp_path / "relevant_clients.npy", wanted)
    res = CliRunner().invoke(app, ["--lakehouse", str(settings.lakehouse), "export", "--format", "challenge",
                                   "--out", str(tmp_path / "sub"), "--clients", str(tmp_path / "relevant_clients.npy")])
    assert res.exit_code == 0, res.output
    assert "2 of 6 clients had no profile and were filled with the mean profile" in res.output
    ids = np.load(tmp_path / "sub" / "client_ids.npy")
    emb = np.load(tmp_path / "sub" / "embeddings.npy")
    assert ids.tolist() == wanted.tolist() and emb.shape == (6, 8) and emb.dtype == np.float16
    mean = emb_all.mean(axis=0)
    for i, cid in enumerate(wanted):
        expected = by_id.get(int(cid), mean)
        np.testing.assert_allclose(emb[i], expected, atol=2e-3)


def test_export_rejects_bad_input(profiles, tmp_path):
    from ubp.export import export_challenge

    settings, _, _ = profiles
    np.save(tmp_path / "dup.npy", np.array([100, 100]))
    with pytest.raises(UbpError, match="not unique"):
        export_challenge(settings, tmp_path / "o", clients=tmp_path / "dup.npy")
    with pytest.raises(UbpError, match="--table must be one of"):
        export_challenge(settings, tmp_path / "o", table="events")
    with pytest.raises(UbpError, match="no rows for model_version=user-zzz"):
        export_challenge(settings, tmp_path / "o", model_version="user-zzz")
    _write(settings, _profiles([1], [[np.nan] * 8], version="user-nan"))
    with pytest.raises(UbpError, match="NaN/inf"):
        export_challenge(settings, tmp_path / "o", model_version="user-nan")
    _write(settings, _profiles([1], np.zeros((1, 2049)), version="user-wide"))
    with pytest.raises(UbpError, match="2049 columns"):
        export_challenge(settings, tmp_path / "o", model_version="user-wide")
    assert not (tmp_path / "o" / "client_ids.npy").exists()


def test_export_ensemble_table(settings, tmp_path):
    from ubp.export import export_challenge

    _write(settings, _profiles([3, 4], np.full((2, 16), 70000.0), version="ens-1"), name="user_profiles_ensemble")
    info = export_challenge(settings, tmp_path / "e", table="user_profiles_ensemble")
    emb = np.load(tmp_path / "e" / "embeddings.npy")
    assert emb.shape == (2, 16) and np.isfinite(emb).all()  # values beyond float16 are clipped, not inf
    assert info["clipped_to_float16"] == 32
