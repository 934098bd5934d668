"""Run a command as a child process while a thread samples its process tree (shared by the benchmark scripts)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


def run_sampled(cmd: list[str], sample: Callable[[int, threading.Event, dict], None], peaks: dict,
                **popen) -> tuple[subprocess.Popen, str, float]:
    """(finished process, its stdout, wall seconds); `sample(pid, stop, peaks)` runs in a thread until the child
    exits and records what it measures (peak RSS, CPU seconds) into `peaks`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **popen)
    stop = threading.Event()
    mon = threading.Thread(target=sample, args=(proc.pid, stop, peaks), daemon=True)
    mon.start()
    stdout, _ = proc.communicate()
    stop.set()
    mon.join()
    return proc, stdout, time.perf_counter() - t0
