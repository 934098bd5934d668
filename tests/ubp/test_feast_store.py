"""The Feast repo over Delta: apply, Feast's own materialize as the byte-exact reference of the fast path,
point-in-time correct training data through the Spark offline store, and clear errors for a bad repo."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml
from publish_fixtures import (
    AS_OF_1,
    AS_OF_2,
    DIM,
    clear_online,
    make_gold,
    online_dump,
    private_redis_server,
    profile_rows,
    write_table,
)

from ubp.config import Settings
from ubp.errors import UbpError

LATER = AS_OF_2 + timedelta(days=10)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    settings = Settings(lakehouse=tmp_path_factory.mktemp("feast") / "lakehouse")
    make_gold(spark, settings)
    # rows of a second vector space in the same table, newer than everything else: no v1 read may return them
    from ubp import spaces

    spaces.assign(settings, "user_profile", "gru-v1", dim=DIM)
    spaces.assign(settings, "user_profile", "gru-v9", dim=DIM)  # not aligned: founds user_profile_v2
    write_table(spark, settings, "user_profiles",
                profile_rows([1, 2, 3], LATER, model_version="gru-v9", seed=9, space_id="user_profile_v2"),
                mode="append")
    return settings


def test_materialize_reference_and_point_in_time(lake):
    from deltalake import DeltaTable

    from ubp import feast_store
    from ubp.feast_slots import SLOTS, served_view, slot_name
    from ubp.publish import publish_view

    store = feast_store.apply(lake, "sqlite")
    logical = ("user_profile", "user_profile_v2", "user_profile_week_all", "user_profile_all_fields",
               "user_profile_ensemble", "user_aggregates", "item_vector")
    # one logical view per vector space, each as its blue/green slot views (ubp/feast_slots.py)
    assert {fv.name for fv in store.list_feature_views()} == {slot_name(v, s) for v in logical for s in SLOTS}
    assert {s.name for s in store.list_feature_services()} == {
        "user_profile_v1", "user_profile_v2", "user_profile_week_all_v1", "user_profile_all_fields_v1",
        "user_profile_ensemble_v1", "item_vector_v1"}
    profile_view = served_view(store, "user_profile")
    # the source keeps the space's rows of its gold table
    src = store.get_feature_view(profile_view).batch_source
    assert type(src).__name__ == "SparkSource"  # Delta through Spark, not files
    assert src.query == f"SELECT * FROM delta.`{lake.table_path('user_profiles')}` WHERE space_id = 'user_profile_v1'"
    assert store.get_feature_view(served_view(store, "user_profile_ensemble")).tags["delta_path"] == str(
        lake.table_path("user_profiles_ensemble"))

    # Feast's own materialize (Spark offline store over Delta) is the reference for the fast path
    store.materialize(datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), feature_views=[profile_view])
    reference = online_dump(store)[f"ubp_{profile_view}"]
    assert len(reference) == 6 * 5  # 6 users x 5 features (v1 rows only: v2's are newer but another space)
    clear_online(store)
    res = publish_view(store, store.get_feature_view(profile_view), lake.feast_dir / "published", full=True)
    assert res.rows_written == 6
    assert online_dump(store)[f"ubp_{profile_view}"] == reference
    intervals = store.registry.get_feature_view(profile_view, "ubp").materialization_intervals
    assert len(intervals) == 2  # Feast's materialize + ours, recorded the same way

    # point-in-time training data: the profile valid at each timestamp
    entity_df = pd.DataFrame({
        "client_id": [1, 1, 2, 3],
        "event_timestamp": [AS_OF_1 + timedelta(days=3), LATER + timedelta(days=1),  # v2 has a newer row: unseen
                            AS_OF_1 - timedelta(days=1), AS_OF_2],
    })
    hist = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service("user_profile_v1")
    ).to_df().sort_values(["client_id", "event_timestamp"]).reset_index(drop=True)
    delta = DeltaTable(str(lake.table_path("user_profiles"))).to_pandas()

    def truth(client, as_of):
        row = delta[(delta.client_id == client) & (delta.as_of == pd.Timestamp(as_of))].iloc[0]
        return np.asarray(row.embedding, np.float32)

    np.testing.assert_array_equal(np.asarray(hist.embedding[0], np.float32), truth(1, AS_OF_1))
    np.testing.assert_array_equal(np.asarray(hist.embedding[1], np.float32), truth(1, AS_OF_2))
    assert hist.embedding[2] is None or (isinstance(hist.embedding[2], float) and np.isnan(hist.embedding[2]))
    np.testing.assert_array_equal(np.asarray(hist.embedding[3], np.float32), truth(3, AS_OF_2))  # as_of <= ts
    assert list(hist.n_events[[0, 1, 3]]) == [11, 12, 32]
    assert set(hist.space_id[[0, 1, 3]]) == {"user_profile_v1"}
    # and the v2 service reads v2's rows only
    hist2 = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service("user_profile_v2")).to_df()
    assert set(hist2.space_id.dropna()) == {"user_profile_v2"} and hist2.embedding.notna().sum() == 1


def test_bad_feature_repo_is_one_clear_line(lake, tmp_path):
    from ubp import feast_store

    broken = tmp_path / "repo"
    broken.mkdir()
    (broken / "features.py").write_text("from feast import Entity\nuser = Entity(name='user', join_keys=[\n")
    with pytest.raises(UbpError, match="bad feature repo") as err:
        feast_store.load_repo(broken)
    assert "\n" not in str(err.value)

    bad_template = tmp_path / "feature_store.yaml"
    bad_template.write_text("project: ubp\nregistry: ${nowhere}\n")
    with pytest.raises(UbpError, match="bad feature_store.yaml .*no `registry:` mapping"):
        feast_store.render_config(lake, "sqlite", template=bad_template)
    bad_template.write_text("project: ubp\nregistry: [unclosed\n")
    with pytest.raises(UbpError, match="bad feature_store.yaml") as err:
        feast_store.render_config(lake, "sqlite", template=bad_template)
    assert "\n" not in str(err.value)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("project: ubp\nprovider: local\nregistry:\n  path: x\noffline_store:\n  type: spark\n"
                        "  pathh: x\n")
    for read_only in (False, True):
        with pytest.raises(UbpError, match="bad Feast config.*pathh"):
            feast_store.get_store(lake, "sqlite", template=bad_yaml, read_only=read_only)

    # a view whose column is not in the Delta table
    from feast import FeatureView, Field
    from feast.types import Float32

    defs = feast_store.definitions(lake)
    good = defs["views"]["user_profile"]
    typo = FeatureView(name="user_profile", entities=[defs["entities"]["user"]], ttl=good.ttl,
                       schema=[Field(name="embeding", dtype=Float32)], source=good.batch_source, tags=good.tags)
    with pytest.raises(UbpError, match=r"needs column\(s\) \['embeding'\]"):
        feast_store.check_view_columns([typo])


def test_feast_cli_repo_parses(lake, monkeypatch):
    """The Feast CLI (`feast -c feature_repo -f <rendered yaml> apply`) loads the repo from inside its folder,
    as top-level modules; every object must be found exactly once."""
    import sys

    from ubp import feast_store

    monkeypatch.setenv("UBP_LAKEHOUSE", str(lake.lakehouse))
    monkeypatch.chdir(feast_store.REPO_DIR)
    monkeypatch.syspath_prepend(str(feast_store.REPO_DIR))
    before = set(sys.modules)
    try:
        objs = feast_store.load_repo(feast_store.REPO_DIR)
    finally:
        for name in set(sys.modules) - before:  # drop the top-level copies (features, entities, ...)
            if name.split(".")[0] in {"features", "entities", "data_sources", "feature_services"}:
                del sys.modules[name]
    names = [getattr(o, "name", None) for o in objs]
    views = [f"{v}__{s}" for v in ("user_profile", "user_profile_ensemble", "user_aggregates", "item_vector")
             for s in ("a", "b")]  # the slot views (ubp/feast_slots.py); the logical views are not registered
    for name in ("user", "item", *views, "user_profile_v1", "user_profile_ensemble_v1", "item_vector_v1"):
        assert names.count(name) == 1, (name, names)
    assert "user_profile" not in names
    # the services point at the served slot recorded in the lakehouse's registry, aliased to the logical name
    from ubp.feast_slots import file_records

    served = file_records(lake.feast_dir / "registry.db").get("user_profile")
    service = next(o for o in objs if getattr(o, "name", None) == "user_profile_v1")
    assert [(p.name, p.name_alias) for p in service.feature_view_projections] == [
        (f"user_profile__{served.served if served else 'a'}", "user_profile")]
    queries = {o.query for o in objs if type(o).__name__ == "SparkSource" and o.query}
    assert f"SELECT * FROM delta.`{lake.table_path('item_vectors')}` WHERE space_id = 'item_vector_v1'" in queries
    assert str(lake.table_path("user_aggregates")) in {o.path for o in objs if type(o).__name__ == "SparkSource"}


@pytest.mark.parametrize("password", [None, "s3cret-Pw-42"])
def test_redis_password_comes_from_the_environment_only(lake, monkeypatch, password):
    """Publish and read back through Redis; the password (if any) is in no file of the lakehouse's Feast folder."""
    from ubp import feast_store
    from ubp.feast_slots import served_view
    from ubp.publish import publish_view

    # set, then delete: monkeypatch records the variable, so the password that apply() copies into this process's
    # environment is removed again after the test (a bare delenv of an absent variable records nothing)
    monkeypatch.setenv(feast_store.REDIS_PASSWORD_ENV, "")
    monkeypatch.delenv(feast_store.REDIS_PASSWORD_ENV)
    with private_redis_server(password) as port:
        auth = f":{password}@" if password else ""
        monkeypatch.setenv("UBP_REDIS_URL", f"redis://{auth}127.0.0.1:{port}/0")
        store = feast_store.apply(lake, "redis")
        conn = yaml.safe_load((lake.feast_dir / "feature_store.redis.yaml").read_text())["online_store"]
        conn = conn["connection_string"]
        if password:
            assert conn == f"127.0.0.1:{port},db=0,password=${{UBP_REDIS_PASSWORD}}"
            for path in lake.feast_dir.rglob("*"):
                assert not path.is_file() or password.encode() not in path.read_bytes(), path
        else:
            assert conn == f"127.0.0.1:{port},db=0"
        served = served_view(store, "user_profile")
        res = publish_view(store, store.get_feature_view(served), lake.feast_dir / "published_redis", full=True)
        assert res.rows_written == 6
        got = store.get_online_features(features=[f"{served}:embedding"], entity_rows=[{"client_id": 2}]).to_dict()
        assert got["embedding"][0] is not None and len(got["embedding"][0]) == DIM
        # a fresh process reading the written yaml authenticates with the environment's password alone
        if password:
            monkeypatch.setenv("UBP_REDIS_URL", f"127.0.0.1:{port}")
            monkeypatch.setenv(feast_store.REDIS_PASSWORD_ENV, password)
            again = feast_store.get_store(lake, "redis")
            assert again.config.online_store.connection_string.endswith(f"password={password}")


def test_feature_repo_is_a_plain_feast_repo(lake, tmp_path):
    """`feast -c feature_repo plan` with an absolute UBP_LAKEHOUSE, as the docs say; no template placeholders."""
    import os
    import sys
    from pathlib import Path

    from ubp import feast_store

    text = (feast_store.REPO_DIR / "feature_store.yaml").read_text()
    assert "${online_store}" not in text and "${feast_dir}" not in text
    lakehouse = tmp_path / "plain"  # its own registry: plan must not touch the module's lakehouse
    lakehouse.mkdir()
    env = {**os.environ, "UBP_LAKEHOUSE": str(lakehouse)}
    env.pop("UBP_DELTA_JARS", None)
    feast = Path(sys.executable).with_name("feast")
    res = subprocess.run([str(feast), "-c", str(feast_store.REPO_DIR), "plan", "--skip-source-validation"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("user_profile", "user_profile_ensemble", "user_aggregates", "item_vector", "user_profile_v1"):
        assert name in res.stdout
    assert (lakehouse / "_feast").is_dir()  # the registry/online paths came from UBP_LAKEHOUSE


def test_online_read_needs_no_jars_maven_or_writes(lake, tmp_path, monkeypatch):
    """`ubp profile` reads through an in-memory config: no Delta jars, no Maven, no file written in the lakehouse."""
    from ubp import feast_store
    from ubp.feast_slots import served_view
    from ubp.jars import ensure_delta_jars
    from ubp.publish import publish_view
    from ubp.stages.publish import profile

    store = feast_store.apply(lake, "sqlite")
    publish_view(store, store.get_feature_view(served_view(store, "user_profile")), lake.feast_dir / "published",
                 full=True)

    monkeypatch.setenv("UBP_JAR_CACHE", str(tmp_path / "no-jars"))  # an empty jar cache ...
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # ... and no mvn to fill it
    with pytest.raises(RuntimeError, match="Maven"):
        ensure_delta_jars()

    def snapshot() -> dict:
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in lake.lakehouse.rglob("*") if p.is_file()}

    before = snapshot()
    row = profile(lake, 2)
    assert row["service"] == "user_profile_v1" and row["dim"] == DIM
    assert snapshot() == before
