"""Stage `publish`: `feast apply`, then the fast incremental publish of the gold tables into the online store.

Atomic: each view's rows go into its slot view that is not served, and one registry write then switches every
written view over (`ubp/feast_slots.py`): a reader sees all-old or all-new data, a killed publish changes nothing
that is served.

Also the two read paths people use after a publish: `profile` (one user's profile, through Feast's
`get_online_features` and a feature service: `user_profile_v1` = GRU-AE profile, `user_profile_ensemble_v1` =
ensemble profile) and `similar_items` (top-k cosine over the published item vectors, cold items included: through
the item-vector ANN index that publish builds, `ubp/stages/item_search.py`, or exactly).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.stage_registry import FEATURE_VIEWS

log = get_logger(__name__)

VIEWS = tuple(FEATURE_VIEWS)  # every feature view, in publish order (ubp/stage_registry.py)
ITEM_VIEW = "item_vector"  # the item-vector family (one view per vector space, `ubp/spaces.py`)
# the services `ubp profile --service all` reads: the served GRU-AE member and the ensemble, first spaces
PROFILE_SERVICES = ("user_profile_v1", "user_profile_ensemble_v1")


def publish(
    settings: Settings,
    online: str | None = None,
    views: tuple[str, ...] | list[str] | None = None,
    full: bool = False,
    batch_size: int = 25_000,
    index: bool = True,
) -> dict:
    """Apply the feature repo and publish each view whose gold table exists (a missing table, e.g. no ensemble
    yet, is skipped with a reason; its view and service stay registered).

    online: "sqlite" | "redis" | None (None: env `UBP_FEAST_ONLINE`, else SQLite). Incremental by default: only
    entities whose served row changed since the last publish are written, entities deleted from Delta are deleted
    online. `full=True` rewrites everything. Idempotent: a second run with no Delta change writes nothing.
    When `item_vector` is published (and `index`), the item-vector ANN index of the published table version is
    built too (`ubp.stages.item_search.build_item_index`; kept when it is already up to date).
    """
    from ubp import feast_store

    kind = feast_store.online_kind(online)
    wanted = list(views or VIEWS)
    unknown = [v for v in wanted if v not in VIEWS]
    if unknown:
        raise UbpError(f"unknown feature view(s) {unknown}; known: {', '.join(VIEWS)}")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    with _locked(settings.feast_dir / f".publish-{kind}.lock"):  # Feast's file registry has no concurrent writers
        return _publish_locked(settings, kind, wanted, full, batch_size, index)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish_locked(settings: Settings, kind: str, wanted: list[str], full: bool, batch_size: int,
                    index: bool = True) -> dict:
    """Per view: nothing to do when the served slot holds the current Delta snapshot; else write the other slot
    (waiting for the reader-cache rule first). Then one switch for every written view (`ubp.feast_slots`)."""
    from ubp import feast_slots, feast_store
    from ubp.log import task_progress
    from ubp.publish import PublishResult, ViewLayout, current_state, publish_view

    store = feast_store.apply(settings, kind)
    records = feast_slots.registry_records(store.registry, store.project)
    state_dir = settings.feast_dir / "published"
    out: dict[str, Any] = {"stage": "publish", "online": kind, "rows": {}, "views": {}, "skipped": {}}
    targets: dict[str, str] = {}  # logical view -> the slot written, to switch to
    materialized: dict[str, datetime | None] = {}
    published: dict[str, tuple[str, int, str]] = {}  # logical view -> (table, Delta version now served, space)
    by_family: dict[str, list[str]] = {}  # every vector space of a family has its own logical view
    for logical in sorted(records):
        tags = store.get_feature_view(feast_slots.slot_name(logical, records[logical].served)).tags or {}
        by_family.setdefault(tags.get("family") or logical, []).append(logical)
    with task_progress() as bar:
        for name in (n for family in wanted for n in by_family.get(family, [])):
            rec = records[name]
            served = feast_slots.slot_name(name, rec.served)
            served_fv = store.get_feature_view(served)
            table = ViewLayout.of(served_fv).path
            if not (Path(table) / "_delta_log").is_dir():
                out["skipped"][name] = f"no Delta table at {table}"
                log.warning("publish %s: skipped, no table at %s", name, table)
                continue
            t0 = time.perf_counter()
            current = None if full else current_state(store, served_fv, state_dir)
            if current is not None:  # the served slot is the current snapshot: nothing to write, nothing to switch
                res = PublishResult(served, 0, 0, len(current.keys), current.delta_version, current.max_as_of(),
                                    time.perf_counter() - t0, skipped=True)
                out["views"][name] = {"table": table, "slot": None, "served": served, "switched": False,
                                      "waited_s": 0.0, **res.as_dict()}
            else:
                waited = feast_slots.wait_until_writable(store, name, rec)
                target = feast_slots.slot_name(name, rec.target)
                task = bar.add_task(f"publish {name} -> {target}", total=None)
                res = publish_view(
                    store, store.get_feature_view(target), state_dir, full=full, batch_size=batch_size,
                    record=False, progress=lambda n, t=task: bar.advance(t, n),
                )
                targets[name] = rec.target
                materialized[target] = res.min_as_of
                out["views"][name] = {"table": table, "slot": target, "served": target, "switched": True,
                                      "waited_s": round(waited, 3), **res.as_dict()}
            out["rows"][name] = res.rows_written
            published[name] = (table, res.delta_version, served_fv.tags.get("space_id", ""))
            log.info("publish %s: %s", name, out["views"][name])
    if targets:  # ONE registry write: every written view is served from now on, all together
        out["switched_at"] = feast_slots.switch(store, targets, materialized).isoformat()
        log.info("publish: switched %s", ", ".join(f"{n} -> {feast_slots.slot_name(n, s)}" for n, s in targets.items()))
    out["switched"] = {name: feast_slots.slot_name(name, slot) for name, slot in targets.items()}
    out["served"] = {name: view["served"] for name, view in out["views"].items()}
    for name in (n for n in by_family.get(ITEM_VIEW, []) if n in published and index):  # what is served now
        from ubp.stages.item_search import build_item_index

        table, version, space = published[name]
        out.setdefault("item_index", {})[space] = build_item_index(settings, table, version, space_id=space)
    out["registry"] = str(store.config.registry.path)
    out["feature_services"] = sorted(s.name for s in store.list_feature_services())
    return out


def _store(settings: Settings, online: str | None) -> Any:
    from ubp import feast_store

    kind = feast_store.online_kind(online)
    registry = settings.feast_dir / ("registry.db" if kind == "sqlite" else "registry.redis.db")
    if not registry.exists():
        raise UbpError(f"nothing published to the {kind} online store of {settings.lakehouse} yet: run `ubp publish`")
    return feast_store.get_store(settings, kind, read_only=True)  # reads: no jars, no Maven, no writes


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def profiles(settings: Settings, client_id: int, online: str | None = None,
             services: tuple[str, ...] = PROFILE_SERVICES) -> dict[str, dict | None]:
    """One user's published profile per feature service, read the way a downstream model reads it:
    `get_online_features` with the service (`user_profile_v1`: GRU-AE profile; `user_profile_ensemble_v1`: ensemble
    profile; `user_profile_<member>_v1`: another GRU-AE member; `..._v2`: a later vector space), all through one
    store. None for a service where the user has no published profile."""
    from ubp import spaces

    for s in services:  # a service is a profile space id: user_profile[_<member>|_ensemble]_v<N>
        if spaces.parse_space_id(s)[0] == spaces.ITEM_FAMILY:
            raise UbpError(f"{s} serves item vectors, not user profiles")
    store = _store(settings, online)
    out: dict[str, dict | None] = {}
    for service in services:
        resp = store.get_online_features(
            features=store.get_feature_service(service), entity_rows=[{"client_id": int(client_id)}]
        ).to_dict()
        if resp.get("embedding", [None])[0] is None:
            out[service] = None
            continue
        row = {"service": service, **{k: _plain(v[0]) for k, v in resp.items()}}
        row["dim"] = len(row["embedding"])
        out[service] = row
    return out


def profile(settings: Settings, client_id: int, online: str | None = None, service: str = "user_profile_v1") -> dict:
    """One user's published profile from one feature service (see `profiles`); an error when there is none."""
    row = profiles(settings, client_id, online, (service,))[service]
    if row is None:
        raise UbpError(f"client_id {client_id} has no published profile in {service}")
    return row


def item_space(settings: Settings, space: str | None = None) -> str:
    """The item-vector space to search: `space`, else the newest one (`ubp/spaces.py`)."""
    from ubp import spaces

    if space:
        if spaces.parse_space_id(space)[0] != spaces.ITEM_FAMILY:
            raise UbpError(f"{space} is not an item-vector space (item_vector_v<N>)")
        return space
    known = spaces.spaces(settings, spaces.ITEM_FAMILY)
    return known[-1]["space_id"] if known else spaces.space_id(spaces.ITEM_FAMILY, 1)


def _served_items(settings: Settings, store: Any, logical: str = ITEM_VIEW) -> tuple[str, Any]:
    """The served slot view of an item-vector view and its publish state (what it holds, from which Delta
    version)."""
    from ubp.feast_slots import served_view
    from ubp.publish import PublishedState, state_file

    served = served_view(store, logical)
    state = PublishedState.load(state_file(store, served, settings.feast_dir / "published"))
    if not len(state.keys):
        raise UbpError(f"no item vectors published to {logical} yet: run `ubp publish`")
    return served, state


def published_item_vectors(settings: Settings, online: str | None = None, chunk: int = 5_000,
                           space: str | None = None):
    """(skus, vectors float32 (n, d), is_cold) of every published item of one vector space (default: the newest),
    read back through Feast's online API."""
    import numpy as np

    from ubp import spaces

    store = _store(settings, online)
    served, state = _served_items(settings, store, spaces.view_name(item_space(settings, space)))
    skus = state.keys
    vecs, cold, keep = [], [], []
    for i in range(0, len(skus), chunk):
        part = skus[i : i + chunk]
        resp = store.get_online_features(
            features=[f"{served}:vector", f"{served}:is_cold"],
            entity_rows=[{"sku": int(s)} for s in part],
        ).to_dict()
        for s, v, c in zip(part.tolist(), resp["vector"], resp["is_cold"], strict=True):
            if v is not None:
                keep.append(s)
                vecs.append(np.asarray(v, dtype=np.float32))
                cold.append(bool(c))
    if not vecs:
        raise UbpError("the online store holds no item vectors: run `ubp publish`")
    return np.asarray(keep, dtype=np.int64), np.stack(vecs), np.asarray(cold, dtype=bool)


def top_k_cosine(query, matrix, k: int):
    """Exact top-k cosine: indices and scores, best first."""
    import numpy as np

    q = query / max(float(np.linalg.norm(query)), 1e-12)
    norms = np.linalg.norm(matrix, axis=1)
    scores = (matrix @ q) / np.maximum(norms, 1e-12)
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx, scores[idx]


def similar_items(settings: Settings, sku: int, k: int = 10, online: str | None = None,
                  exact: bool | None = None, space: str | None = None) -> list:
    """The k items most similar to `sku` by cosine over the published item vectors (cold items included; the item
    itself left out), best first.

    exact=None: through the item-vector ANN index when publish built one (it must match the published vectors'
    model version and table version, else a one-line error says to rebuild it), exactly when no index exists;
    exact=True: exact search over every published vector (reads the whole catalog through Feast: small catalogs,
    recall checks); exact=False: the index or an error.
    """
    if k < 1:
        raise UbpError(f"k must be >= 1, got {k}")
    from ubp.stages import item_search

    if exact or (exact is None and not item_search.has_index(settings)):
        return _similar_exact(settings, sku, k, online, space)
    import numpy as np

    from ubp import spaces

    sid = item_space(settings, space)
    store = _store(settings, online)
    served, state = _served_items(settings, store, spaces.view_name(sid))
    resp = store.get_online_features(
        features=[f"{served}:vector", f"{served}:model_version", f"{served}:space_id"], entity_rows=[{"sku": int(sku)}]
    ).to_dict()
    if resp["vector"][0] is None:
        raise UbpError(f"sku {sku} has no published item vector in {sid}")
    spaces.require_same_space(f"sku {sku} in {sid}", sid, resp["space_id"][0])
    index = item_search.load_index(settings, str(resp["model_version"][0]), state.delta_version, space_id=sid)
    return index.neighbours(np.asarray(resp["vector"][0], dtype=np.float32), k, exclude_sku=int(sku))


def _similar_exact(settings: Settings, sku: int, k: int, online: str | None, space: str | None = None) -> list:
    import numpy as np

    skus, vecs, cold = published_item_vectors(settings, online, space=space)
    where = np.nonzero(skus == int(sku))[0]
    if not len(where):
        raise UbpError(f"sku {sku} has no published item vector")
    q = vecs[where[0]]
    others = skus != int(sku)
    idx, scores = top_k_cosine(q, vecs[others], k)
    sk, cd = skus[others], cold[others]
    return [{"sku": int(sk[i]), "score": float(s), "is_cold": bool(cd[i])} for i, s in zip(idx, scores, strict=True)]
