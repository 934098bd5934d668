"""DagBag checks of `dags/`: no import errors, the expected DAGs and task graphs, assets, retries, parse time, and no
heavy module (torch, pyspark, feast) imported while parsing.

Parsing runs in a subprocess with its own AIRFLOW_HOME, so neither Airflow's configuration nor its imports leak into
the other tests (and so `sys.modules` shows exactly what parsing imported).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from subprocess_env import subprocess_env

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

PARSE = r"""
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk  # noqa: F401  (the Airflow import itself is not DAG parse time)
from airflow.dag_processing.dagbag import DagBag
t1, c1 = time.perf_counter(), time.process_time()
bag = DagBag(sys.argv[1])
t2, c2 = time.perf_counter(), time.process_time()
out = {
    "airflow_import_s": t1 - t0, "parse_s": t2 - t1, "parse_cpu_s": c2 - c1,
    "file_s": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
    "import_errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
    "heavy": sorted(m for m in ("torch", "pyspark", "feast", "deltalake", "pandas") if m in sys.modules),
    "dags": {},
}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        tasks[t.task_id] = {
            "downstream": sorted(t.downstream_task_ids),
            "outlets": sorted(a.name for a in t.outlets),
            "retries": t.retries, "retry_delay_s": t.retry_delay.total_seconds(),
            "backoff": t.retry_exponential_backoff, "queue": t.queue, "pool": t.pool,
            "operator": type(t).__name__,
            "application": getattr(t, "application", None),
            "application_args": getattr(t, "application_args", None),
        }
    timetable = dag.timetable

    def walk(cond):
        if cond is None:
            return []
        if hasattr(cond, "objects"):
            return [name for obj in cond.objects for name in walk(obj)]
        return [cond.name]

    assets = sorted(walk(getattr(timetable, "asset_condition", None)))
    out["dags"][dag_id] = {"tasks": tasks, "timetable": type(timetable).__name__, "assets": assets,
                           "params": sorted(dag.params.keys()), "fileloc": dag.fileloc}
sys.path.insert(0, sys.argv[1])
import os
import _ubp_common as c
os.environ["UBP_INJECT_FAILURE"] = "ingest, ensemble:before"
out["inject"] = [c._injection("ingest", 1), c._injection("ingest", 2), c._injection("ensemble", 1),
                 c._injection("publish", 1)]
out["as_of_explicit"] = c.as_of_of({"params": {"as_of": "2025-06-17T00:00:00"}}).isoformat()
out["product_asset_uri"] = c.table_asset("products").uri
out["publish_kwargs"] = c.PUBLISH_KWARGS
out["stage_outlets"] = {k: sorted(v) for k, v in c.STAGE_OUTLETS.items()}
print("@@" + json.dumps(out))
"""


def _parse(tmp_path: Path, **env_extra: str) -> dict:
    env = subprocess_env(**{
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "UBP_LAKEHOUSE": str(tmp_path / "lake"),
        **env_extra,
    })
    proc = subprocess.run([sys.executable, "-c", PARSE, str(DAGS)], capture_output=True, text=True, env=env,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@"))
    return json.loads(line[2:])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return _parse(tmp_path_factory.mktemp("dagbag"))


MEMBERS = ("day_event", "week_all", "all_fields")  # the served member first
EMBEDS = ["embed_users", "embed_users_all_fields", "embed_users_week_all"]
EXPECTED = {
    "user_profiles": {
        "validate_config": ["ingest"],
        "ingest": ["aggregates", "sequences"],
        "sequences": EMBEDS,
        "aggregates": ["ensemble"],
        **{e: ["ensemble"] for e in EMBEDS},
        "ensemble": ["publish"],
        "publish": [],
    },
    "item_vectors": {"validate_config": ["item_content"], "item_content": ["item_vectors"],
                     "item_vectors": ["publish"], "publish": []},
    "user_model_training": {  # one task group per GRU-AE member, after one validation of the knobs
        "validate_config": [f"{m}.train_user_model" for m in sorted(MEMBERS)],
        **{k.replace("M", m): [x.replace("M", m) for x in v]
           for m in MEMBERS
           for k, v in {"M.train_user_model": ["M.evaluate", "M.model_promoted", "M.promote"],
                        "M.evaluate": ["M.promote"], "M.promote": ["M.model_promoted"],
                        "M.model_promoted": []}.items()},
    },
    "item_model_training": {
        "validate_config": ["item_content"],
        "item_content": ["train_item_model"],
        "train_item_model": ["evaluate", "model_promoted", "promote"],
        "evaluate": ["promote"],
        "promote": ["model_promoted"],
        "model_promoted": [],
    },
}


def test_no_import_errors_and_expected_graphs(parsed):
    assert parsed["import_errors"] == {}
    assert set(parsed["dags"]) == set(EXPECTED)
    for dag_id, graph in EXPECTED.items():
        tasks = parsed["dags"][dag_id]["tasks"]
        assert {t: v["downstream"] for t, v in tasks.items()} == graph, dag_id


def test_parse_is_fast_and_light(parsed):
    # CPU time of parsing every DAG file (wall time on a shared CI box measures the neighbours, not us)
    assert parsed["parse_cpu_s"] < 2.0, (parsed["parse_s"], parsed["file_s"])
    assert parsed["heavy"] == [], f"parsing imported {parsed['heavy']}"
    # the shared helper is not parsed as a DAG file (.airflowignore)
    assert set(parsed["file_s"]) == {"ubp_user_profiles.py", "ubp_item_vectors.py", "ubp_model_training.py"}


def test_retries_with_backoff_on_every_task(parsed):
    for dag in parsed["dags"].values():
        for task_id, t in dag["tasks"].items():
            assert t["retries"] >= 1 and t["retry_delay_s"] > 0 and t["backoff"] > 1, task_id


def test_assets_producers_and_consumers(parsed):
    up = parsed["dags"]["user_profiles"]["tasks"]
    # a stage task's outlet is its alias: it emits an event only for the tables it changed (see test_runtime_helpers)
    assert up["ingest"]["outlets"] == ["ubp.changes.ingest"]
    assert up["sequences"]["outlets"] == ["ubp.changes.sequences"]
    assert all(up[e]["outlets"] == [f"ubp.changes.{e}"] for e in EMBEDS)
    assert up["publish"]["outlets"] == [] and up["validate_config"]["outlets"] == []
    iv = parsed["dags"]["item_vectors"]
    assert iv["tasks"]["item_vectors"]["outlets"] == ["ubp.changes.item_vectors"]
    # item vectors: daily OR when the catalog (or the item model) changes
    assert iv["timetable"] == "AssetOrTimeSchedule"
    assert {"ubp.bronze.products", "ubp.model.item"} <= set(iv["assets"])
    # profiles are rebuilt when a new model of any GRU-AE member is promoted
    assert parsed["dags"]["user_profiles"]["assets"] == ["ubp.model.user", "ubp.model.user-all_fields",
                                                         "ubp.model.user-week_all"]
    train = parsed["dags"]["user_model_training"]["tasks"]
    assert train["day_event.model_promoted"]["outlets"] == ["ubp.model.user"]
    assert train["week_all.model_promoted"]["outlets"] == ["ubp.model.user-week_all"]
    assert parsed["product_asset_uri"].startswith("file://") and parsed["product_asset_uri"].endswith(
        "/lake/bronze/products")
    assert "lakehouse" in parsed["dags"]["user_profiles"]["params"]
    assert "raw_dir" in parsed["dags"]["user_profiles"]["params"]


def test_runtime_helpers(parsed):
    assert parsed["inject"] == ["after", None, "before", None]
    assert parsed["as_of_explicit"] == "2025-06-17T00:00:00+00:00"


def test_spark_submit_mode_and_training_queue(tmp_path):
    out = _parse(tmp_path, UBP_SPARK_MODE="submit", UBP_TRAIN_QUEUE="gpu", UBP_TRAIN_POOL="gpu_pool")
    assert out["import_errors"] == {}
    assert out["heavy"] == []
    up = out["dags"]["user_profiles"]["tasks"]
    for task_id in ("ingest", "sequences", "aggregates", *EMBEDS, "ensemble"):
        t = up[task_id]
        assert t["operator"] == "SparkSubmitOperator", task_id
        assert t["application"].endswith("ubp/stages/pipeline.py") and Path(t["application"]).is_file()
        args = t["application_args"]
        assert args[args.index("--stage") + 1] == task_id.split("_users")[0] + ("_users" if "embed" in task_id else "")
        if task_id == "embed_users_week_all":  # the member rides in the templated stage options
            assert '{"member": "week_all"}' in args[args.index("--kwargs") + 1]
        assert ("--as-of" in args) == (task_id in ("sequences", "aggregates", "ensemble"))
    assert up["publish"]["operator"] != "SparkSubmitOperator"  # Feast publishing stays a Python task
    assert up["ensemble"]["downstream"] == ["publish"]
    for member in MEMBERS:
        train = out["dags"]["user_model_training"]["tasks"][f"{member}.train_user_model"]
        assert train["queue"] == "gpu" and train["pool"] == "gpu_pool"
    assert out["dags"]["user_profiles"]["tasks"]["ingest"]["queue"] != "gpu"


def test_outlets_and_publish_views_follow_the_stage_registry(parsed, tmp_path):
    """Every stage task declares exactly the tables the registry says its stage writes (statically in spark-submit
    mode, through its changes alias otherwise), and each DAG's publish task pushes exactly the feature views fed by
    that DAG's stages."""
    from ubp import stage_registry
    from ubp.tables import TABLES

    submit = _parse(tmp_path, UBP_SPARK_MODE="submit")
    checked = 0
    for dag_id, dag in parsed["dags"].items():
        for task_id, t in dag["tasks"].items():
            name = task_id.rpartition(".")[2]  # a member's task group prefix
            stage = stage_registry.BY_NAME.get("embed_users" if name.startswith("embed_users") else name)
            if stage is None or task_id in ("evaluate", "publish"):
                continue  # promotion plumbing and publishing write no lakehouse table
            want = sorted(f"ubp.{TABLES[name].layer}.{name}" for name in stage.writes)
            assert parsed["stage_outlets"].get(stage.name, []) == sorted(stage.writes), task_id
            assert t["outlets"] == ([f"ubp.changes.{task_id}"] if want else []), task_id
            if submit["dags"][dag_id]["tasks"][task_id]["operator"] == "SparkSubmitOperator":
                assert submit["dags"][dag_id]["tasks"][task_id]["outlets"] == want, task_id
            checked += 1
    assert checked >= 8


def test_validation_runs_first(parsed):
    for dag_id, dag in parsed["dags"].items():
        tasks = dag["tasks"]
        assert "validate_config" in tasks, dag_id
        downstream = {d for t in tasks.values() for d in t["downstream"]}
        assert "validate_config" not in downstream, dag_id  # nothing runs before it
        spark = [t for t, v in tasks.items() if t.rpartition(".")[2] in ("ingest", "item_content")]
        assert all(t in tasks["validate_config"]["downstream"] for t in spark), dag_id


