"""A Spark standalone cluster on this machine, from the installed pyspark: one master and N workers.

pyspark's wheel ships `bin/spark-class` but not `sbin/start-master.sh` / `start-worker.sh`, so the daemons are
started as plain subprocesses (`spark-class org.apache.spark.deploy.master.Master ...`), on free ports of
127.0.0.1 only. `start_cluster` returns once every worker has registered with the master (the master's
`/json` page lists it ALIVE); `StandaloneCluster.stop` ends the daemons it started (and the executors the workers
launched), by their process groups. Used by the submit-mode integration test and by operators who want a local
cluster to try the DAGs' spark-submit mode against:

    .venv/bin/python -m ubp.cluster                  # master + 2 workers; prints the master URL; Ctrl-C stops
    .venv/bin/python -m ubp.cluster --workers 3 --cores 1 --memory 2g --dir /tmp/ubp-cluster

Standard library only (core layer): pyspark is found through `importlib.util.find_spec`, not imported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_home() -> Path:
    """The installed pyspark's folder, which is a SPARK_HOME (bin/, jars/)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise RuntimeError("pyspark is not installed in this Python")
    return Path(spec.origin).parent


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class StandaloneCluster:
    """A running master and its workers; `stop()` (or leaving the `with` block) ends them."""

    master_url: str  # spark://127.0.0.1:PORT, what spark-submit --master takes
    webui_url: str  # http://127.0.0.1:PORT, the master's UI; `/json` is its state
    work_dir: Path  # logs/ (one file per daemon) and worker-<i>/ (the executors' folders and logs)
    procs: list[subprocess.Popen] = field(default_factory=list)  # the master first, then the workers

    def state(self, timeout: float = 5.0) -> dict:
        """The master's JSON state: `workers` (id, host, cores, state), `activeapps`, `completedapps` (each with its
        id, name, state, cores), `aliveworkers`, ..."""
        with urllib.request.urlopen(f"{self.webui_url}/json", timeout=timeout) as resp:
            return json.loads(resp.read())

    def alive_workers(self) -> list[dict]:
        return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]

    def executors(self) -> dict[str, list[str]]:
        """Application id -> the ids of the workers that ran (or run) an executor of it, from each worker's own
        `/json` page (`executors`, `finishedexecutors`)."""
        out: dict[str, list[str]] = {}
        for worker in self.state().get("workers", []):
            with urllib.request.urlopen(f"{worker['webuiaddress']}/json", timeout=5) as resp:
                page = json.loads(resp.read())
            for ex in page.get("executors", []) + page.get("finishedexecutors", []):
                out.setdefault(ex["appid"], []).append(worker["id"])
        return out

    def logs(self) -> str:
        """The daemons' logs, for an error message."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.work_dir / "logs").glob("*.log")))

    def stop(self, timeout: float = 30.0) -> None:
        """Workers first (each ends its executors), then the master: SIGTERM to each daemon's process group, SIGKILL
        what is still there after `timeout`. Idempotent."""
        for proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # leftovers of the group (an executor JVM, a Python worker)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> StandaloneCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group this module created for `proc` (start_new_session: group id = its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _daemon(home: Path, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:  # the child keeps its own handle
        return subprocess.Popen([str(home / "bin" / "spark-class"), *args], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def start_cluster(workers: int = 2, cores: int = 1, memory: str = "1g", work_dir: str | Path | None = None,
                  timeout: float = 180.0, daemon_memory: str = "512m") -> StandaloneCluster:
    """Start a master and `workers` workers (`cores` cores and `memory` for executors each) on free ports of
    127.0.0.1 and wait until all workers are registered; on failure everything started is stopped again.
    `work_dir` (default: a new temporary folder) holds the daemons' logs and the workers' folders."""
    home = spark_home()
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ubp-spark-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_DAEMON_MEMORY": daemon_memory,
           "SPARK_LOCAL_IP": HOST, "SPARK_MASTER_HOST": HOST}
    port, ui = free_port(), free_port()
    cluster = StandaloneCluster(master_url=f"spark://{HOST}:{port}", webui_url=f"http://{HOST}:{ui}", work_dir=work)
    try:
        cluster.procs.append(_daemon(home, [MASTER_CLASS, "--host", HOST, "--port", str(port), "--webui-port",
                                            str(ui)], work / "logs" / "master.log", env))
        for i in range(workers):
            cluster.procs.append(_daemon(home, [
                WORKER_CLASS, cluster.master_url, "--host", HOST, "--port", str(free_port()), "--webui-port",
                str(free_port()), "--cores", str(cores), "--memory", memory, "--work-dir", str(work / f"worker-{i}"),
            ], work / "logs" / f"worker-{i}.log", env))
        _wait_registered(cluster, workers, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_registered(cluster: StandaloneCluster, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    alive: list[dict] = []
    while time.monotonic() < deadline:
        dead = [p.args[1].rsplit(".", 1)[-1] for p in cluster.procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"Spark daemon(s) {', '.join(dead)} of {cluster.master_url} exited at start:\n"
                               f"{cluster.logs()}")
        with contextlib.suppress(OSError, ValueError):
            alive = cluster.alive_workers()
            if len(alive) >= workers:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{len(alive)} of {workers} Spark workers registered with {cluster.master_url} within "
                       f"{timeout:.0f} s:\n{cluster.logs()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Spark standalone cluster (master + workers on "
                                     "127.0.0.1) from the installed pyspark until Ctrl-C.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="1g", help="executor memory per worker")
    parser.add_argument("--dir", default=None, help="logs and worker folders (default: a temporary folder)")
    args = parser.parse_args(argv)
    cluster = start_cluster(args.workers, args.cores, args.memory, args.dir)
    print(f"master {cluster.master_url}  ui {cluster.webui_url}  logs {cluster.work_dir / 'logs'}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while all(p.poll() is None for p in cluster.procs):
            time.sleep(1)
        print("a Spark daemon exited; stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
