"""Usage errors through the installed `ubp` script: ONE line on stderr, exit code 2, no traceback. typer bundles its
own click, so these used to escape `ubp.cli.run` as 40-line tracebacks with exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

UBP = Path(sys.executable).with_name("ubp")


def _ubp(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UBP_LAKEHOUSE": str(tmp_path / "lakehouse"), "NO_COLOR": "1"}
    return subprocess.run([str(UBP), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


@pytest.mark.parametrize(("args", "needles"), [
    (("nosuch",), ("No such command 'nosuch'", "ubp --help")),
    (("ingest",), ("Missing option '--raw'", "ubp ingest --help")),
    (("sql", "SELECT 1", "--limit", "abc"), ("Invalid value for '--limit'", "integer")),
    (("ingest", "--raw", "x", "--max-quarantine-share", "many"), ("--max-quarantine-share",)),
])
def test_usage_error_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]):
    res = _ubp(tmp_path, *args)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert res.stdout == ""


def test_no_arguments_prints_the_help(tmp_path: Path):
    res = _ubp(tmp_path)
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "Usage: ubp" in out and "ingest" in out and "Traceback" not in out
