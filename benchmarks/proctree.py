"""Run a command as a child process while a thread samples its process tree (shared by the benchmark scripts)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any


def _sample(pid: int, role: Callable[[Any, int], str], interval: float, stop: threading.Event, peaks: dict) -> None:
    """Until `stop`: peak RSS summed per `role(process, root_pid)` and of the whole tree (`total`), and the tree's CPU
    seconds (`cpu_s`: each process's own user + system time, its last sampled value; a reaped child's time is not
    counted again through its parent)."""
    import psutil

    root = psutil.Process(pid)
    cpu: dict[int, float] = {}
    while not stop.is_set():
        rss: dict[str, int] = {}
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                r = role(p, pid)
                rss[r] = rss.get(r, 0) + p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
            except psutil.Error:
                continue
        for r, value in rss.items():
            peaks[r] = max(peaks.get(r, 0), value)
        peaks["total"] = max(peaks.get("total", 0), sum(rss.values()))
        peaks["cpu_s"] = sum(cpu.values())
        stop.wait(interval)


def run_sampled(cmd: list[str], role: Callable[[Any, int], str], roles: tuple[str, ...] = (), interval: float = 0.5,
                **popen) -> tuple[subprocess.Popen, str, float, dict]:
    """(finished process, its stdout, wall seconds, peaks): peak RSS in bytes per role (`roles` start at 0) and in
    total, and CPU seconds, of the child's process tree, sampled every `interval` seconds."""
    peaks: dict = {**dict.fromkeys(roles, 0), "total": 0, "cpu_s": 0.0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **popen)
    stop = threading.Event()
    mon = threading.Thread(target=_sample, args=(proc.pid, role, interval, stop, peaks), daemon=True)
    mon.start()
    stdout, _ = proc.communicate()
    stop.set()
    mon.join()
    return proc, stdout, time.perf_counter() - t0, peaks


def jvm_or(other: str) -> Callable[[Any, int], str]:
    """A role function: "jvm" for Java processes, `other` for the rest."""
    return lambda p, root: "jvm" if "java" in p.name().lower() else other
