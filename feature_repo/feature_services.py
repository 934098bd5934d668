"""Feature services: what downstream models ask for by name, one per vector space.

A service's name IS the id of the vector space it serves (`ubp/spaces.py`): `user_profile_v1` (the served GRU-AE
member), `user_profile_week_all_v1` / `user_profile_all_fields_v1` (the other members), `user_profile_ensemble_v1`,
`item_vector_v1`. A model trained on one keeps working as long as it reads that name: a retrain that aligns to the
space (orthogonal Procrustes, error under the threshold) serves under the same name; anything else (a new
dimension, another method or recipe, a retrain that does not align) founds the next space (`user_profile_v2`) with
its own view and service next to the old one, so downstream models move over deliberately and never read a vector
from a space they were not trained on.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

if __package__:  # imported as `ubp.feature_repo.feature_services` (ubp)
    from ubp.feature_repo.features import _VIEWS
else:  # loaded by the Feast CLI from inside the repo folder
    from features import _VIEWS


def make_feature_services(views: dict[str, FeatureView]) -> dict[str, FeatureService]:
    """A service per space view, named by its space id."""
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


_SERVICES = make_feature_services(_VIEWS)
user_profile_v1 = _SERVICES["user_profile_v1"]
user_profile_ensemble_v1 = _SERVICES["user_profile_ensemble_v1"]
item_vector_v1 = _SERVICES["item_vector_v1"]
globals().update({name: svc for name, svc in _SERVICES.items() if name not in globals()})  # members, later spaces
