"""Feature services: what downstream models ask for by name, one per vector space.

A service's name IS the id of the vector space it serves (`ubp/spaces.py`): `user_profile_v1` (the served GRU-AE
member), `user_profile_week_all_v1` / `user_profile_all_fields_v1` (the other members), `user_profile_ensemble_v1`,
`item_vector_v1`. A model trained on one keeps working as long as it reads that name: a retrain that aligns to the
space (orthogonal Procrustes, error under the threshold) serves under the same name; anything else (a new
dimension, another method or recipe, a retrain that does not align) founds the next space (`user_profile_v2`) with
its own view and service next to the old one, so downstream models move over deliberately and never read a vector
from a space they were not trained on. (A publish does move a service between the two slots of its view,
`<view>__a` / `<view>__b`, see `ubp.feast_slots`: two copies of the same view over the same rows, so the space never
changes.)
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from ubp.feast_slots import complete, pin_service, served_names

if __package__:  # imported as `ubp.feature_repo.feature_services` (ubp)
    from ubp.feature_repo.features import LOGICAL_VIEWS, SLOT_RECORDS
else:  # loaded by the Feast CLI from inside the repo folder
    from features import LOGICAL_VIEWS, SLOT_RECORDS


def make_feature_services(views: dict[str, FeatureView]) -> dict[str, FeatureService]:
    """A service per space view, named by its space id (`ubp.feast_slots.pin_service` then points each at the
    served slot of its view, aliased to the logical name, so the feature names stay the same)."""
    services = {}
    for view in views.values():
        sid = (view.tags or {}).get("space_id")
        if sid:
            services[sid] = FeatureService(
                name=sid, features=[view],
                description=f"{view.description} One space: never mixed with another.",
                tags={"owner": "ubp", "table": view.tags["table"], "space_id": sid},
            )
    return services


_SERVED = served_names(complete(LOGICAL_VIEWS, SLOT_RECORDS))
_SERVICES = {name: pin_service(s, _SERVED) for name, s in make_feature_services(LOGICAL_VIEWS).items()}
globals().update(_SERVICES)  # user_profile_v1, user_profile_ensemble_v1, item_vector_v1, the members', later spaces
