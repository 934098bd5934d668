"""Stage `embed_users`: gold user_profiles from one user-model member's model (Spark batch inference).

The stage only resolves the model version (the member's CURRENT unless one is named); the inference itself is the
Spark job `spark_jobs/embed_users.py`.
"""

from __future__ import annotations

from ubp.config import Settings
from ubp.registry import PRIMARY_USER_MEMBER, user_kind


def embed_users(settings: Settings, model_version: str | None = None, batch_size: int = 512,
                engine: str = "arrow", member: str = PRIMARY_USER_MEMBER) -> dict:
    """Spark batch inference: `user_sequences` -> gold `user_profiles` (the served member) or
    `user_member_profiles` (every other member: one table holds one served space) for one model version of
    `member` (None = its CURRENT). Idempotent per (model_version, as_of): those rows are replaced, nothing else is
    touched."""
    from ubp import registry
    from ubp.spark_jobs.embed_users import run as run_embed

    kind = user_kind(member)
    version = model_version or registry.require_current(settings, kind)
    model_dir = registry.version_dir(settings, kind, version)
    table = "user_profiles" if member == PRIMARY_USER_MEMBER else "user_member_profiles"
    space = version_space(settings, kind, version, model_dir)
    return run_embed(settings, model_dir, version, batch_size=batch_size, engine=engine, table=table, space_id=space)


def version_space(settings: Settings, kind: str, version: str, model_dir) -> str:
    """The vector space of a user-model version; a version trained before spaces existed founds one now."""
    import json

    from ubp import spaces
    from ubp.models.latent import LatentTransform

    family = spaces.kind_family(kind)
    space = spaces.space_of(settings, family, version)
    if space is None:
        transform = LatentTransform.load(model_dir)
        dim = transform.dim if transform else json.loads((model_dir / "config.json").read_text())["hidden"]
        space = spaces.assign(settings, family, version, dim=dim)["space_id"]
    return space
