"""The atomic switch of `ubp publish` (ubp/feast_slots.py): a publish writes the slot view that is not served and
switches the feature services over in one registry write, so a reader sees all-old or all-new data, never a mix.

Real components: the Delta table is written with deltalake, publishes run the real stage (feast apply included),
the killed publish is a real process killed with SIGKILL mid-write, Redis is a private redis-server, and every
user is read back the way a downstream model reads it (`get_online_features` with the feature service)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from publish_fixtures import redis_url  # noqa: F401  (fixture)

from ubp.config import Settings

DIM = 8
CLIENTS = list(range(1, 241))  # 240 users: 12 batches of 20
BATCH = 20
SERVICE = "user_profile_v1"


def write_profiles(lake: Settings, version: int, clients=CLIENTS) -> None:
    """Gold user_profiles at `version`: every user's vector, model_version and as-of say which version it is."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from ubp.tables import USER_PROFILES

    as_of = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=version)
    rows = [{"client_id": c, "embedding": vector(version, c).tolist(), "model_version": f"v{version}",
             "space_id": "user_profile_v1", "as_of": as_of, "n_events": version, "created_at": as_of} for c in clients]
    write_deltalake(str(lake.table_path("user_profiles")), pa.Table.from_pylist(rows, schema=USER_PROFILES.arrow_schema()),
                    mode="overwrite")


def vector(version: int, client: int) -> np.ndarray:
    return np.full(DIM, version, np.float32) + np.float32(client / 1000)


def served_versions(lake: Settings, online: str, clients=CLIENTS) -> list[int | None]:
    """Each user's version as a downstream model reads it: a fresh reader, the feature service, one call for all."""
    from ubp import feast_store

    store = feast_store.get_store(lake, online, read_only=True)
    got = store.get_online_features(features=store.get_feature_service(SERVICE),
                                    entity_rows=[{"client_id": c} for c in clients]).to_dict()
    return _versions(got, clients)


def slot_versions(lake: Settings, online: str, slot_view: str, clients=CLIENTS) -> list[int | None]:
    """Each user's version in one slot view, served or not (read by the view's own name)."""
    from ubp import feast_store

    store = feast_store.get_store(lake, online, read_only=True)
    got = store.get_online_features(features=[f"{slot_view}:embedding", f"{slot_view}:model_version"],
                                    entity_rows=[{"client_id": c} for c in clients]).to_dict()
    return _versions(got, clients)


def _versions(got: dict, clients) -> list[int | None]:
    out = []
    for c, emb, mv in zip(clients, got["embedding"], got["model_version"], strict=True):
        if emb is None:
            out.append(None)
            continue
        version = int(mv.removeprefix("v"))
        np.testing.assert_array_equal(np.asarray(emb, np.float32), vector(version, c))  # the row is whole
        out.append(version)
    return out


@pytest.fixture
def lake(tmp_path):
    return Settings(lakehouse=tmp_path / "lakehouse")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online(request, monkeypatch):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        monkeypatch.setenv("UBP_REDIS_URL", f"{url.split(',')[0]},db=12")  # own db, flushed here
        from ubp.publish import redis_client

        redis_client(f"{url.split(',')[0]},db=12").flushdb()
    return request.param


def publish_once(lake: Settings, online: str, **kw) -> dict:
    from ubp.stages.publish import publish

    return publish(lake, online=online, views=["user_profile"], batch_size=BATCH, index=False, **kw)


def test_killed_publish_serves_all_old_then_all_new(lake, online, tmp_path):
    """v0 and v1 published; v2 (every vector changed, some users deleted) is being published when the process is
    SIGKILLed after a few batches: every user still reads v1. The next publish serves v2 to every user and none of
    the deleted ones, including a user the killed publish had already written."""
    write_profiles(lake, 0)
    assert publish_once(lake, online)["served"]["user_profile"] == "user_profile__b"
    write_profiles(lake, 1)
    assert publish_once(lake, online)["served"]["user_profile"] == "user_profile__a"
    assert served_versions(lake, online) == [1] * len(CLIENTS)

    deleted = {7, 100, 200}
    write_profiles(lake, 2, [c for c in CLIENTS if c not in deleted])
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "UBP_PUBLISH_THROTTLE_S": "0.4", "UBP_PUBLISH_TRACE": str(trace)}  # hooks (ubp/hooks.py)
    code = ("import sys; from ubp.config import Settings; from ubp.stages.publish import publish; "
            f"publish(Settings(lakehouse=sys.argv[1]), online=sys.argv[2], views=['user_profile'], batch_size={BATCH})")
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", code, str(lake.lakehouse), online], env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (trace.exists() and len(trace.read_text().splitlines()) >= 3):
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the publish wrote no batches"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    batches = trace.read_text().splitlines()
    assert 3 <= len(batches) < len(CLIENTS) // BATCH and all(" user_profile__b " in b for b in batches)

    # every user reads v1, deleted ones included: nothing of the half-written slot b is served
    assert served_versions(lake, online) == [1] * len(CLIENTS)
    half = slot_versions(lake, online, "user_profile__b")
    if online == "redis":  # Redis kept what it got: slot b is half v2, half the v0 it held
        assert 2 in half and 0 in half
    else:  # SQLite rolled the publish's transaction back
        assert set(half) == {0}

    # a user the killed publish wrote leaves Delta before the next publish: it must not stay in slot b
    gone_too = next(c for c, v in zip(CLIENTS, half, strict=True) if v == 2) if online == "redis" else CLIENTS[0]
    deleted.add(gone_too)
    write_profiles(lake, 2, [c for c in CLIENTS if c not in deleted])
    res = publish_once(lake, online)
    view = res["views"]["user_profile"]
    assert (view["slot"], view["served"], res["switched"]) == ("user_profile__b", "user_profile__b",
                                                              {"user_profile": "user_profile__b"})
    assert view["deleted"] >= len(deleted) - 1 and view["entities"] == len(CLIENTS) - len(deleted)
    want = [None if c in deleted else 2 for c in CLIENTS]
    assert served_versions(lake, online) == want

    again = publish_once(lake, online)  # nothing changed: nothing written, nothing switched
    assert again["rows"] == {"user_profile": 0} and again["switched"] == {} and "switched_at" not in again
    assert served_versions(lake, online) == want


def test_reader_cache_rule_the_switched_out_slot_waits(lake, monkeypatch, tmp_path):
    """A reader may keep a registry for cache_ttl_seconds after a switch, reading the slot served before it; the
    next publish writes exactly that slot, so it starts only cache_ttl + grace after the switch. A reader holding
    the old service meanwhile reads the old version, whole."""
    from ubp import feast_store
    from ubp.feast_slots import READ_GRACE_S, registry_records

    ttl = 3
    monkeypatch.setenv("UBP_FEAST_CACHE_TTL_S", str(ttl))
    write_profiles(lake, 0)
    publish_once(lake, "sqlite")  # slot b serves v0
    stale = feast_store.get_store(lake, "sqlite", read_only=True)
    old_service = stale.get_feature_service(SERVICE)  # a reader that keeps its service (points at slot b)
    write_profiles(lake, 1)
    second = publish_once(lake, "sqlite")  # slot a serves v1
    assert second["served"]["user_profile"] == "user_profile__a"
    store = feast_store.get_store(lake, "sqlite", read_only=True)
    switched = registry_records(store.registry, store.project)["user_profile"].switched_at["b"]
    assert switched == datetime.fromisoformat(second["switched_at"])

    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("UBP_PUBLISH_TRACE", str(trace))
    write_profiles(lake, 2)
    seen: list[set] = []
    stop = threading.Event()

    def stale_reader() -> None:  # reads slot b through the service it fetched before the switch
        while not stop.is_set():
            got = stale.get_online_features(features=old_service,
                                            entity_rows=[{"client_id": c} for c in CLIENTS]).to_dict()
            seen.append(set(_versions(got, CLIENTS)))
            time.sleep(0.05)

    reader = threading.Thread(target=stale_reader)
    reader.start()
    try:
        third = publish_once(lake, "sqlite")  # must write slot b again
    finally:
        stop.set()
        reader.join()
    view = third["views"]["user_profile"]
    assert view["slot"] == "user_profile__b" and view["waited_s"] > 0
    first_write = float(trace.read_text().split()[0])
    assert first_write >= (switched + timedelta(seconds=ttl + READ_GRACE_S)).timestamp()
    assert seen and all(s in ({0}, {2}) for s in seen)  # one whole version per read, never a mix
    assert {0} in seen  # it did read the old slot while the publish waited
    assert served_versions(lake, "sqlite") == [2] * len(CLIENTS)


def test_apply_keeps_the_served_slot_and_the_feature_names(lake):
    """`feast apply` (ubp's) re-registers the slot views with the recorded slots; the services keep pointing at the
    served slot under the logical name, so the feature names a reader gets are the same as without slots."""
    from ubp import feast_store
    from ubp.feast_slots import TAG_SERVED, served_view

    write_profiles(lake, 0)
    publish_once(lake, "sqlite")
    store = feast_store.apply(lake, "sqlite")  # an apply after the switch: nothing switches back
    assert served_view(store, "user_profile") == "user_profile__b"
    assert store.get_feature_view("user_profile__b").tags[TAG_SERVED] == "true"
    assert store.get_feature_view("user_profile__a").tags[TAG_SERVED] == "false"
    service = store.get_feature_service(SERVICE)
    assert [(p.name, p.name_alias) for p in service.feature_view_projections] == [("user_profile__b", "user_profile")]
    got = store.get_online_features(features=service, entity_rows=[{"client_id": 5}], full_feature_names=True)
    assert set(got.to_dict()) == {"client_id", "user_profile__embedding", "user_profile__model_version",
                                  "user_profile__space_id", "user_profile__as_of", "user_profile__n_events"}
    assert served_versions(lake, "sqlite", [5]) == [0]


def test_pin_and_the_wait_rule():
    from feast import FeatureService
    from ubp.feature_repo.data_sources import make_sources, view_specs
    from ubp.feature_repo.features import make_feature_views

    from ubp.feast_slots import SlotRecord, pin, slot_views, writable_in

    nowhere = Settings(lakehouse="/tmp/nowhere")
    views = make_feature_views(make_sources(nowhere), view_specs(nowhere))
    t = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    records = {"item_vector": SlotRecord("b", {"a": t, "b": t})}
    slots = slot_views(views, {})  # as a stale definition would register them: slot a served
    service = FeatureService(name="s", features=[views["item_vector"]])
    pinned = pin([*slots.values(), service], {**{v: SlotRecord() for v in views}, **records})
    by_name = {o.name: o for o in pinned}
    assert by_name["item_vector__b"].tags["ubp_served"] == "true" and by_name["item_vector__a"].tags["ubp_served"] == "false"
    assert by_name["item_vector__a"].tags["ubp_switched_at"] == t.isoformat()
    assert [(p.name, p.name_alias) for p in by_name["s"].feature_view_projections] == [("item_vector__b", "item_vector")]
    assert [p.name for p in service.feature_view_projections] == ["item_vector"]  # the input is not changed

    rec = records["item_vector"]
    assert rec.target == "a"
    assert writable_in(rec, "a", 60, now=t + timedelta(seconds=10)) == pytest.approx(51.0)
    assert writable_in(rec, "a", 60, now=t + timedelta(seconds=70)) == 0.0
    assert writable_in(SlotRecord(), "b", 60) == 0.0  # never served: writable at once
