"""Blue/green slots of the feature views: a publish writes a slot nobody reads, then switches in one registry write.

Each logical feature view L (`user_profile`, `item_vector`, ...: the views of `feature_repo.make_feature_views`) is
registered in Feast as the slot views `L__a` and `L__b`: same schema, same source, each with its own online data
(SQLite table `ubp_L__a`; Redis hash fields `_ts:L__a` and mmh3("L__a:<feature>") next to the other views' fields
of the entity). Exactly one slot of L is served at a time:

- the feature services point at the served slot through a projection alias (`slot_view.with_name(L)`). Feast's
  online read takes the table / hash fields from the view's own name (`compute_table_id(project, table)`,
  `_mmh3(f"{table.name}:{feature}")`) and the output names from the projection (`name_to_use()`: the alias, and
  only with `full_feature_names=True`), so `user_profile_v1` returns the same feature names as ever;
- readers that name a view (`"item_vector__b:vector"`) ask `served_view(store, "item_vector")` first;
- the record of which slot is served lives in the registry, on the slot views' tags (`TAG_SERVED`, and
  `TAG_SWITCHED`: when that slot last became served or stopped being served). The services are derived from it,
  and both are written together.

A publish writes the slot that is NOT served (incrementally against that slot's own publish state), then `switch`
re-points every service at it and moves the tags, as ONE registry write, replaced atomically
(`ubp.feast_registry.AtomicFileRegistryStore`). A reader resolves its service from one registry snapshot, so it reads
all-old or all-new data, never a mix; a publish killed before the switch changes nothing that is served.

The reader-cache rule: a Feast reader may keep using a registry for up to `cache_ttl_seconds` (its cache TTL; in
Feast's `thread` cache mode exactly that long), so after a switch it can still read the slot that was served
before. That slot is the one the NEXT publish writes; `wait_until_writable` makes that publish wait until the slot
has been retired for `cache_ttl_seconds + READ_GRACE_S` (a log line says so). With one publish per pipeline run
(hours) nothing ever waits. A registry cache TTL of 0 means "never refresh" in Feast: the switch refuses it.

`feast_store.apply` re-registers the slot views with the recorded tags and pins the services to the served slots
(`pin`), so applying the repo never switches a slot back.

This module is general over logical view names: it works on a mapping logical name -> FeatureView, whatever views
feature_repo defines.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ubp.errors import UbpError
from ubp.log import get_logger

log = get_logger(__name__)

SLOTS = ("a", "b")
SEP = "__"
TAG_VIEW = "ubp_view"  # the logical view a slot view belongs to
TAG_SLOT = "ubp_slot"  # "a" | "b"
TAG_SERVED = "ubp_served"  # "true" on the served slot, "false" on the other
TAG_SWITCHED = "ubp_switched_at"  # ISO time this slot last became served or stopped being served; "" = never
READ_GRACE_S = 1.0  # a read that resolved its view just before its registry cache expired finishes within this
REGISTRY_FILES = {"sqlite": "registry.db", "redis": "registry.redis.db"}  # per online store, in <lakehouse>/_feast


def slot_name(logical: str, slot: str) -> str:
    """The physical view name of one slot of a logical view: `user_profile` + `a` -> `user_profile__a`."""
    return f"{logical}{SEP}{slot}"


def parse_slot(name: str) -> tuple[str, str] | None:
    """(logical view, slot) of a slot view name, None for any other name."""
    logical, sep, slot = name.rpartition(SEP)
    return (logical, slot) if sep and logical and slot in SLOTS else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class SlotRecord:
    """Which slot of one logical view is served, and when each slot last switched (None: never)."""

    served: str = SLOTS[0]
    switched_at: Mapping[str, datetime | None] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The slot a publish writes: the one not served."""
        return SLOTS[(SLOTS.index(self.served) + 1) % len(SLOTS)]

    def tags(self, slot: str, logical: str) -> dict[str, str]:
        at = self.switched_at.get(slot)
        return {TAG_VIEW: logical, TAG_SLOT: slot, TAG_SERVED: str(slot == self.served).lower(),
                TAG_SWITCHED: at.isoformat() if at else ""}


def records_from_tags(views: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, SlotRecord]:
    """Slot records from (view name, tags) pairs of registered slot views; other views are ignored."""
    served: dict[str, str] = {}
    switched: dict[str, dict[str, datetime | None]] = {}
    for name, tags in views:
        parsed = parse_slot(name)
        if parsed is None or tags.get(TAG_VIEW) != parsed[0]:
            continue
        logical, slot = parsed
        switched.setdefault(logical, {})[slot] = _time(tags.get(TAG_SWITCHED))
        if tags.get(TAG_SERVED) == "true":
            served[logical] = slot
    return {logical: SlotRecord(served.get(logical, SLOTS[0]), at) for logical, at in switched.items()}


def registry_records(registry: Any, project: str, allow_cache: bool = False) -> dict[str, SlotRecord]:
    """The slot records in a Feast registry (empty for a new registry)."""
    try:
        views = registry.list_feature_views(project, allow_cache=allow_cache)
    except FileNotFoundError:
        return {}
    return records_from_tags((fv.name, fv.tags) for fv in views)


def file_records(path: Path | str) -> dict[str, SlotRecord]:
    """The slot records in a registry file, read without a FeatureStore (the Feast CLI's module-level definitions
    use it); empty when the file is missing or unreadable."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    try:
        proto = RegistryProto.FromString(Path(path).read_bytes())
    except (OSError, ValueError):
        return {}
    return records_from_tags((fv.spec.name, dict(fv.spec.tags)) for fv in proto.feature_views)


def slot_views(views: Mapping[str, Any], records: Mapping[str, SlotRecord] | None = None) -> dict[str, Any]:
    """Physical slot views (name -> FeatureView) of logical views (logical name -> FeatureView): copies renamed
    `L__<slot>`, tagged with the record (default: slot a served, never switched)."""
    records = records or {}
    out = {}
    for logical, fv in views.items():
        rec = records.get(logical, SlotRecord())
        for slot in SLOTS:
            name = slot_name(logical, slot)
            cp = fv.__copy__()
            cp.name = name
            cp.projection.name = name
            cp.tags = {**fv.tags, **rec.tags(slot, logical)}
            out[name] = cp
    return out


def complete(logicals: Iterable[str], records: Mapping[str, SlotRecord]) -> dict[str, SlotRecord]:
    """A record for each logical view: the registered one, else the initial one (slot a served, never switched)."""
    return {logical: records.get(logical, SlotRecord()) for logical in logicals}


def served_names(records: Mapping[str, SlotRecord]) -> dict[str, str]:
    """Logical view -> the name of its served slot view."""
    return {logical: slot_name(logical, rec.served) for logical, rec in records.items()}


def pin_service(service: Any, served: Mapping[str, str]) -> Any:
    """`service` with each projection of a logical view (by its logical or any slot name) pointing at the served
    slot, aliased to the logical name (a copy when something changed)."""
    projections, changed = [], False
    for p in service.feature_view_projections:
        parsed = parse_slot(p.name)
        logical = parsed[0] if parsed else p.name
        if logical in served and (p.name != served[logical] or not p.name_alias):
            p = copy.copy(p)
            p.name = served[logical]
            p.name_alias = p.name_alias or logical
            changed = True
        projections.append(p)
    if not changed:
        return service
    out = copy.copy(service)
    out.feature_view_projections = projections
    return out


def pin(objs: Iterable[Any], records: Mapping[str, SlotRecord]) -> list[Any]:
    """Feast objects to apply, made to agree with the recorded slots: slot views get the recorded tags, feature
    services point at the served slots. What `feast_store.apply` registers, so an apply never switches back."""
    from feast import FeatureService, FeatureView

    served = served_names(records)
    out = []
    for obj in objs:
        if isinstance(obj, FeatureView) and parse_slot(obj.name) and obj.tags.get(TAG_VIEW) in records:
            logical, slot = parse_slot(obj.name)
            obj = obj.__copy__()
            obj.tags = {**obj.tags, **records[logical].tags(slot, logical)}
        elif isinstance(obj, FeatureService):
            obj = pin_service(obj, served)
        out.append(obj)
    return out


def served_view(store: Any, logical: str) -> str:
    """The name of the slot view of `logical` that is served now, from the store's registry (its cache rules).
    Use it wherever a view is named: `store.get_online_features(features=[f"{served_view(store, 'item_vector')}:vector"])`."""
    records = registry_records(store.registry, store.project, allow_cache=True)
    if logical not in records:
        raise UbpError(f"feature view {logical!r} is not registered in {store.config.registry.path}: run `ubp publish`")
    return slot_name(logical, records[logical].served)


def cache_ttl_s(store: Any) -> float:
    """How long a reader may keep using a registry it loaded: the registry's `cache_ttl_seconds`."""
    ttl = store.config.registry.cache_ttl_seconds
    if ttl is None or ttl <= 0:
        raise UbpError("the registry's cache_ttl_seconds is 0 (readers never refresh it), so a switched-out slot could "
                       "be read forever: set a positive cache_ttl_seconds in feature_repo/feature_store.yaml")
    return float(ttl)


def writable_in(record: SlotRecord, slot: str, ttl_s: float, now: datetime | None = None) -> float:
    """Seconds until `slot` may be written: 0 unless it stopped being served less than ttl + grace ago."""
    if slot == record.served:
        raise UbpError(f"slot {slot} is served: a publish never writes the served slot")
    at = record.switched_at.get(slot)
    if at is None:
        return 0.0
    ready = at + timedelta(seconds=ttl_s + READ_GRACE_S)
    return max(0.0, (ready - (now or datetime.now(UTC))).total_seconds())


def wait_until_writable(store: Any, logical: str, record: SlotRecord) -> float:
    """Sleep until the target slot of `logical` may be written (the reader-cache rule); returns the seconds waited."""
    ttl = cache_ttl_s(store)
    wait = writable_in(record, record.target, ttl)
    if wait > 0:
        log.info("publish %s: slot %s was served until %s and readers may cache the registry for %.0f s: "
                 "waiting %.1f s before rewriting it", logical, slot_name(logical, record.target),
                 record.switched_at[record.target].isoformat(timespec="seconds"), ttl, wait)
        time.sleep(wait)
    return wait


def switch(store: Any, targets: Mapping[str, str], materialized: Mapping[str, datetime | None] | None = None
           ) -> datetime:
    """Serve slot `targets[L]` of each logical view L, in ONE registry write: the slot views' tags move, every
    feature service projection of L points at the new slot (aliased L), and the new slots' materialization intervals
    are recorded (`materialized`: slot view name -> the oldest as-of written, as `materialize_incremental` records).
    Returns the switch time."""
    registry, project = store.registry, store.project
    registry.refresh(project)  # start from the file (the publish lock keeps other ubp writers out)
    records = registry_records(registry, project, allow_cache=True)
    now = datetime.now(UTC)
    served: dict[str, str] = {}
    for logical, new in targets.items():
        if new not in SLOTS:
            raise UbpError(f"unknown slot {new!r} (slots: {', '.join(SLOTS)})")
        old = records.get(logical, SlotRecord())
        at = {**old.switched_at, **({new: now, old.served: now} if new != old.served else {})}
        rec = SlotRecord(new, at)
        for slot in SLOTS:
            fv = registry.get_feature_view(slot_name(logical, slot), project, allow_cache=True)
            fv.tags = {**fv.tags, **rec.tags(slot, logical)}
            registry.apply_feature_view(fv, project, commit=False)
        served[logical] = slot_name(logical, new)
    for name, min_start in (materialized or {}).items():
        fv = registry.get_feature_view(name, project, allow_cache=True)
        end = datetime.now(UTC)
        start = fv.most_recent_end_time or min_start or end
        registry.apply_materialization(fv, project, start, end, commit=False)
    for service in registry.list_feature_services(project, allow_cache=True):
        pinned = pin_service(service, served)
        if pinned is not service:
            registry.apply_feature_service(pinned, project, commit=False)
    registry.commit()  # the one write: AtomicFileRegistryStore replaces the file
    return now
