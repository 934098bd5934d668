"""Did a Delta table's data change? Read from its `_delta_log` with the standard library only.

The DAGs emit a table's asset event only when the task changed the table (a re-run, an empty day or a no-op MERGE
must not trigger the downstream DAGs); the DAG files may import only stdlib-light modules, hence no deltalake here.
"""

from __future__ import annotations

import json
from pathlib import Path


def latest_version(path: str | Path) -> int | None:
    """The latest committed version of the Delta table at `path`, None when there is no table."""
    log_dir = Path(path) / "_delta_log"
    if not log_dir.is_dir():
        return None
    versions = [int(p.stem) for p in log_dir.glob("*.json") if p.stem.isdigit()]
    return max(versions) if versions else None


def data_changed(path: str | Path, since: int | None) -> bool:
    """True when a commit after version `since` (None: the table did not exist) added or removed data files with
    `dataChange` (OPTIMIZE and no-op MERGEs do not count)."""
    now = latest_version(path)
    if now is None:
        return False
    if since is None:
        return True
    log_dir = Path(path) / "_delta_log"
    for version in range(since + 1, now + 1):
        commit = log_dir / f"{version:020d}.json"
        if not commit.is_file():  # cleaned up already: assume it changed
            return True
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            for kind in ("add", "remove"):
                if kind in action and action[kind].get("dataChange", True):
                    return True
    return False
