"""Versioned model directories and the CURRENT pointer (`ubp/registry.py`): fresh sortable versions, the served
member's kind, atomic promotion with a decision log, and clear errors for a missing version or pointer."""

from __future__ import annotations

import json

import pytest

from ubp import registry
from ubp.errors import UbpError


def test_member_kinds():
    assert registry.DEFAULT_USER_MEMBERS[0] == registry.PRIMARY_USER_MEMBER
    assert registry.user_kind(registry.PRIMARY_USER_MEMBER) == registry.USER_KIND == "user"
    assert registry.user_kind("week_all") == "user-week_all"  # every other member has its own CURRENT


def test_new_versions_are_unique_sorted_directories(settings):
    assert registry.list_versions(settings, "item") == []  # no kind folder yet
    v1, p1 = registry.new_version(settings, "item")
    v2, p2 = registry.new_version(settings, "item")  # same second: a suffix keeps it unique
    v3, p3 = registry.new_version(settings, "item", tag="delta")
    assert v1.startswith("item-") and v3.endswith("-delta")
    assert len({v1, v2, v3}) == 3 and all(p.is_dir() for p in (p1, p2, p3))
    assert p1 == registry.kind_dir(settings, "item") / v1 == settings.models_dir / "item" / v1
    assert registry.list_versions(settings, "item") == sorted([v1, v2, v3])
    assert registry.version_dir(settings, "item", v2) == p2
    with pytest.raises(UbpError, match="no item model version 'item-nope'"):
        registry.version_dir(settings, "item", "item-nope")


def test_promote_moves_current_atomically_and_logs_the_decision(settings):
    assert registry.current_version(settings, "user") is None
    with pytest.raises(UbpError, match="no promoted user model yet"):
        registry.require_current(settings, "user")
    v1, _ = registry.new_version(settings, "user")
    v2, _ = registry.new_version(settings, "user")
    registry.promote(settings, "user", v1, reason="first")
    registry.promote(settings, "user", v2, reason="better")
    assert registry.current_version(settings, "user") == registry.require_current(settings, "user") == v2
    root = registry.kind_dir(settings, "user")
    assert not (root / "CURRENT.tmp").exists()
    with pytest.raises(UbpError):
        registry.promote(settings, "user", "user-missing")  # never points at a version that does not exist
    assert registry.current_version(settings, "user") == v2
    registry.log_decision(settings, "user", {"version": "user-x", "promoted": False, "reason": "worse"})
    log = [json.loads(line) for line in (root / "promotions.jsonl").read_text().splitlines()]
    assert [(r["version"], r["promoted"], r["reason"]) for r in log] == [
        (v1, True, "first"), (v2, True, "better"), ("user-x", False, "worse")]
    assert all(r["at"].endswith("Z") for r in log)


def test_kinds_are_independent(settings):
    v, _ = registry.new_version(settings, "user-week_all")
    registry.promote(settings, "user-week_all", v)
    assert registry.current_version(settings, "user-week_all") == v
    assert registry.current_version(settings, "user") is None
    assert registry.list_versions(settings, "user") == []
