"""Feature views over the gold tables.

`make_feature_views` defines the LOGICAL views (`user_profile`, ...). Feast registers each as two slot views,
`<view>__a` and `<view>__b` (same schema and source, `ubp.feast_slots`): a publish writes the slot that is not
served and then switches the feature services over to it in one registry write. The module-level slot views below
are what the Feast CLI (`feast -c feature_repo plan|apply`) registers; they carry the served slots recorded in the
registry of `UBP_LAKEHOUSE` (`UBP_FEAST_ONLINE` picks the SQLite or the Redis registry), so applying the repo from the
CLI does not switch a slot back. ubp itself builds them per lakehouse (`ubp.feast_store.definitions`).

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

if __package__:  # imported as `feature_repo.features` (ubp)
    from ubp.feature_repo.data_sources import (
        item_vector_source,
        user_aggregates_source,
        user_profile_ensemble_source,
        user_profile_source,
    )
    from ubp.feature_repo.entities import item, user
else:  # loaded by the Feast CLI from inside the repo folder (`feast -c feature_repo ...`)
    from data_sources import (
        item_vector_source,
        user_aggregates_source,
        user_profile_ensemble_source,
        user_profile_source,
    )
    from entities import item, user

NO_EXPIRY = timedelta(0)


def _profile_view(name: str, source: SparkSource, description: str) -> FeatureView:
    """A user-profile view (same columns for every profile table: the `user_profiles` contract)."""
    return FeatureView(
        name=name,
        entities=[user],
        ttl=NO_EXPIRY,
        schema=[
            Field(name="embedding", dtype=Array(Float32), description="the user's profile vector"),
            Field(name="model_version", dtype=String, description="model that produced it"),
            Field(name="as_of", dtype=UnixTimestamp, description="built from events strictly before this"),
            Field(name="n_events", dtype=Int64, description="events before as_of"),
        ],
        source=source,
        online=True,
        description=description,
        tags={"owner": "ubp", "table": source.path.rsplit("/", 1)[-1]},
    )


def make_feature_views(sources: dict[str, SparkSource]) -> dict[str, FeatureView]:
    """The feature views for a set of sources (see `data_sources.make_sources`). The two profile views are two
    vector spaces (GRU-AE latent vs normalised ensemble), so they never share a view or a service."""
    return {
        "user_profile": _profile_view(
            "user_profile", sources["user_profile"],
            "Universal behavioral profile of a user: the GRU-autoencoder latent (gold user_profiles).",
        ),
        "user_profile_ensemble": _profile_view(
            "user_profile_ensemble", sources["user_profile_ensemble"],
            "Ensemble profile of a user: normalised members concatenated (gold user_profiles_ensemble).",
        ),
        "user_aggregates": FeatureView(
            name="user_aggregates",
            entities=[user],
            ttl=NO_EXPIRY,
            schema=[
                Field(name="features", dtype=Array(Float32), description="aggregate count features"),
                Field(name="feature_names_version", dtype=String, description="hash of the ordered names"),
                Field(name="n_events", dtype=Int64, description="events before as_of"),
            ],
            source=sources["user_aggregates"],
            online=True,
            description="Hand-made aggregate features (the baseline the profiles are compared with).",
            tags={"owner": "ubp", "table": "user_aggregates"},
        ),
        "item_vector": FeatureView(
            name="item_vector",
            entities=[item],
            ttl=NO_EXPIRY,
            schema=[
                Field(name="vector", dtype=Array(Float32), description="content vector + bounded delta"),
                Field(name="is_cold", dtype=Bool, description="no training interactions (delta = 0)"),
                Field(name="model_version", dtype=String, description="item model version"),
            ],
            source=sources["item_vector"],
            online=True,
            description="Item vectors, cold-start items included.",
            tags={"owner": "ubp", "table": "item_vectors"},
        ),
    }


# the logical views (a dict: the Feast CLI registers module attributes only, and these are not registered)
LOGICAL_VIEWS = make_feature_views({
    "user_profile": user_profile_source,
    "user_profile_ensemble": user_profile_ensemble_source,
    "user_aggregates": user_aggregates_source,
    "item_vector": item_vector_source,
})
# the served slots recorded in the registry the CLI writes (none yet: slot a of every view)
SLOT_RECORDS = file_records(
    Settings().feast_dir / REGISTRY_FILES["redis" if os.environ.get("UBP_FEAST_ONLINE", "").lower() == "redis"
                                          else "sqlite"])
SLOT_VIEWS = slot_views(LOGICAL_VIEWS, SLOT_RECORDS)
globals().update(SLOT_VIEWS)  # user_profile__a, user_profile__b, ...: module attributes, what the Feast CLI registers
