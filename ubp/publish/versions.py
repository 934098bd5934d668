"""Private Feast / redis-py functions: used only with the versions the byte-exact tests passed with.

The fast path calls Feast's `_mmh3`, `SqliteOnlineStore._get_db_path`, `RedisOnlineStore._parse_connection_string`
and writes on redis-py's `Connection._sock`. Private functions change without notice, and a change there would not
fail loudly: it would write bytes Feast no longer reads. tests/ubp/publish/ and tests/ubp/stages/test_publish.py compare
every byte with Feast's own write path on SQLite and Redis; after they pass on a new version, add it here.
"""

from __future__ import annotations

from ubp.errors import UbpError

TESTED_VERSIONS: dict[str, tuple[str, ...]] = {"feast": ("0.67.0",), "redis": ("7.4.1",)}
PRIVATE_CALLS: dict[str, str] = {
    "feast": "_mmh3, SqliteOnlineStore._get_db_path, RedisOnlineStore._parse_connection_string",
    "redis": "Connection._sock",
}


def installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def private_api_ok(package: str, installed: str | None = None) -> bool:
    """Whether `package` (installed, or the version given) is one the fast path's private calls were tested with."""
    have = installed if installed is not None else installed_version(package)
    return have in TESTED_VERSIONS[package]


def require_private_api(package: str, installed: str | None = None) -> None:
    """Refuse, in one line naming both versions, to run the fast path on an untested `package` version."""
    if private_api_ok(package, installed):
        return
    have = installed if installed is not None else installed_version(package)
    tested = ", ".join(TESTED_VERSIONS[package])
    raise UbpError(
        f"fast publish calls private {package} functions ({PRIVATE_CALLS[package]}) tested byte for byte with "
        f"{package} {tested}, but {package} {have} is installed: install {package}=={TESTED_VERSIONS[package][-1]} "
        f"(requirements.lock), or run tests/ubp/publish/ and tests/ubp/stages/test_publish.py on {have} and add it "
        f"to ubp.publish.TESTED_VERSIONS"
    )
