"""The Airflow run behind `tests/integration/test_dag_run.py`, in its own process:
`python tests/helpers/dag_run_script.py WORK DAGS`.

A real module (not a string in the test) so that ruff checks it and an editor can follow its calls. The test sets the
environment (AIRFLOW_HOME, UBP_LAKEHOUSE, retries, ...) and reads the JSON line starting with `@@` that this prints;
the steps are described in the test module's docstring.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main(work: Path, dags: str) -> dict:
    """Set up, run the DAGs with `dag.test()`, and return what the tests assert on."""
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

    # 2. set-up: models exist before the daily DAG runs (it only embeds with each member's current model)
    from ubp.config import Settings
    from ubp.registry import DEFAULT_USER_MEMBERS
    from ubp.stages.pipeline import run_stage
    settings = Settings(lakehouse=os.environ["UBP_LAKEHOUSE"])
    t0 = time.perf_counter()
    run_stage(settings, "ingest", raw_dir=raw_early)
    run_stage(settings, "sequences", as_of=datetime.strptime(cut, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
    for member in DEFAULT_USER_MEMBERS:
        run_stage(settings, "train_user_model", member=member, max_epochs=1, promote="always", show_progress=False)
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
            res[str(cid)] = {"max_abs_diff": float(max(abs(a - b) for a, b in zip(p["embedding"], gold["embedding"], strict=False))),
                             "dim": p["dim"], "gold_dim": len(gold["embedding"]),
                             "model_version": p.get("model_version"), "gold_model_version": gold["model_version"],
                             "embedding_head": rounded(p["embedding"][:4])}
        return res

    def online_items():
        from ubp.stages.publish import published_item_vectors, similar_items
        iv = rows("item_vectors", ["sku", "vector", "is_cold"])
        gold = {r["sku"]: r for r in iv}
        skus, vecs, cold = published_item_vectors(settings)
        diffs = [float(max(abs(float(a) - b) for a, b in zip(vecs[i], gold[int(s)]["vector"], strict=False)))
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
        started = datetime.now(UTC)
        dr = dag.test(logical_date=logical)
        lap(label, t0)
        tis = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in dr.get_task_instances()}
        return {"state": str(dr.state), "tis": tis, "snapshot": snapshot(), "asset_events": asset_events(dag, started)}

    def asset_events(dag, since):
        """The assets this DAG's run emitted events for (a table only when the task changed it)."""
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session

        with create_session() as session:
            q = (session.query(AssetModel.name).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                 .filter(AssetEvent.source_dag_id == dag.dag_id, AssetEvent.timestamp >= since))
            return sorted({name for (name,) in q})

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
    candidate = json.loads(decisions[-1])["version"]
    out["train"]["space"] = json.loads((registry.version_dir(settings, "user", candidate) / "model.json")
                                       .read_text()).get("space")
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:  # what the `model_promoted` task told downstream DAGs
        q = (session.query(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
             .filter(AssetEvent.source_dag_id == "user_model_training", AssetModel.name.contains("model")))
        out["train"]["model_asset_extras"] = [dict(extra or {}) for (extra,) in q]
    lap("total", t_start)
    return out


if __name__ == "__main__":
    print("@@" + json.dumps(main(Path(sys.argv[1]), sys.argv[2]), default=str))
