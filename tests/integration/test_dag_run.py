"""Real Airflow runs: `dag.test()` of `user_profiles` and `item_vectors` on tiny demo data (SQLite metadata DB).

Everything runs in ONE subprocess with its own AIRFLOW_HOME / UBP_LAKEHOUSE (so Airflow's configuration does not leak
into other tests, and one Spark JVM serves all runs). The script:
  1. writes tiny demo data and a copy holding only its first days (`raw_early`);
  2. set-up, outside Airflow (the daily DAG never trains): ingest `raw_early`, build sequences, train a 1-epoch user
     model and item model;
  3. `airflow db migrate`, then `user_profiles.test()` for the day after the data, ingesting the FULL raw folder,
     with injected failures: `ingest` and `ensemble` fail on their first try AFTER their stage committed, so the
     retries must find the work done and double nothing;
  4. `user_profiles.test()` again for the same interval (no injection), `item_vectors.test()` twice, then
     `user_model_training.test()` (1-epoch candidate, guarded promotion);
  5. after each run: table snapshots (counts, distinct keys, content hashes) and what Feast's online store serves.
The script is `tests/helpers/dag_run_script.py`; the tests below assert on the JSON it prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from subprocess_env import subprocess_env

REPO = Path(__file__).resolve().parents[2]

SCRIPT = REPO / "tests" / "helpers" / "dag_run_script.py"  # run as its own process


@pytest.fixture(scope="module")
def dag_runs(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("dag_run")
    env = subprocess_env(**{
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "UBP_LAKEHOUSE": str(work / "lakehouse"),
        "UBP_RAW_DIR": str(work / "raw"),
        "UBP_AIRFLOW_RETRIES": "2",
        "UBP_AIRFLOW_RETRY_DELAY_S": "1",
        "UBP_SPARK_DRIVER_MEMORY": "1g",
        "UBP_FEAST_ONLINE": "sqlite",
        "PYSPARK_PYTHON": sys.executable,
    })
    log = work / "run.log"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, str(SCRIPT), str(work), str(REPO / "dags")], stdout=fh,
                              stderr=subprocess.STDOUT, text=True, env=env, cwd=work, timeout=1500)
    text = log.read_text()
    assert proc.returncode == 0, text[-8000:]
    line = next(x for x in text.splitlines() if x.startswith("@@"))
    result = json.loads(line[2:])
    print("dag.test timings (s):", result["timings"])
    return result


def _ok(run: dict) -> None:
    assert run["state"] == "success", run["tis"]
    assert all(t["state"] == "success" for t in run["tis"].values()), run["tis"]


@pytest.mark.slow
def test_user_profiles_dag_retries_injected_failures_without_doubling(dag_runs):
    run = dag_runs["up1"]
    _ok(run)
    # the injected tasks failed once (after committing) and succeeded on the retry
    assert run["tis"]["ingest"]["try_number"] == 2 and run["tis"]["ensemble"]["try_number"] == 2
    assert run["tis"]["sequences"]["try_number"] == 1
    snap = run["snapshot"]
    # complete: every distinct raw event is in bronze or quarantined; nothing doubled
    assert snap["events"]["rows"] == snap["events"]["distinct"]
    assert snap["events"]["rows"] + snap["quarantined_events"] == dag_runs["raw_distinct_events"]
    # the run's as-of is the data interval end (the day after the data)
    assert snap["user_sequences"]["as_of"] == [dag_runs["logical_date"]]
    assert dag_runs["logical_date"] in snap["user_profiles_ensemble"]["as_of"]
    for table in ("user_profiles", "user_profiles_ensemble", "user_aggregates"):
        assert snap[table]["rows"] > 0 and snap[table]["rows"] == snap[table]["distinct"], table
    # the daily DAG does not train
    assert dag_runs["models_after"] == dag_runs["models"]
    # asset events: the new days' events landed, so `ubp.bronze.events` (and the tables built from it) changed
    assert {"ubp.bronze.events", "ubp.silver.user_sequences", "ubp.gold.user_profiles"} <= set(run["asset_events"])


@pytest.mark.slow
def test_online_store_serves_the_new_profiles(dag_runs):
    online = dag_runs["up1"]["online"]
    assert len(online) == 5
    for cid, p in online.items():
        assert p["dim"] == p["gold_dim"] > 0, cid
        assert p["max_abs_diff"] < 1e-5, (cid, p)
        assert p["model_version"] == p["gold_model_version"], (cid, p)


@pytest.mark.slow
def test_second_user_profiles_run_for_the_same_interval_changes_nothing(dag_runs):
    first, second = dag_runs["up1"], dag_runs["up2"]
    _ok(second)
    assert all(t["try_number"] == 1 for t in second["tis"].values())
    assert second["snapshot"] == first["snapshot"]
    assert second["online"] == first["online"]
    # nothing new landed: no event for the bronze tables, so `item_vectors` (on `ubp.bronze.products`) is not
    # triggered again
    assert not {"ubp.bronze.events", "ubp.bronze.products", "ubp.bronze.product_text"} & set(second["asset_events"])


@pytest.mark.slow
def test_item_vectors_dag_publishes_cold_items_and_is_idempotent(dag_runs):
    first, second = dag_runs["iv1"], dag_runs["iv2"]
    _ok(first)
    _ok(second)
    vec = first["snapshot"]["item_vectors"]
    assert vec["rows"] == vec["distinct"] == first["snapshot"]["products"]  # every catalog item, once
    assert vec["cold"] > 0  # items the model never saw still get a vector (no retraining)
    online = first["online"]
    assert online["published"] == online["gold"] == vec["rows"]
    assert online["max_abs_diff"] < 1e-5
    assert online["published_cold"] == vec["cold"]
    assert len(online["neighbours"]) == 3 and all(n["sku"] != online["cold_sku"] for n in online["neighbours"])
    assert second["snapshot"] == first["snapshot"]
    assert second["online"] == first["online"]


@pytest.mark.slow
def test_user_model_training_dag_promotes_only_when_not_worse(dag_runs):
    run = dag_runs["train"]
    assert run["state"] == "success", run["tis"]
    tis = run["tis"]
    for member in ("day_event", "week_all", "all_fields"):  # one task group per GRU-AE member
        for task_id in ("train_user_model", "evaluate", "promote"):
            assert tis[f"{member}.{task_id}"]["state"] == "success", tis
    decision = run["last_decision"]
    assert decision["version"] != run["before"]  # a new candidate was trained on the new sequences
    promoted = tis["day_event.model_promoted"]["state"] == "success"  # the asset is updated only on promotion
    assert decision["promoted"] is promoted
    assert (run["current"] == decision["version"]) is promoted
    if not promoted:
        assert tis["day_event.model_promoted"]["state"] == "skipped"
        assert run["current"] == run["before"] and "worse" in decision["reason"]
    # the candidate was warm-started from the serving model and aligned to its space (or founded a new one, said)
    space = run["space"]
    assert space["space_id"].startswith("user_profile_v") and space["reason"], space
    # joined the serving model's space after a measured alignment, or founded a new one and said why
    assert (space["aligned_to"] == run["before"] and space["alignment_error"] is not None) or (
        space["new_space"] and space["space_id"] != "user_profile_v1"), space
    if promoted:  # the model asset event names the space the new model serves
        extras = [e for e in run["model_asset_extras"] if e.get("version") == decision["version"]]
        assert extras and extras[0]["space_id"] == space["space_id"], run["model_asset_extras"]
