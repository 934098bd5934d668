"""Resume after a REAL kill: SIGKILL the training process mid-epoch, run the same command again, and check that it
continues from the last checkpoint instead of starting over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from user_model_fixtures import write_lakehouse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 7


def _cmd(lakehouse: Path) -> list[str]:
    return [sys.executable, "-m", "ubp.stages.train_user_model", "--lakehouse", str(lakehouse), "--epochs", str(EPOCHS),
            "--val-fraction", "0", "--no-progress",
            "--set", "emb_dim=16", "--set", "hidden=32", "--set", "n_layers=1", "--set", "batch_size=4",
            "--set", "patience=100"]


def _env() -> dict[str, str]:
    env = {**os.environ, "UBP_TORCH_THREADS": "1", "UBP_NO_PROGRESS": "1", "PYTHONPATH": str(REPO),
           "UBP_TRAIN_THROTTLE_S": "0.25"}  # test hook (ubp/hooks.py): 0.25 s per batch, so the kill lands mid-epoch
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let the two child interpreters reuse compiled torch modules
    return env


def _checkpoints(settings) -> list[Path]:
    return sorted(settings.cache_dir.glob("train_user/*/checkpoints/epoch-*"))


@pytest.mark.slow
def test_resume_after_sigkill(settings):
    write_lakehouse(settings, n_users=16, seed=1, min_len=2, max_len=8)
    proc = subprocess.Popen(_cmd(settings.lakehouse), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 150
    try:
        while not any(p.name == "epoch-0001" for p in _checkpoints(settings)):
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 150 s"
            time.sleep(0.1)
        time.sleep(0.5)  # 4 batches x 0.25 s per epoch: we are inside the next epoch
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(_checkpoints(settings)[-1].name.split("-")[1])
    assert killed_at < EPOCHS - 1, "training finished before the kill: nothing to resume"
    work = _checkpoints(settings)[-1].parents[1]
    assert not (work / "DONE.json").exists()

    rerun = subprocess.run(_cmd(settings.lakehouse), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["resumed_from"] == killed_at
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(EPOCHS))  # every epoch exactly once
    assert records[killed_at + 1]["resumed_from"] == killed_at
    assert all("resumed_from" not in r for r in records[: killed_at + 1])
    # the steps continue from the checkpoint: 4 batches per epoch, no epoch trained twice
    assert [r["step"] for r in records] == [4 * (e + 1) for e in range(EPOCHS)]
    log = (settings.lakehouse / "_logs" / "ubp.log").read_text()
    assert f"resuming from checkpoint epoch {killed_at}" in log
    vdir = Path(result["model_dir"])
    lines = [json.loads(x) for x in (vdir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == EPOCHS + 1 and "latent_health" in lines[-1]  # one line per epoch, then the latent health
    assert (vdir / "weights.safetensors").exists()
