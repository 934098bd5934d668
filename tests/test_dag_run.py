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
The tests below assert on the JSON the script prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import hashlib, json, os, subprocess, sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

work, dags = Path(sys.argv[1]), sys.argv[2]
raw, raw_early = work / "raw", work / "raw_early"
out = {"timings": {}}
t_start = time.perf_counter()

def lap(name, t0):
    out["timings"][name] = round(time.perf_counter() - t0, 1)

# Airflow's metadata DB, migrated while the set-up runs
migrate = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

# 1. demo data (no planted bad rows: every raw event must land) and its first days only
from ubp.demo_data import generate_demo_data
meta = generate_demo_data(raw, users=60, days=14, seed=5, skus=120)
end = datetime.strptime(meta["end"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)  # exclusive end, midnight
cut = (end - timedelta(days=4)).strftime("%Y-%m-%d %H:%M:%S")
raw_keys = set()
for stem_dir in sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith("_")):
    table = pq.read_table(stem_dir)
    (raw_early / stem_dir.name).mkdir(parents=True)
    pq.write_table(table.filter(pc.less(table["timestamp"], cut)), raw_early / stem_dir.name / "part-00000.parquet")
    for row in table.to_pylist():
        raw_keys.add((stem_dir.name, *(str(v) for v in row.values())))
for f in raw.glob("*.parquet"):
    (raw_early / f.name).write_bytes(f.read_bytes())
out["raw_distinct_events"] = len(raw_keys)
logical = end  # the daily run for the day that just ended: as-of = data interval end = `end`
out["logical_date"] = logical.isoformat()

# 2. set-up: models exist before the daily DAG runs (it only embeds with the current model)
from ubp.config import Settings
from ubp.stages.pipeline import run_stage
settings = Settings(lakehouse=os.environ["UBP_LAKEHOUSE"])
t0 = time.perf_counter()
run_stage(settings, "ingest", raw_dir=raw_early)
run_stage(settings, "sequences", as_of=datetime.strptime(cut, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
run_stage(settings, "train_user_model", member="day_event", max_epochs=1, promote="always", show_progress=False)
run_stage(settings, "item_content")
run_stage(settings, "train_item_model", max_epochs=1, promote="always")
lap("setup", t0)
from ubp import registry
out["models"] = {k: registry.current_version(settings, k) for k in ("user", "item")}
assert migrate.wait(timeout=600) == 0, migrate.stdout.read()[-3000:]

from ubp import reader

def rows(name, cols):
    path = settings.table_path(name)
    if not (path / "_delta_log").is_dir():
        return None
    batches = list(reader.iter_batches(path, columns=cols, batch_size=65536))
    return pa.Table.from_batches(batches).to_pylist() if batches else []

def digest(records):
    h = hashlib.sha256()
    for r in sorted(json.dumps(r, sort_keys=True, default=str) for r in records):
        h.update(r.encode())
    return h.hexdigest()[:16]

def rounded(v):
    return [round(float(x), 5) for x in v]

def snapshot():
    snap = {}
    ev = rows("events", ["event_id"])
    snap["events"] = {"rows": len(ev), "distinct": len({r["event_id"] for r in ev})}
    q = rows("quarantine", ["target_table"]) or []
    snap["quarantined_events"] = sum(1 for r in q if r["target_table"] == "events")
    for name in ("user_profiles", "user_profiles_ensemble"):
        rs = rows(name, ["client_id", "model_version", "as_of", "embedding"]) or []
        snap[name] = {
            "rows": len(rs), "distinct": len({(r["client_id"], r["model_version"], r["as_of"]) for r in rs}),
            "as_of": sorted({r["as_of"].isoformat() for r in rs}),
            "hash": digest([{**r, "embedding": rounded(r["embedding"])} for r in rs]),
        }
    ag = rows("user_aggregates", ["client_id", "as_of"]) or []
    snap["user_aggregates"] = {"rows": len(ag), "distinct": len({(r["client_id"], r["as_of"]) for r in ag})}
    sq = rows("user_sequences", ["client_id", "as_of"]) or []
    snap["user_sequences"] = {"rows": len(sq), "as_of": sorted({r["as_of"].isoformat() for r in sq})}
    iv = rows("item_vectors", ["sku", "vector", "is_cold", "model_version"])
    if iv is not None:
        snap["item_vectors"] = {"rows": len(iv), "distinct": len({r["sku"] for r in iv}),
                                "cold": sum(r["is_cold"] for r in iv),
                                "hash": digest([{**r, "vector": rounded(r["vector"])} for r in iv])}
        products = rows("products", ["sku"])
        snap["products"] = len({r["sku"] for r in products})
    return snap

def online_profiles():
    """What Feast serves for a few users, versus the gold row Feast should serve (latest as_of)."""
    from ubp.stages.publish import profile
    ens = rows("user_profiles_ensemble", ["client_id", "as_of", "embedding", "model_version"])
    latest = {}
    for r in ens:
        if r["client_id"] not in latest or r["as_of"] > latest[r["client_id"]]["as_of"]:
            latest[r["client_id"]] = r
    res = {}
    for cid in sorted(latest)[:5]:
        p = profile(settings, cid, service="user_profile_ensemble_v1")  # the ensemble's own service
        gold = latest[cid]
        res[str(cid)] = {"max_abs_diff": float(max(abs(a - b) for a, b in zip(p["embedding"], gold["embedding"]))),
                         "dim": p["dim"], "gold_dim": len(gold["embedding"]),
                         "model_version": p.get("model_version"), "gold_model_version": gold["model_version"],
                         "embedding_head": rounded(p["embedding"][:4])}
    return res

def online_items():
    from ubp.stages.publish import published_item_vectors, similar_items
    iv = rows("item_vectors", ["sku", "vector", "is_cold"])
    gold = {r["sku"]: r for r in iv}
    skus, vecs, cold = published_item_vectors(settings)
    diffs = [float(max(abs(float(a) - b) for a, b in zip(vecs[i], gold[int(s)]["vector"])))
             for i, s in enumerate(skus)]
    cold_sku = next(r["sku"] for r in sorted(iv, key=lambda r: r["sku"]) if r["is_cold"])
    near = similar_items(settings, cold_sku, k=3)
    return {"published": int(len(skus)), "gold": len(gold), "max_abs_diff": max(diffs) if diffs else None,
            "published_cold": int(sum(bool(c) for c in cold)), "cold_sku": cold_sku, "neighbours": near}

def run(dag, label, inject=""):
    if inject:
        os.environ["UBP_INJECT_FAILURE"] = inject
    else:
        os.environ.pop("UBP_INJECT_FAILURE", None)
    t0 = time.perf_counter()
    dr = dag.test(logical_date=logical)
    lap(label, t0)
    tis = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in dr.get_task_instances()}
    return {"state": str(dr.state), "tis": tis, "snapshot": snapshot()}

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dags)
assert not bag.import_errors, bag.import_errors
up, iv = bag.get_dag("user_profiles"), bag.get_dag("item_vectors")

out["up1"] = run(up, "user_profiles_1", inject="ingest:after,ensemble:after")
out["up1"]["online"] = online_profiles()
out["up2"] = run(up, "user_profiles_2")
out["up2"]["online"] = online_profiles()
out["iv1"] = run(iv, "item_vectors_1")
out["iv1"]["online"] = online_items()
out["iv2"] = run(iv, "item_vectors_2")
out["iv2"]["online"] = online_items()
out["models_after"] = {k: registry.current_version(settings, k) for k in ("user", "item")}

# weekly training: a 1-epoch candidate on the new sequences, promoted only if not worse than the serving model
os.environ["UBP_USER_MAX_EPOCHS"] = "1"
t0 = time.perf_counter()
dr = bag.get_dag("user_model_training").test(logical_date=logical)
lap("user_model_training", t0)
decisions = (registry.kind_dir(settings, "user") / "promotions.jsonl").read_text().splitlines()
out["train"] = {"state": str(dr.state), "before": out["models_after"]["user"],
                "tis": {ti.task_id: {"state": str(ti.state)} for ti in dr.get_task_instances()},
                "last_decision": json.loads(decisions[-1]), "current": registry.current_version(settings, "user")}
lap("total", t_start)
print("@@" + json.dumps(out, default=str))
'''


@pytest.fixture(scope="module")
def dag_runs(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("dag_run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "UBP_"))}
    env.update({
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
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(work), str(REPO / "dags")], stdout=fh,
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
    for task_id in ("train_user_model", "evaluate", "promote"):
        assert tis[task_id]["state"] == "success", tis
    decision = run["last_decision"]
    assert decision["version"] != run["before"]  # a new candidate was trained on the new sequences
    promoted = tis["model_promoted"]["state"] == "success"  # the model asset is updated only on promotion
    assert decision["promoted"] is promoted
    assert (run["current"] == decision["version"]) is promoted
    if not promoted:
        assert tis["model_promoted"]["state"] == "skipped"
        assert run["current"] == run["before"] and "worse" in decision["reason"]
