"""The stage registry is the one list: table owners, `ubp run`'s order and the publish views all agree with it.

The DAG side (task outlets, the views each DAG publishes) is checked on the parsed DagBag in `tests/dags/test_dagbag.py`.
"""

from __future__ import annotations

import importlib
import json
import sys
import types

import pytest

from ubp import registry, stage_registry
from ubp.stages import pipeline
from ubp.tables import TABLES


def test_every_stage_function_exists():
    for stage in stage_registry.STAGES:
        fn = getattr(importlib.import_module(stage.module), stage.attr, None)
        assert callable(fn), stage.function


def test_table_owners_are_the_registry_writers():
    writes = [table for s in stage_registry.STAGES for table in s.writes]
    assert len(writes) == len(set(writes)), "a table has one writer"
    assert stage_registry.writer_of() == {t.name: t.owner for t in TABLES.values()}
    for stage in stage_registry.STAGES:
        assert set(stage.reads) <= set(TABLES), stage.name


def test_reads_come_from_earlier_stages():
    """In `ubp run` order, a stage only reads tables that a stage before it writes (or that it writes itself, as
    `sequences` reuses its vocabulary)."""
    written: set[str] = set()
    for stage in stage_registry.run_order():
        assert set(stage.reads) <= written | set(stage.writes), stage.name
        written |= set(stage.writes)


def test_pipeline_tables_follow_the_registry():
    assert list(pipeline.STAGES) == [s.name for s in stage_registry.STAGES]
    assert pipeline.STAGES["embed_users"] == ("ubp.stages.embed_users", "embed_users")
    assert set(pipeline.SPARK_STAGES) == {"ingest", "sequences", "aggregates", "embed_users", "item_content",
                                          "item_vectors", "ensemble", "evaluate"}


def test_publish_views_follow_the_registry(settings):
    pytest.importorskip("feast")
    from ubp.feature_repo.data_sources import view_specs

    from ubp.stages.publish import VIEWS

    assert VIEWS == tuple(stage_registry.FEATURE_VIEWS)
    # a fresh lakehouse declares space v1 of every family: one view per family, on the registry's table
    assert {v: spec["table"] for v, spec in view_specs(settings).items()} == stage_registry.FEATURE_VIEWS
    assert set(stage_registry.BY_NAME["publish"].reads) == set(stage_registry.FEATURE_VIEWS.values())


@pytest.fixture
def recorded_stages(monkeypatch, settings):
    """Every stage replaced by a recorder; the trainers make a registry version so that promotion can run."""
    calls: list[str] = []
    mod = types.ModuleType("ubp_recorded_stages")

    def recorder(name):
        def stage(settings, **kwargs):
            calls.append(name)
            out = {"stage": name, "rows": {}}
            model = stage_registry.BY_NAME[name].model
            if model:
                kind = registry.user_kind(kwargs["member"]) if "member" in kwargs else model
                version, path = registry.new_version(settings, kind)
                metrics = {"metrics": {"val_loss": 1.0}} if model == "user" else {"train": {"best_val_ndcg@10": 0.3}}
                (path / ("model.json" if model == "user" else "config.json")).write_text(json.dumps(metrics))
                out["version"] = version
            return out

        return stage

    for stage in stage_registry.STAGES:
        setattr(mod, stage.name, recorder(stage.name))
        monkeypatch.setitem(pipeline.STAGES, stage.name, ("ubp_recorded_stages", stage.name))
    monkeypatch.setitem(sys.modules, "ubp_recorded_stages", mod)
    return calls


def test_ubp_run_order_is_the_registry_order(settings, recorded_stages, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    pipeline.run_pipeline(settings, raw, publish=True)
    from ubp.models.members import DEFAULT_MEMBERS

    # a per-member stage runs once per GRU-AE member, in the registry's place
    assert recorded_stages == [s.name for s in stage_registry.run_order()
                               for _ in (DEFAULT_MEMBERS if s.per_member else (None,))]
    assert recorded_stages.count("embed_users") == len(DEFAULT_MEMBERS) == 3
    assert "evaluate" not in recorded_stages and recorded_stages[-1] == "publish"
