"""Versioned model directories and the 'current' pointer that serving stages use.

Layout: `<lakehouse>/_models/<kind>/<version>/` (config, weights, metrics...) and `<lakehouse>/_models/<kind>/CURRENT`
holding the promoted version. Training writes a new version; promotion (a separate, explicit step) moves CURRENT.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ubp.config import Settings
from ubp.errors import UbpError

USER_KIND = "user"
ITEM_KIND = "item"  # the cold-start SASRec (ubp/stages/train_item_model.py)
PRIMARY_USER_MEMBER = "day_event"  # the GRU-AE member served as `user_profiles` / Feast `user_profile`
# the GRU-AE members `ubp run` and the training DAG train (the first is the served one); see models/members.py
DEFAULT_USER_MEMBERS: tuple[str, ...] = (PRIMARY_USER_MEMBER, "week_all", "all_fields")


def user_kind(member: str) -> str:
    """Registry kind of a GRU-AE member's versions: "user" for the served member, "user-<member>" for the others
    (each its own CURRENT pointer)."""
    return USER_KIND if member == PRIMARY_USER_MEMBER else f"{USER_KIND}-{member}"


def kind_dir(settings: Settings, kind: str) -> Path:
    return settings.models_dir / kind


def new_version(settings: Settings, kind: str, tag: str = "") -> tuple[str, Path]:
    """Allocate a fresh, sortable version id and its directory."""
    base = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    version = f"{kind}-{base}{('-' + tag) if tag else ''}"
    path = kind_dir(settings, kind) / version
    n = 1
    while path.exists():
        n += 1
        path = kind_dir(settings, kind) / f"{version}.{n}"
    path.mkdir(parents=True)
    return path.name, path


def version_dir(settings: Settings, kind: str, version: str) -> Path:
    path = kind_dir(settings, kind) / version
    if not path.is_dir():
        raise UbpError(f"no {kind} model version {version!r} under {kind_dir(settings, kind)}")
    return path


def list_versions(settings: Settings, kind: str) -> list[str]:
    root = kind_dir(settings, kind)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def current_version(settings: Settings, kind: str) -> str | None:
    pointer = kind_dir(settings, kind) / "CURRENT"
    return pointer.read_text().strip() if pointer.exists() else None


def require_current(settings: Settings, kind: str) -> str:
    version = current_version(settings, kind)
    if version is None:
        raise UbpError(f"no promoted {kind} model yet: train one first (see `ubp --help`)")
    return version


def promote(settings: Settings, kind: str, version: str, reason: str = "") -> None:
    """Atomically point CURRENT at `version` and append the decision to promotions.jsonl."""
    version_dir(settings, kind, version)
    root = kind_dir(settings, kind)
    tmp = root / "CURRENT.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / "CURRENT")
    log_decision(settings, kind, {"version": version, "promoted": True, "reason": reason})


def log_decision(settings: Settings, kind: str, record: dict) -> None:
    root = kind_dir(settings, kind)
    root.mkdir(parents=True, exist_ok=True)
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    with open(root / "promotions.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
