"""Fast publish into Feast's SQLite and Redis online stores: byte-exact against Feast's own write path,
incremental, deletes, reads (profile, similar items), CLI and clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from cli_helpers import printed_json
from publish_fixtures import (  # noqa: F401  (redis_url is a fixture)
    AS_OF_2,
    DIM,
    ENSEMBLE_DIM,
    clear_online,
    latest_rows_pandas,
    make_gold,
    online_dump,
    profile_rows,
    redis_url,
)

from ubp.config import Settings
from ubp.errors import UbpError


@pytest.fixture(scope="module")
def gold_template(spark, tmp_path_factory):
    settings = Settings(lakehouse=tmp_path_factory.mktemp("gold") / "lakehouse")
    make_gold(spark, settings)
    return settings.lakehouse


@pytest.fixture
def lake(gold_template, tmp_path):
    """A private copy of the tiny gold lakehouse (tests mutate it)."""
    root = tmp_path / "lakehouse"
    shutil.copytree(gold_template, root)
    return Settings(lakehouse=root)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online(request, monkeypatch):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        monkeypatch.setenv("UBP_REDIS_URL", f"{url.split(',')[0]},db=11")  # own db: flushdb stays private
    return request.param


def test_fast_path_is_byte_exact_with_feast_write(lake, online):
    from ubp import feast_store
    from ubp.feast_slots import served_view
    from ubp.publish import ViewLayout, publish_view

    logical = ("user_profile", "user_profile_ensemble", "user_aggregates", "item_vector")
    store = feast_store.apply(lake, online)
    views = [served_view(store, name) for name in logical]  # the served slot of each (what Feast reads)
    if online == "sqlite":  # created by us before Feast touches it (bigger pages: faster publish)
        import sqlite3

        con = sqlite3.connect(store.config.online_store.path)
        assert con.execute("PRAGMA page_size").fetchone()[0] == feast_store.SQLITE_PAGE_SIZE
        con.close()
    clear_online(store)
    for name in views:
        fv = store.get_feature_view(name)
        store.write_to_online_store(name, latest_rows_pandas(None, ViewLayout.of(fv)))
    reference = online_dump(store)
    assert sum(len(v) for v in reference.values()) > 0
    clear_online(store)
    assert sum(len(v) for v in online_dump(store).values()) == 0
    for name in views:
        res = publish_view(store, store.get_feature_view(name), lake.feast_dir / "published", full=True)
        assert res.rows_written == {"user_profile": 6, "user_profile_ensemble": 6, "user_aggregates": 6,
                                    "item_vector": 10}[name.rpartition("__")[0]]
    assert online_dump(store) == reference
    # and Feast reads back, per service, the newest as-of of each user from that service's own table
    for service, view, dim in (("user_profile_v1", "user_profile", DIM),
                               ("user_profile_ensemble_v1", "user_profile_ensemble", ENSEMBLE_DIM)):
        got = store.get_online_features(
            features=store.get_feature_service(service), entity_rows=[{"client_id": 2}]
        ).to_dict()
        fv = store.get_feature_view(served_view(store, view))
        want = latest_rows_pandas(None, ViewLayout.of(fv))
        want = want[want.client_id == 2].iloc[0]
        assert len(got["embedding"][0]) == dim
        np.testing.assert_array_equal(np.asarray(got["embedding"][0], np.float32), want.embedding)
        assert got["as_of"][0] == AS_OF_2 and got["model_version"][0] == want.model_version


def test_user_profile_v1_serves_gru_even_when_ensemble_exists(lake):
    """The service name pins the vector space: user_profile_v1 reads gold user_profiles whatever else is built."""
    from deltalake import DeltaTable

    from ubp.stages.publish import profile, publish

    res = publish(lake, online="sqlite", views=["user_profile", "user_profile_ensemble"])
    assert res["rows"] == {"user_profile": 6, "user_profile_ensemble": 6}
    assert {"user_profile_v1", "user_profile_ensemble_v1"} <= set(res["feature_services"])
    gru = DeltaTable(str(lake.table_path("user_profiles"))).to_pandas()
    ens = DeltaTable(str(lake.table_path("user_profiles_ensemble"))).to_pandas()
    for client in (1, 6):
        v1 = profile(lake, client, online="sqlite")
        e1 = profile(lake, client, online="sqlite", service="user_profile_ensemble_v1")
        assert (v1["service"], v1["dim"], v1["model_version"]) == ("user_profile_v1", DIM, "gru-v1")
        assert (e1["service"], e1["dim"], e1["model_version"]) == ("user_profile_ensemble_v1", ENSEMBLE_DIM,
                                                                   "ensemble-v1")
        want = gru[(gru.client_id == client) & (gru.as_of == gru.as_of.max())].embedding.iloc[0]
        np.testing.assert_array_equal(np.asarray(v1["embedding"], np.float32), np.asarray(want, np.float32))
        want = ens[ens.client_id == client].embedding.iloc[0]
        np.testing.assert_array_equal(np.asarray(e1["embedding"], np.float32), np.asarray(want, np.float32))
    with pytest.raises(UbpError, match="not a vector-space id"):
        profile(lake, 1, online="sqlite", service="user_profile")
    with pytest.raises(UbpError, match="serves item vectors"):
        profile(lake, 1, online="sqlite", service="item_vector_v1")


def test_incremental_publish_and_deleted_rows(lake, online):
    from ubp.stages.publish import profile, publish

    first = publish(lake, online=online)  # writes slot b of every view (a, served before, is empty) and switches
    clear_online_first = first["views"]["user_profile"]
    assert first["rows"] == {"user_profile": 6, "user_profile_ensemble": 6, "user_aggregates": 6, "item_vector": 10}
    assert clear_online_first["max_as_of"].startswith("2024-02-01")
    assert first["switched"]["user_profile"] == clear_online_first["served"] == "user_profile__b"
    again = publish(lake, online=online)  # nothing changed in Delta: nothing written, nothing switched
    assert again["rows"] == {"user_profile": 0, "user_profile_ensemble": 0, "user_aggregates": 0, "item_vector": 0}
    assert again["views"]["user_profile"]["skipped"] and again["switched"] == {}
    assert again["served"]["user_profile"] == "user_profile__b"
    # --full: slot a gets every entity and is served; from here on both slots hold a complete earlier publish
    assert publish(lake, online=online, full=True)["served"]["user_profile"] == "user_profile__a"

    from datetime import UTC, datetime

    as_of_3 = datetime(2024, 3, 1, tzinfo=UTC)
    # mutate the Spark-written table with the deltalake writer (no Spark job needed): append a newer as-of for
    # users 1 and 4, delete user 3
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from ubp.tables import USER_PROFILES

    path = str(lake.table_path("user_profiles"))
    rows = profile_rows([1, 4], as_of_3, seed=9)
    write_deltalake(path, pa.Table.from_pylist([dict(zip(USER_PROFILES.column_names, r, strict=True)) for r in rows],
                                               schema=USER_PROFILES.arrow_schema()), mode="append")
    DeltaTable(path).delete("client_id = 3")
    third = publish(lake, online=online)  # slot b, incrementally against what b holds
    assert third["views"]["user_profile"]["slot"] == "user_profile__b"
    assert third["rows"]["user_profile"] == 2  # only users 1 and 4 got a newer as-of
    assert third["views"]["user_profile"]["deleted"] == 1
    assert third["rows"]["item_vector"] == 0 and third["rows"]["user_profile_ensemble"] == 0
    assert set(third["switched"]) == {"user_profile"}  # the unchanged views stay on their slot
    assert profile(lake, 1, online=online)["as_of"].startswith("2024-03-01")
    assert profile(lake, 2, online=online)["as_of"].startswith("2024-02-01")
    with pytest.raises(UbpError, match="client_id 3 has no published profile in user_profile_v1"):
        profile(lake, 3, online=online)

    from ubp import feast_store
    from ubp.feast_slots import served_view

    store = feast_store.get_store(lake, online)
    fv = store.get_feature_view(served_view(store, "user_profile"))
    assert len(fv.materialization_intervals) == 2  # slot b: the first and the third; the no-op publish records nothing

    assert publish(lake, online=online, full=True)["rows"]["user_profile"] == 5  # --full rewrites all live users
    clear_online(store)  # the online store was wiped behind our back: the next publish notices and refills it
    refill = publish(lake, online=online)
    assert refill["rows"] == {"user_profile": 5, "user_profile_ensemble": 6, "user_aggregates": 6, "item_vector": 10}
    assert profile(lake, 4, online=online)["as_of"].startswith("2024-03-01")


def test_similar_items_exact_against_numpy(lake):
    from deltalake import DeltaTable

    from ubp.stages.publish import publish, similar_items

    publish(lake, online="sqlite", views=["item_vector"])
    df = DeltaTable(str(lake.table_path("item_vectors"))).to_pandas()
    mat = np.stack(df.vector.to_numpy()).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    k = 4
    recalls = []
    for i, sku in enumerate(df.sku.tolist()):
        scores = mat @ mat[i]
        scores[i] = -np.inf
        truth = set(df.sku.to_numpy()[np.argsort(-scores)[:k]].tolist())
        got = similar_items(lake, sku, k=k, online="sqlite")
        assert len(got) == k and sku not in {g["sku"] for g in got}
        assert [g["score"] for g in got] == sorted((g["score"] for g in got), reverse=True)
        recalls.append(len(truth & {g["sku"] for g in got}) / k)
    assert np.mean(recalls) == 1.0
    everything = similar_items(lake, int(df.sku[0]), k=100, online="sqlite")
    assert {g["sku"] for g in everything if g["is_cold"]} == set(df.sku[df.is_cold & (df.sku != df.sku[0])])
    with pytest.raises(UbpError, match="sku 99999 has no published item vector"):
        similar_items(lake, 99999)


def test_cli_publish_profile_similar(lake):
    import json

    from typer.testing import CliRunner

    from ubp.cli import app

    runner = CliRunner()
    base = ["--lakehouse", str(lake.lakehouse)]
    res = runner.invoke(app, [*base, "publish", "--view", "user_profile", "--view", "item_vector", "--view",
                              "user_profile_ensemble"])
    assert res.exit_code == 0, res.output
    assert printed_json(res.output)["rows"]["user_profile"] == 6
    res = runner.invoke(app, [*base, "profile", "5"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.strip().splitlines()[-1])
    assert row["client_id"] == 5 and row["dim"] == 8 and row["model_version"] == "gru-v1"
    res = runner.invoke(app, [*base, "profile", "5", "--service", "all"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in res.output.splitlines() if ln.startswith("{")]
    assert [(r["service"], r["dim"]) for r in rows] == [("user_profile_v1", 8), ("user_profile_ensemble_v1", 12)]
    res = runner.invoke(app, [*base, "similar-items", "100", "--k", "3"])
    assert res.exit_code == 0, res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("{")]) == 3
    res = runner.invoke(app, [*base, "profile", "777"])
    assert isinstance(res.exception, UbpError)


def test_unpublished_and_bad_inputs_are_clear(tmp_path):
    from ubp.stages.publish import profile, publish

    empty = Settings(lakehouse=tmp_path / "empty")
    with pytest.raises(UbpError, match="run `ubp publish`"):
        profile(empty, 1)
    with pytest.raises(UbpError, match="unknown feature view"):
        publish(empty, views=["nope"])
    with pytest.raises(UbpError, match="online store must be one of"):
        publish(empty, online="bigtable")
    res = publish(empty, online="sqlite")  # no gold tables yet: apply works, every view is skipped with a reason
    assert res["rows"] == {} and set(res["skipped"]) == {"user_profile", "user_profile_ensemble", "user_aggregates",
                                                         "item_vector", "user_profile_week_all",
                                                         "user_profile_all_fields"}
