"""The item commands (`ubp item-vectors`, `train-item-model`, `evaluate-items`): usage and user errors are one line,
exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys


def test_cli_errors_are_one_line(tmp_path):
    cmd = [sys.executable, "-m", "ubp.cli", "--lakehouse", str(tmp_path / "lh")]
    r = subprocess.run(cmd + ["item-vectors"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no promoted item model" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["train-item-model", "--variant", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["evaluate-items", "--seeds", "0,x"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--seeds" in r.stderr and "Traceback" not in r.stderr
