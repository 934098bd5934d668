"""`ubp run` and its building blocks: stage registry, promotion rule, pipeline order, and one real end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ubp import registry
from ubp.errors import UbpError
from ubp.stages import pipeline

REPO = Path(__file__).resolve().parents[1]
UBP = str(Path(sys.executable).parent / "ubp")


# ---------------------------------------------------------------------------------------------------------------
# promotion
# ---------------------------------------------------------------------------------------------------------------
def _user_version(settings, val_loss):
    version, path = registry.new_version(settings, "user")
    metrics = {} if val_loss is None else {"val_loss": val_loss}
    (path / "model.json").write_text(json.dumps({"kind": "user", "metrics": metrics}))
    return version


def _item_version(settings, ndcg):
    version, path = registry.new_version(settings, "item")
    (path / "config.json").write_text(json.dumps({"config": {}, "train": {"best_val_ndcg@10": ndcg}}))
    return version


def _decisions(settings, kind):
    lines = (registry.kind_dir(settings, kind) / "promotions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_promote_if_not_worse_user_model(settings):
    v1 = _user_version(settings, 2.00)
    first = pipeline.promote_if_not_worse(settings, "user", v1, threshold=0.05)
    assert first["promoted"] and registry.current_version(settings, "user") == v1
    assert first["reason"] == "no current model"

    v2 = _user_version(settings, 2.20)  # 10% worse than v1: beyond a 5% threshold
    worse = pipeline.promote_if_not_worse(settings, "user", v2, threshold=0.05)
    assert not worse["promoted"]
    assert registry.current_version(settings, "user") == v1  # the current model keeps serving
    assert worse["worse_by"] == pytest.approx(0.10)
    last = _decisions(settings, "user")[-1]
    assert last["version"] == v2 and last["promoted"] is False and last["kept"] == v1
    assert "worse" in last["reason"] and "keeping" in last["reason"]

    v3 = _user_version(settings, 2.02)  # 1% worse: within the threshold
    ok = pipeline.promote_if_not_worse(settings, "user", v3, threshold=0.05)
    assert ok["promoted"] and registry.current_version(settings, "user") == v3

    v4 = _user_version(settings, None)  # no validation metric at all: never replaces a serving model
    missing = pipeline.promote_if_not_worse(settings, "user", v4, threshold=0.05)
    assert not missing["promoted"] and registry.current_version(settings, "user") == v3

    again = pipeline.promote_if_not_worse(settings, "user", v3)  # already current: a no-op
    assert not again["promoted"] and again["serving"] == v3


def test_promote_if_not_worse_item_model_higher_is_better(settings):
    v1 = _item_version(settings, 0.30)
    assert pipeline.promote_if_not_worse(settings, "item", v1)["promoted"]
    v2 = _item_version(settings, 0.25)  # NDCG dropped by 17%
    decision = pipeline.promote_if_not_worse(settings, "item", v2, threshold=0.02)
    assert decision["metric"] == "best_val_ndcg@10" and not decision["lower_is_better"]
    assert not decision["promoted"] and registry.current_version(settings, "item") == v1
    v3 = _item_version(settings, 0.35)
    assert pipeline.promote_if_not_worse(settings, "item", v3, threshold=0.02)["promoted"]
    assert registry.current_version(settings, "item") == v3


# ---------------------------------------------------------------------------------------------------------------
# stage registry and pipeline order (fake stages: the real ones run in the slow test below)
# ---------------------------------------------------------------------------------------------------------------
CALLS: list[tuple[str, dict]] = []


def _fake(name):
    def stage(settings, **kwargs):
        CALLS.append((name, kwargs))
        return {"stage": name, "rows": {f"{name}_table": len(CALLS)}}

    return stage


def _fake_train(kind, val):
    def train(settings, promote="if_none", **kwargs):
        CALLS.append((f"train_{kind}", {"promote": promote, **kwargs}))
        version, path = registry.new_version(settings, registry.user_kind(kwargs["member"]) if kind == "user"
                                             else kind)
        if kind == "user":
            (path / "model.json").write_text(json.dumps({"metrics": {"val_loss": val}}))
        else:
            (path / "config.json").write_text(json.dumps({"train": {"best_val_ndcg@10": val}}))
        return {"stage": f"train_{kind}", "rows": {}, "version": version}

    return train


@pytest.fixture
def fake_stages(monkeypatch):
    import types

    mod = types.ModuleType("ubp_fake_stages")
    names = ["ingest", "sequences", "aggregates", "embed_users", "item_content", "item_vectors", "ensemble",
             "publish"]
    for name in names:
        setattr(mod, name, _fake(name))
    mod.train_user_model = _fake_train("user", 1.0)
    mod.train_item_model = _fake_train("item", 0.3)
    monkeypatch.setitem(sys.modules, "ubp_fake_stages", mod)
    for name in [*names, "train_user_model", "train_item_model"]:
        monkeypatch.setitem(pipeline.STAGES, name, ("ubp_fake_stages", name))
    CALLS.clear()
    yield mod
    CALLS.clear()


def test_run_stage_drops_only_unset_options(settings, fake_stages):
    def strict(settings, as_of=None):
        return {"stage": "strict", "rows": {"t": 1}, "as_of": as_of}

    fake_stages.strict = strict
    pipeline.STAGES["strict"] = ("ubp_fake_stages", "strict")
    try:
        out = pipeline.run_stage(settings, "strict", as_of=None, raw_dir=None)  # raw_dir=None: dropped
        assert out["rows"] == {"t": 1} and out["seconds"] >= 0
        with pytest.raises(UbpError, match="does not take the option 'raw_dir'"):
            pipeline.run_stage(settings, "strict", raw_dir="/x")
    finally:
        del pipeline.STAGES["strict"]
    with pytest.raises(UbpError, match="unknown stage"):
        pipeline.run_stage(settings, "nope")


def test_run_pipeline_order_training_rule_and_report(settings, fake_stages, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    as_of = datetime(2025, 6, 17, tzinfo=UTC)
    report = pipeline.run_pipeline(settings, raw, as_of=as_of, publish=True, user_members=("day_event", "week_all"))
    order = [name for name, _ in CALLS]
    assert order == ["ingest", "sequences", "aggregates", "train_user", "train_user", "embed_users", "embed_users",
                     "item_content", "train_item", "item_vectors", "ensemble", "publish"]
    assert [kw["member"] for n, kw in CALLS if n in ("train_user", "embed_users")] == ["day_event", "week_all"] * 2
    assert registry.current_version(settings, "user-week_all")  # each member has its own CURRENT
    kwargs = dict(CALLS)
    assert kwargs["sequences"]["as_of"] == as_of and kwargs["ensemble"]["as_of"] == as_of
    assert kwargs["train_user"]["promote"] == "never"  # the pipeline decides promotion itself
    assert report["models"]["user"] and report["models"]["item"]  # first models: promoted (none was serving)
    assert report["published_rows"] == {"publish_table": 12} and "publish_table" not in report["rows"]
    assert "train_user_table" not in report["rows"]
    assert report["outputs"]["user_profiles_ensemble"].endswith("gold/user_profiles_ensemble")
    text = pipeline.format_report(report)
    assert "rows per table" in text and report["models"]["user"] in text and "demo-readback" in text

    # second run: models exist -> no training; no publish when asked
    CALLS.clear()
    served = dict(report["models"])
    again = pipeline.run_pipeline(settings, None, publish=False, user_members=("day_event", "week_all"))
    order = [name for name, _ in CALLS]
    assert "train_user" not in order and "train_item" not in order and "publish" not in order
    assert order[0] == "sequences" and again["models"] == served

    # --retrain with a worse user model: trained, not promoted, reason in the report
    fake_stages.train_user_model = _fake_train("user", 5.0)
    CALLS.clear()
    third = pipeline.run_pipeline(settings, None, retrain=True, publish=False, threshold=0.01,
                                  user_members=("day_event",))
    assert "train_user" in [n for n, _ in CALLS]
    assert third["models"]["user"] == served["user"]
    user_decision = next(d for d in third["decisions"] if d["kind"] == "user")
    assert user_decision["promoted"] is False and "worse" in user_decision["reason"]


def test_parse_as_of_and_missing_raw(settings):
    assert pipeline.parse_as_of("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    assert pipeline.parse_as_of("2025-06-01T02:00:00+02:00") == datetime(2025, 6, 1, tzinfo=UTC)
    assert pipeline.parse_as_of(None) is None
    with pytest.raises(UbpError, match="ISO"):
        pipeline.parse_as_of("yesterday")
    with pytest.raises(UbpError, match="does not exist"):
        pipeline.run_pipeline(settings, settings.lakehouse / "no-such-raw")


# ---------------------------------------------------------------------------------------------------------------
# the real thing: `ubp demo-data` + `ubp run` + `ubp demo-readback` as a user runs them
# ---------------------------------------------------------------------------------------------------------------
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
    assert json.loads(member)["space_id"] == "user_profile_week_all_v1"
    assert "nearest items to sku" in back
    n_line = next(line for line in back.splitlines() if "nearest items to sku" in line)
    assert int(n_line.split()[0]) > 0, back


def test_spark_submit_entry_point_runs_one_stage(settings, fake_stages, tmp_path, monkeypatch):
    """`spark-submit ubp/stages/pipeline.py --stage ...` (what SparkSubmitOperator runs) calls the same stage."""
    import ubp.log

    monkeypatch.setattr(ubp.log, "setup_logging", lambda *a, **k: None)
    result = tmp_path / "out" / "sequences.json"
    rc = pipeline.main(["--stage", "sequences", "--lakehouse", str(settings.lakehouse), "--as-of",
                        "2025-06-17T00:00:00+00:00", "--kwargs", '{"max_len": 64}', "--result", str(result)])
    assert rc == 0
    name, kwargs = CALLS[-1]
    assert name == "sequences" and kwargs == {"as_of": datetime(2025, 6, 17, tzinfo=UTC), "max_len": 64}
    summary = json.loads(result.read_text())
    assert summary["stage"] == "sequences" and summary["rows"] == {"sequences_table": 1}
