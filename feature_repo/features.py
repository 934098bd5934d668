"""Feature views over the gold tables: one per vector space (`ubp/spaces.py`), plus the aggregates.

`make_feature_views` defines the LOGICAL views (`user_profile`, `user_profile_v2`, ...). Feast registers each as two
slot views, `<view>__a` and `<view>__b` (same schema and source, `ubp.feast_slots`): a publish writes the slot that
is not served and then switches the feature services over to it in one registry write. The module-level slot views
below are what the Feast CLI (`feast -c feature_repo plan|apply`) registers; they carry the served slots recorded in
the registry of `UBP_LAKEHOUSE` (`UBP_FEAST_ONLINE` picks the SQLite or the Redis registry), so applying the repo
from the CLI does not switch a slot back. ubp itself builds them per lakehouse (`ubp.feast_store.definitions`).

`ttl=timedelta(0)` means "no expiry": a profile stays valid until a newer as-of replaces it, which is also what the
point-in-time join of `get_historical_features` uses (the latest row with `as_of <= event_timestamp`).
"""

from __future__ import annotations

import os
from datetime import timedelta

from feast import FeatureView, Field
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Array, Bool, Float32, Int64, String, UnixTimestamp

from ubp.config import Settings
from ubp.feast_slots import REGISTRY_FILES, file_records, slot_views

if __package__:  # imported as `ubp.feature_repo.features` (ubp)
    from ubp.feature_repo.data_sources import _SOURCES, _SPECS
    from ubp.feature_repo.entities import item, user
else:  # loaded by the Feast CLI from inside the repo folder (`feast -c feature_repo ...`)
    from data_sources import _SOURCES, _SPECS
    from entities import item, user

NO_EXPIRY = timedelta(0)
_ABOUT = {
    "user_profile": "the served GRU-autoencoder member's profile (gold user_profiles)",
    "user_profile_ensemble": "ensemble profile: normalised members concatenated (gold user_profiles_ensemble)",
}


def _tags(spec: dict[str, str]) -> dict[str, str]:
    """What the publish needs besides the source: the Delta path and the space whose rows the view serves."""
    return {"owner": "ubp", "table": spec["table"], "delta_path": spec["path"], "space_id": spec["space_id"],
            "family": spec["family"]}


def _profile_schema() -> list[Field]:
    """Every profile table's columns (the `user_profiles` contract)."""
    return [
        Field(name="embedding", dtype=Array(Float32), description="the user's profile vector"),
        Field(name="model_version", dtype=String, description="model that produced it"),
        Field(name="space_id", dtype=String, description="vector space (= the feature service name)"),
        Field(name="as_of", dtype=UnixTimestamp, description="built from events strictly before this"),
        Field(name="n_events", dtype=Int64, description="events before as_of"),
    ]


def _item_schema() -> list[Field]:
    return [
        Field(name="vector", dtype=Array(Float32), description="content vector + bounded delta"),
        Field(name="is_cold", dtype=Bool, description="no training interactions (delta = 0)"),
        Field(name="model_version", dtype=String, description="item model version"),
        Field(name="space_id", dtype=String, description="vector space (= the feature service name)"),
    ]


def _aggregates_schema() -> list[Field]:
    return [
        Field(name="features", dtype=Array(Float32), description="aggregate count features"),
        Field(name="feature_names_version", dtype=String, description="hash of the ordered names"),
        Field(name="n_events", dtype=Int64, description="events before as_of"),
    ]


def _view(name: str, source: SparkSource, spec: dict[str, str]) -> FeatureView:
    """The view of one vector space (or of the aggregates, which have none)."""
    sid = spec["space_id"]
    if not sid:
        entity, schema, tags = user, _aggregates_schema(), {"owner": "ubp", "table": spec["table"],
                                                            "delta_path": spec["path"]}
        description = "Hand-made aggregate features (the baseline the profiles are compared with)."
    elif spec["table"] == "item_vectors":
        entity, schema, tags = item, _item_schema(), _tags(spec)
        description = f"Item vectors, cold-start items included, vector space {sid}."
    else:
        about = _ABOUT.get(spec["family"], f"GRU-AE member {spec['family'].removeprefix('user_profile_')}'s "
                                           "profile (gold user_member_profiles)")
        entity, schema, tags = user, _profile_schema(), _tags(spec)
        description = f"User profile, vector space {sid}: {about}."
    return FeatureView(name=name, entities=[entity], ttl=NO_EXPIRY, schema=schema, source=source, online=True,
                       description=description, tags=tags)


def make_feature_views(sources: dict[str, SparkSource], specs: dict[str, dict[str, str]]) -> dict[str, FeatureView]:
    """One view per vector space (see `data_sources.view_specs`) and the aggregates' view: two spaces never share
    a view or a service."""
    return {name: _view(name, sources[name], spec) for name, spec in specs.items()}


# the logical views (a dict: the Feast CLI registers module attributes only, and these are not registered)
LOGICAL_VIEWS = make_feature_views(_SOURCES, _SPECS)
# the served slots recorded in the registry the CLI writes (none yet: slot a of every view)
SLOT_RECORDS = file_records(
    Settings().feast_dir / REGISTRY_FILES["redis" if os.environ.get("UBP_FEAST_ONLINE", "").lower() == "redis"
                                          else "sqlite"])
SLOT_VIEWS = slot_views(LOGICAL_VIEWS, SLOT_RECORDS)
globals().update(SLOT_VIEWS)  # user_profile__a, user_profile__b, ...: module attributes, what the Feast CLI registers
