"""The DAGs' shared runtime helpers (`dags/_ubp_common.py`), run in a subprocess with its own AIRFLOW_HOME: the
daily landing folder, typed Params, and `validate_config` refusing a bad knob in one line. The helpers that need a
parsed DagBag (failure injection, the as-of) are checked in test_dagbag.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from subprocess_env import subprocess_env

DAGS = Path(__file__).resolve().parents[2] / "dags"

HELPERS = r"""
import json, sys
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
import _ubp_common as c
from ubp.errors import UbpError

tmp = sys.argv[2]
out = {}
as_of = datetime(2025, 7, 2, tzinfo=timezone.utc)  # the daily run of 2025-07-01 (data interval end)
out["flat"] = c.landing_dir(tmp + "/flat", as_of)
out["dated"] = c.landing_dir(tmp + "/dated", as_of)
out["dated_noon"] = c.landing_dir(tmp + "/dated", datetime(2025, 7, 1, 12, tzinfo=timezone.utc))
names = ("lakehouse", "raw_dir", "feast_online", "spark_master", "as_of")
good = {"lakehouse": tmp + "/lake", "raw_dir": tmp + "/dated", "feast_online": "redis", "spark_master": "local[2]",
        "as_of": "2025-07-02"}
out["good"] = c.check_config(good, names, as_of)
errors = {}
for key, bad in (("feast_online", "mysql"), ("as_of", "yesterday"), ("raw_dir", tmp + "/nowhere")):
    try:
        c.check_config({**good, key: bad}, names, as_of)
        errors[key] = None
    except UbpError as exc:
        errors[key] = str(exc)
try:  # the day's landing folder is missing
    c.check_config(good, names, datetime(2025, 7, 5, tzinfo=timezone.utc))
except UbpError as exc:
    errors["missing_day"] = str(exc)
out["errors"] = errors
params = c.params(*names)
rejected = {}
for key, bad in (("feast_online", "mysql"), ("as_of", 3)):
    try:
        params[key].resolve(bad)
        rejected[key] = False
    except Exception:
        rejected[key] = True
out["rejected"] = rejected
out["accepted"] = [params["feast_online"].resolve("sqlite"), params["feast_online"].resolve(None)]
out["epochs_rejected"] = []
for bad in (0, "3", 2.5):
    try:
        c.params("user_max_epochs")["user_max_epochs"].resolve(bad)
    except Exception:
        out["epochs_rejected"].append(bad)
print("@@" + json.dumps(out))
"""


def test_landing_partitions_and_config_validation(tmp_path):
    """The daily ingest reads only its day's landing folder (a flat folder still whole); the Params are typed and
    `validate_config` (the first task) rejects a bad knob in one line before any Spark stage."""
    (tmp_path / "flat").mkdir()
    for day in ("2025-06-30", "2025-07-01"):
        (tmp_path / "dated" / day).mkdir(parents=True)
    env = subprocess_env(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    proc = subprocess.run([sys.executable, "-c", HELPERS, str(DAGS), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("@@"))[2:])
    assert out["flat"] == str(tmp_path / "flat")
    assert out["dated"] == str(tmp_path / "dated" / "2025-07-01")  # the day that ended at the as-of
    assert out["dated_noon"] == str(tmp_path / "dated" / "2025-07-01")
    assert out["good"]["landing"] == str(tmp_path / "dated" / "2025-07-01")
    errors = out["errors"]
    assert all(e and "\n" not in e and e.startswith("invalid configuration: ") for e in errors.values()), errors
    assert "feast_online must be sqlite or redis, got 'mysql'" in errors["feast_online"]
    assert "as_of must be an ISO date" in errors["as_of"]
    assert "nowhere does not exist" in errors["raw_dir"]
    assert "2025-07-04 does not exist" in errors["missing_day"]
    assert out["rejected"] == {"feast_online": True, "as_of": True}
    assert out["accepted"] == ["sqlite", None]
    assert out["epochs_rejected"] == [0, "3", 2.5]
