"""The local Spark standalone cluster (`ubp/cluster.py`): real daemons from the installed pyspark. A master and one
worker start on free ports of 127.0.0.1, the worker registers with its cores and memory, and `stop` ends every
process it started; a daemon that dies at start fails `start_cluster` with its log and leaves nothing running.
Running jobs on such a cluster (the DAGs' spark-submit mode) is tests/integration/test_standalone_cluster.py."""

from __future__ import annotations

import os
import re
import socket

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_start_registers_the_worker_and_stop_ends_every_process(tmp_path):
    from ubp.cluster import start_cluster

    with start_cluster(workers=1, cores=1, memory="512m", work_dir=tmp_path) as cluster:
        assert re.fullmatch(r"spark://127\.0\.0\.1:\d+", cluster.master_url)
        port = int(cluster.master_url.rsplit(":", 1)[1])
        pids = [p.pid for p in cluster.procs]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids) and _listening(port)
        state = cluster.state()
        assert state["status"] == "ALIVE" and state["aliveworkers"] == 1
        (worker,) = cluster.alive_workers()
        assert worker["cores"] == 1 and worker["memory"] == 512 and worker["host"] == "127.0.0.1"
        assert cluster.executors() == {}  # no application ran
        assert (tmp_path / "logs" / "master.log").is_file() and (tmp_path / "logs" / "worker-0.log").is_file()
    assert cluster.procs == []
    assert not any(_alive(pid) for pid in pids)
    assert not _listening(port)
    cluster.stop()  # idempotent


@pytest.mark.slow
def test_a_daemon_failing_at_start_is_reported_and_nothing_is_left(tmp_path):
    from ubp.cluster import start_cluster

    with pytest.raises(RuntimeError, match="Worker") as err:
        start_cluster(workers=1, memory="lots", work_dir=tmp_path, timeout=120)
    port = int(re.search(r"spark://127\.0\.0\.1:(\d+)", str(err.value)).group(1))
    assert "--- worker-0.log" in str(err.value)  # the daemon's own log, to see why
    assert not _listening(port)  # the master that did start was stopped again
