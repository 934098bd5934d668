"""Feature services: what downstream models ask for by name.

Version-in-name rule: the `_vN` suffix names a *vector space*. A model trained on `user_profile_v1` keeps working as
long as the vectors it reads are comparable with the ones it was trained on. Retraining the same architecture on new
data (a new `model_version` inside the same space contract) keeps the name; anything that changes what a coordinate
means (a new dimension, another embedding method, another ensemble recipe or profile table) gets a NEW service
(`user_profile_v2`) next to the old one, so downstream models move over deliberately and never read a vector from
a space they were not trained on.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

if __package__:  # imported as `feature_repo.feature_services` (ubp)
    from feature_repo.features import item_vector, user_aggregates, user_profile
else:  # loaded by the Feast CLI from inside the repo folder
    from features import item_vector, user_aggregates, user_profile


def make_feature_services(views: dict[str, FeatureView]) -> dict[str, FeatureService]:
    return {
        "user_profile_v1": FeatureService(
            name="user_profile_v1",
            features=[views["user_profile"]],
            description="User profile vector (space v1) with its model version, as-of and event count.",
            tags={"owner": "ubp"},
        ),
        "item_vector_v1": FeatureService(
            name="item_vector_v1",
            features=[views["item_vector"]],
            description="Item vector (space v1), cold items included.",
            tags={"owner": "ubp"},
        ),
    }


_SERVICES = make_feature_services(
    {"user_profile": user_profile, "user_aggregates": user_aggregates, "item_vector": item_vector}
)
user_profile_v1 = _SERVICES["user_profile_v1"]
item_vector_v1 = _SERVICES["item_vector_v1"]
