"""Feature services: what downstream models ask for by name.

Version-in-name rule: the `_vN` suffix names a *vector space*. A model trained on `user_profile_v1` keeps working as
long as the vectors it reads are comparable with the ones it was trained on. Retraining the same architecture on new
data (a new `model_version` inside the same space contract) keeps the name; anything that changes what a coordinate
means (a new dimension, another embedding method, another ensemble recipe or profile table) gets a NEW service
(`user_profile_v2`) next to the old one, so downstream models move over deliberately and never read a vector from
a space they were not trained on.

Hence two user-profile services, never one that switches: `user_profile_v1` always serves the GRU-AE profile (gold
`user_profiles`), `user_profile_ensemble_v1` the ensemble profile (gold `user_profiles_ensemble`), whether or not the
other table exists. (A publish does move a service between the two slots of its view, `<view>__a` / `<view>__b`, see
`ubp.feast_slots`: two copies of the same view over the same table, so the space never changes.)
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from ubp.feast_slots import complete, pin_service, served_names

if __package__:  # imported as `feature_repo.feature_services` (ubp)
    from ubp.feature_repo.features import LOGICAL_VIEWS, SLOT_RECORDS
else:  # loaded by the Feast CLI from inside the repo folder
    from features import LOGICAL_VIEWS, SLOT_RECORDS


def make_feature_services(views: dict[str, FeatureView]) -> dict[str, FeatureService]:
    """The services over the logical views (`features.make_feature_views`); `ubp.feast_slots.pin_service` points
    each at the served slot of its view (aliased to the logical name, so the feature names stay the same)."""
    return {
        "user_profile_v1": FeatureService(
            name="user_profile_v1",
            features=[views["user_profile"]],
            description="GRU-AE user profile (space v1, gold user_profiles) with model version, as-of, event count.",
            tags={"owner": "ubp", "table": "user_profiles"},
        ),
        "user_profile_ensemble_v1": FeatureService(
            name="user_profile_ensemble_v1",
            features=[views["user_profile_ensemble"]],
            description="Ensemble user profile (space v1, gold user_profiles_ensemble) with model version, as-of, "
                        "event count.",
            tags={"owner": "ubp", "table": "user_profiles_ensemble"},
        ),
        "item_vector_v1": FeatureService(
            name="item_vector_v1",
            features=[views["item_vector"]],
            description="Item vector (space v1), cold items included.",
            tags={"owner": "ubp"},
        ),
    }


_SERVED = served_names(complete(LOGICAL_VIEWS, SLOT_RECORDS))
_SERVICES = {name: pin_service(s, _SERVED) for name, s in make_feature_services(LOGICAL_VIEWS).items()}
user_profile_v1 = _SERVICES["user_profile_v1"]
user_profile_ensemble_v1 = _SERVICES["user_profile_ensemble_v1"]
item_vector_v1 = _SERVICES["item_vector_v1"]
