"""The real thing: `ubp demo-data` + `ubp run` + `ubp demo-readback` as a user runs them, through the installed `ubp`
script, on tiny demo data: every table gets rows, both models are trained and promoted, and Feast serves the served
member's profile and a cold item's neighbours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UBP = str(Path(sys.executable).parent / "ubp")


def _ubp(*args, env, timeout=1800):
    proc = subprocess.run([UBP, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"ubp {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


@pytest.mark.slow
def test_ubp_run_end_to_end_and_readback(tmp_path):
    raw, lake = tmp_path / "raw", tmp_path / "lakehouse"
    env = {**os.environ, "UBP_SPARK_DRIVER_MEMORY": "1g", "COLUMNS": "200"}
    env.pop("UBP_LAKEHOUSE", None)
    _ubp("demo-data", "--out", str(raw), "--users", "60", "--days", "14", "--seed", "3", env=env)
    out = _ubp("--lakehouse", str(lake), "run", "--raw", str(raw), "--max-epochs", "1",
               "--json", str(tmp_path / "report.json"), env=env)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "rows per table" in out and "read a profile" in out

    rows = report["rows"]
    for table in ("events", "user_sequences", "user_aggregates", "user_profiles", "user_member_profiles",
                  "user_profiles_ensemble", "item_vectors"):
        assert rows.get(table, 0) > 0, (table, rows)
    ran = [s["stage"] for s in report["steps"]]
    assert ran[0] == "ingest" and "publish" in ran[-1]
    assert report["models"]["user"] and report["models"]["item"]
    assert Path(report["outputs"]["user_profiles_ensemble"]).is_dir()
    assert report["published"] is True

    # reading back from Feast: one user's profile and one cold item's neighbours
    back = _ubp("--lakehouse", str(lake), "demo-readback", "--k", "3", env=env)
    assert "profile of client" in back
    # the served profile is the served member's (day_event): the other members' rows live in their own table
    assert f"model_version: {report['models']['user']}" in back and report["models"]["user"].endswith("day_event")
    from deltalake import DeltaTable

    served = DeltaTable(str(lake / "gold" / "user_profiles")).to_pyarrow_table(columns=["model_version", "space_id"])
    assert set(served.column("model_version").to_pylist()) == {report["models"]["user"]}
    assert set(served.column("space_id").to_pylist()) == {"user_profile_v1"}  # every row names its vector space
    others = DeltaTable(str(lake / "gold" / "user_member_profiles")).to_pyarrow_table(
        columns=["model_version", "space_id", "client_id"])
    assert {v.split("-")[1] for v in others.column("model_version").to_pylist()} == {"week_all", "all_fields"}
    assert set(others.column("space_id").to_pylist()) == {"user_profile_week_all_v1", "user_profile_all_fields_v1"}
    for table, space in (("user_profiles_ensemble", "user_profile_ensemble_v1"), ("item_vectors", "item_vector_v1")):
        got = DeltaTable(str(lake / "gold" / table)).to_pyarrow_table(columns=["space_id"])
        assert set(got.column("space_id").to_pylist()) == {space}, table
    # each member is served by its own service (one space each), read the way a downstream model does
    cid = str(others.column("client_id")[0].as_py())
    member = _ubp("--lakehouse", str(lake), "profile", cid, "--service", "user_profile_week_all_v1", env=env)
    assert json.loads(next(x for x in member.splitlines() if x.startswith("{")))["space_id"] == (
        "user_profile_week_all_v1")
    assert "nearest items to sku" in back
    n_line = next(line for line in back.splitlines() if "nearest items to sku" in line)
    assert int(n_line.split()[0]) > 0, back
