"""The dependency lock: `make bootstrap` installs `requirements.lock`, so the environment is the tested one."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def locked() -> dict[str, tuple[str, str]]:
    """name -> (version, marker) of every pin in requirements.lock."""
    pins: dict[str, tuple[str, str]] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, _, marker = line.partition(";")
        name, _, ver = spec.strip().partition("==")
        assert ver, f"requirements.lock: not an exact pin: {line}"
        pins[canonicalize_name(name)] = (ver.strip(), marker.strip())
    return pins


def test_every_dependency_is_locked():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = locked()
    missing = [r for r in wanted if canonicalize_name(Requirement(r).name) not in pins]
    assert not missing, f"not in requirements.lock (run `make lock`): {missing}"
    for r in map(Requirement, wanted):  # each pin satisfies pyproject's range
        assert r.specifier.contains(pins[canonicalize_name(r.name)][0], prereleases=True), (r, pins[canonicalize_name(r.name)])


def test_installed_versions_are_the_locked_ones():
    wrong = []
    for name, (ver, marker) in locked().items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != ver:
            wrong.append(f"{name}: locked {ver}, installed {have}")
    assert not wrong, "run `make bootstrap`: " + "; ".join(wrong)
