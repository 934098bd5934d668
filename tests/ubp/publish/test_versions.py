"""The guard on private Feast / redis-py calls (`ubp/publish/versions.py`): the fast path runs only on the versions
the byte-exact tests passed with, and refuses any other in one line that names both versions and the way out."""

from __future__ import annotations

import pytest

from ubp.errors import UbpError
from ubp.publish import versions


def test_private_calls_are_guarded_by_the_tested_versions():
    """The fast path's private Feast / redis-py calls run only on the versions the byte-exact tests passed with."""
    from ubp.errors import UbpError
    from ubp.publish import TESTED_VERSIONS, installed_version, private_api_ok, require_private_api

    for package in ("feast", "redis"):  # the installed (locked) versions are the tested ones
        assert installed_version(package) in TESTED_VERSIONS[package]
        assert private_api_ok(package)
        require_private_api(package)
    assert not private_api_ok("redis", "99.0.0")  # RedisWriter then uses redis-py's own send and parser
    with pytest.raises(UbpError) as err:
        require_private_api("feast", "0.99.1")
    msg = str(err.value)
    assert "\n" not in msg and "feast 0.99.1 is installed" in msg and "feast 0.67.0" in msg and "_mmh3" in msg


def test_installed_version_of_a_missing_package_is_none():
    assert versions.installed_version("ubp-no-such-package") is None
    assert versions.installed_version("numpy")  # an installed one has a version string


def test_only_the_listed_versions_pass(monkeypatch):
    monkeypatch.setitem(versions.TESTED_VERSIONS, "redis", ("7.4.0", "7.4.1"))
    assert versions.private_api_ok("redis", "7.4.0") and versions.private_api_ok("redis", "7.4.1")
    assert not versions.private_api_ok("redis", "7.4")  # exact versions, not prefixes
    assert not versions.private_api_ok("redis", "7.4.2")
    versions.require_private_api("redis", "7.4.0")  # no error
    with pytest.raises(UbpError) as err:
        versions.require_private_api("redis", "8.0.0")
    msg = str(err.value)
    assert "\n" not in msg and "Connection._sock" in msg  # the private call it guards
    assert "redis 7.4.0, 7.4.1" in msg and "redis 8.0.0 is installed" in msg
    assert "install redis==7.4.1" in msg  # the newest tested version is the one to install


def test_every_guarded_package_names_its_private_calls():
    assert set(versions.PRIVATE_CALLS) == set(versions.TESTED_VERSIONS) == {"feast", "redis"}
    assert all(versions.TESTED_VERSIONS[p] and versions.PRIVATE_CALLS[p] for p in versions.PRIVATE_CALLS)
