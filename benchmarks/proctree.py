"""Run a command as a child process while a thread samples its process tree (shared by the benchmark scripts)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def _sample(pid: int, role: Callable[[Any, int], str | None], interval: float, stop: threading.Event, peaks: dict,
            also: Sequence[int] = ()) -> None:
    """Until `stop`: peak RSS summed per `role(process, root_pid)` (None: not counted) and of the counted tree
    (`total`), and the tree's CPU seconds (`cpu_s`: each process's own user + system time, its last sampled value;
    a reaped child's time is not counted again through its parent). `also`: more processes whose descendants (not they themselves) are sampled
    too, with their own pid as the root passed to `role` (a Spark worker daemon's executors)."""
    import psutil

    root = psutil.Process(pid)
    cpu: dict[int, float] = {}
    while not stop.is_set():
        rss: dict[str, int] = {}
        try:
            procs = [(root, pid), *((c, pid) for c in root.children(recursive=True))]
        except psutil.Error:
            procs = []
        for other in also:
            with contextlib.suppress(psutil.Error):
                procs += [(c, other) for c in psutil.Process(other).children(recursive=True)]
        for p, tree in procs:
            try:
                r = role(p, tree)
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
                if r is not None:
                    rss[r] = rss.get(r, 0) + p.memory_info().rss
            except psutil.Error:
                continue
        for r, value in rss.items():
            peaks[r] = max(peaks.get(r, 0), value)
        peaks["total"] = max(peaks.get("total", 0), sum(rss.values()))
        peaks["cpu_s"] = sum(cpu.values())
        stop.wait(interval)


def run_sampled(cmd: list[str], role: Callable[[Any, int], str | None], roles: tuple[str, ...] = (),
                interval: float = 0.5, also: Sequence[int] = (), **popen) -> tuple[subprocess.Popen, str, float, dict]:
    """(finished process, its stdout, wall seconds, peaks): peak RSS in bytes per role (`roles` start at 0) and in
    total, and CPU seconds, of the child's process tree, sampled every `interval` seconds."""
    peaks: dict = {**dict.fromkeys(roles, 0), "total": 0, "cpu_s": 0.0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **popen)
    stop = threading.Event()
    mon = threading.Thread(target=_sample, args=(proc.pid, role, interval, stop, peaks, also), daemon=True)
    mon.start()
    stdout, _ = proc.communicate()
    stop.set()
    mon.join()
    return proc, stdout, time.perf_counter() - t0, peaks


def jvm_or(other: str) -> Callable[[Any, int], str | None]:
    """A role function: "jvm" for Java processes, None (not counted) for the programs a JVM spawns that are not
    Python, `other` for the rest.

    Hadoop's local file system shells out (`chmod`, `readlink`) for every file Spark writes. The JVM starts them
    with posix_spawn, whose child shares the JVM's address space until it execs, so a sample taken then reads the
    whole JVM's RSS a second time: at 1M users the ingest's "other" peaked at 3.4 GiB that way. Spark's Python
    workers are children of the JVM too and are counted."""

    def role(p: Any, root: int) -> str | None:
        if "java" in p.name().lower():
            return "jvm"
        if "python" not in p.name().lower():
            with contextlib.suppress(Exception):
                if "java" in p.parent().name().lower():
                    return None
        return other

    return role
