"""Vector spaces: which model versions produce comparable vectors, and the name downstream models pin.

A *space* is a family of vectors (the served GRU member, each other GRU member, the ensemble, the item vectors) plus
a lineage: the model version that founded it and every later version aligned to it. Its id is also the name of the
Feast feature service that serves it (`user_profile_v1`, `user_profile_week_all_v1`, `item_vector_v2`, ...), and
every row of a profile or item-vector table carries it in `space_id`.

A new model version joins the space of the version it was aligned to (orthogonal Procrustes, `ubp.models.latent`)
when the relative alignment error is at most `ALIGN_MAX_ERROR` and the dimension is the same; otherwise it founds
the next space of its family (`..._v2`), and the log says so: a retrain never silently changes the coordinates a
downstream model reads under a name it pinned.

State: one JSON file per family, `<models>/_spaces/<family>.json`, rewritten atomically (temp file + rename) under
a file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.registry import DEFAULT_USER_MEMBERS, ITEM_KIND, PRIMARY_USER_MEMBER, USER_KIND

log = get_logger(__name__)

ALIGN_MAX_ERROR = 0.5  # relative Frobenius error ||new R - old|| / ||old|| above which a retrain is a new space
ENSEMBLE_FAMILY = "user_profile_ensemble"
ITEM_FAMILY = "item_vector"
_SPACE_ID = re.compile(r"^(?P<family>[a-z][a-z0-9_]*)_v(?P<number>[1-9][0-9]*)$")


def member_family(member: str) -> str:
    """Family of a GRU-AE member's profiles: `user_profile` for the served member, `user_profile_<member>` else."""
    return "user_profile" if member == PRIMARY_USER_MEMBER else f"user_profile_{member}"


def family_table(family: str) -> str:
    """The gold table that holds a family's rows (every space of it, told apart by `space_id`)."""
    if family == ENSEMBLE_FAMILY:
        return "user_profiles_ensemble"
    if family == ITEM_FAMILY:
        return "item_vectors"
    if family == member_family(PRIMARY_USER_MEMBER):
        return "user_profiles"
    if family.startswith("user_profile_"):
        return "user_member_profiles"
    raise UbpError(f"unknown vector-space family {family!r}")


def default_families() -> list[str]:
    """The families a lakehouse serves from the start (each gets space v1 declared before anything is trained)."""
    return [member_family(m) for m in DEFAULT_USER_MEMBERS] + [ENSEMBLE_FAMILY, ITEM_FAMILY]


def view_name(sid: str) -> str:
    """Feast feature view of a space: the family's name for v1 (`user_profile`), the space id after that."""
    family, number = parse_space_id(sid)
    return family if number == 1 else sid


def served_spaces(settings: Settings) -> list[dict[str, str]]:
    """Every space to declare in Feast, as {"space_id", "family", "table", "view"}: the registered ones, and v1 of
    each default family that has none yet."""
    out = []
    for family in dict.fromkeys(default_families() + families(settings)):
        ids = [s["space_id"] for s in spaces(settings, family)] or [space_id(family, 1)]
        out += [{"space_id": sid, "family": family, "table": family_table(family), "view": view_name(sid)}
                for sid in ids]
    return out


def kind_family(kind: str) -> str:
    """Family of a model-registry kind (`user`, `user-<member>`, `item`)."""
    if kind == ITEM_KIND:
        return ITEM_FAMILY
    if kind == USER_KIND:
        return member_family(PRIMARY_USER_MEMBER)
    if kind.startswith(USER_KIND + "-"):
        return member_family(kind[len(USER_KIND) + 1:])
    raise UbpError(f"model kind {kind!r} has no vector-space family")


def space_id(family: str, number: int) -> str:
    return f"{family}_v{int(number)}"


def parse_space_id(sid: str) -> tuple[str, int]:
    """(family, number) of a space id; a one-line error for anything else."""
    m = _SPACE_ID.match(sid or "")
    if not m:
        raise UbpError(f"not a vector-space id: {sid!r} (expected <family>_v<N>, e.g. user_profile_v1)")
    return m["family"], int(m["number"])


def _path(settings: Settings, family: str) -> Path:
    return settings.models_dir / "_spaces" / f"{family}.json"


@contextmanager
def _locked(settings: Settings, family: str) -> Iterator[dict[str, Any]]:
    path = _path(settings, family)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _read(path, family)
            yield state
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(state, indent=2))
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path, family: str) -> dict[str, Any]:
    if not path.exists():
        return {"family": family, "spaces": [], "versions": {}}
    return json.loads(path.read_text())


def state(settings: Settings, family: str) -> dict[str, Any]:
    """The family's spaces and version -> space assignments (read-only copy)."""
    return _read(_path(settings, family), family)


def spaces(settings: Settings, family: str) -> list[dict[str, Any]]:
    return state(settings, family)["spaces"]


def families(settings: Settings) -> list[str]:
    root = settings.models_dir / "_spaces"
    return sorted(p.stem for p in root.glob("*.json")) if root.is_dir() else []


def space_of(settings: Settings, family: str, version: str) -> str | None:
    """The space a model version belongs to, None when it was never assigned."""
    entry = state(settings, family)["versions"].get(version)
    return entry["space_id"] if entry else None


def last_version(settings: Settings, family: str) -> str | None:
    """The model version assigned last in a family (the build a new one is aligned to), None when none was."""
    return next(reversed(state(settings, family)["versions"]), None)


def assign(
    settings: Settings,
    family: str,
    version: str,
    *,
    dim: int,
    aligned_to: str | None = None,
    alignment_error: float | None = None,
    max_error: float | None = None,
    why: str | None = None,
) -> dict[str, Any]:
    """Put `version` into a space and return {"space_id", "new_space", "reason", ...}; idempotent per version.

    It joins `aligned_to`'s space when that version has one, the dimension matches and `alignment_error` is at
    most `max_error` (None: `ALIGN_MAX_ERROR`); otherwise it founds the family's next space (`why`: the reason
    when no alignment could be measured)."""
    max_error = ALIGN_MAX_ERROR if max_error is None else max_error
    with _locked(settings, family) as st:
        if version in st["versions"]:
            return {**st["versions"][version], "new_space": False, "reason": "already assigned"}
        by_id = {s["space_id"]: s for s in st["spaces"]}
        target = st["versions"].get(aligned_to, {}).get("space_id") if aligned_to else None
        if target is None:
            reason = "first space of the family" if not st["spaces"] else (why or "not aligned to a served version")
        elif by_id[target]["dim"] != dim:
            reason, target = f"dimension {dim} != {by_id[target]['dim']} of {target}", None
        elif alignment_error is None or not alignment_error <= max_error:
            reason, target = (f"alignment error {alignment_error:.3f} > {max_error} to {target}"
                              if alignment_error is not None else "no alignment error"), None
        else:
            reason = f"aligned to {aligned_to} (error {alignment_error:.3f} <= {max_error})"
        new = target is None
        if new:
            number = max((s["number"] for s in st["spaces"]), default=0) + 1
            target = space_id(family, number)
            st["spaces"].append({"space_id": target, "number": number, "family": family, "dim": int(dim),
                                 "founded_by": version,
                                 "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        entry = {"space_id": target, "aligned_to": None if new else aligned_to,
                 "alignment_error": None if alignment_error is None else round(float(alignment_error), 6)}
        st["versions"][version] = entry
    if new and len(spaces(settings, family)) > 1:
        log.warning("NEW VECTOR SPACE %s for %s (%s): downstream models pinned to an older %s_v* service keep "
                    "reading the old space; move them over deliberately", target, version, reason, family)
    else:
        log.info("%s joins vector space %s (%s)", version, target, reason)
    return {**entry, "new_space": new, "reason": reason}


def require_same_space(what: str, *space_ids: str | None) -> str:
    """The one space all the given ids name; a one-line error when they differ or one is missing."""
    ids = {s for s in space_ids}
    if None in ids or "" in ids:
        raise UbpError(f"{what}: a vector has no space id (re-run the stage that wrote it)")
    if len(ids) != 1:
        raise UbpError(f"{what}: vectors from different spaces {sorted(ids)} cannot be compared or mixed")
    return ids.pop()
