"""`ubp run`'s building blocks (`ubp/stages/pipeline.py`): promotion rule, stage registry and pipeline order (fake
stages), `run_stage` options, and the spark-submit entry point. The real end-to-end run is
tests/integration/test_ubp_run.py."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import pytest

from ubp import registry
from ubp.errors import UbpError
from ubp.stages import pipeline


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
# stage registry and pipeline order (fake stages: the real ones run in tests/integration/test_ubp_run.py)
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
