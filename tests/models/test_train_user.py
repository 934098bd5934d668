"""The GRU-AE training loop (`models/train_user.py`) in real processes, through the stage's entry point
(`python -m ubp.stages.train_user_model`).

DDP: a REAL `torchrun --standalone --nproc_per_node=2` (gloo on CPU) from the same entry point as single-process
training: both ranks run, each trains on a disjoint shard of the length-bucketed batches with the same number of
steps, only rank 0 writes checkpoints and the registry version, and the weights load and encode.

Resume after a REAL kill: SIGKILL the training process mid-epoch, run the same command again, and check that it
continues from the last checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from user_model_fixtures import write_lakehouse

REPO = Path(__file__).resolve().parents[2]
N_USERS, BATCH = 34, 4  # 9 bucketed batches: 4 per rank, the incomplete last round (1 batch) is dropped


def _torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_torchrun_two_ranks_gloo(settings, tmp_path):
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.infer_user import encode_arrow, load_model
    from ubp.models.user_data import columns_for, stream_batches

    from ubp import registry
    from ubp.reader import iter_batches, table_version

    seq_path = write_lakehouse(settings, n_users=N_USERS, seed=3, min_len=2, max_len=8)
    trace = tmp_path / "trace"
    env = {**os.environ, "PYTHONPATH": str(REPO), "UBP_NO_PROGRESS": "1", "UBP_TORCH_THREADS": "1",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "UBP_TRAIN_TRACE_DIR": str(trace)}
    env.pop("UBP_DEVICE", None)  # the code must pick cpu + gloo by itself when there is no CUDA
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "ubp.stages.train_user_model",
           "--lakehouse", str(settings.lakehouse), "--epochs", "1", "--val-fraction", "0", "--no-progress",
           "--set", "emb_dim=16", "--set", "hidden=32", "--set", "n_layers=1", "--set", f"batch_size={BATCH}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rank 0/2 on cpu (backend gloo)" in out and "rank 1/2 on cpu (backend gloo)" in out, out[-3000:]

    # both ranks ran, in two processes, with the same number of steps
    recs = {r: json.loads((trace / f"rank{r}.jsonl").read_text().splitlines()[0]) for r in (0, 1)}
    assert {recs[r]["world_size"] for r in (0, 1)} == {2}
    assert recs[0]["pid"] != recs[1]["pid"]
    assert recs[0]["steps"] == recs[1]["steps"] == 4

    # disjoint shards: exactly the DistributedSampler-like split of the single-process batch sequence
    ids = {r: np.asarray(recs[r]["client_ids"]) for r in (0, 1)}
    assert not set(ids[0].tolist()) & set(ids[1].tolist())
    assert len(set(ids[0].tolist())) == len(ids[0]) and len(set(ids[1].tolist())) == len(ids[1])
    fields = GRUAEConfig().input_fields
    version = table_version(seq_path)

    def read():
        return iter_batches(seq_path, version=version, columns=columns_for(fields), batch_size=4096)

    ref = [b["client_id"].numpy() for b in stream_batches(read, fields, batch_size=BATCH, split="train",
                                                           val_fraction=0.0, seed=0, shuffle=True)]
    assert len(ref) == 9
    for r in (0, 1):
        np.testing.assert_array_equal(ids[r], np.concatenate(ref[r:8:2]))
    assert len(ids[0]) + len(ids[1]) == N_USERS - len(ref[8])

    # only rank 0 wrote: one registry version, checkpoint written by rank 0's pid, one result line on stdout
    versions = [p for p in registry.kind_dir(settings, "user").iterdir() if p.is_dir()]
    assert len(versions) == 1
    vdir = versions[0]
    manifest = json.loads((vdir / "model.json").read_text())
    assert manifest["world_size"] == 2
    metrics = [json.loads(line) for line in (vdir / "metrics.jsonl").read_text().splitlines()]
    assert "latent_health" in metrics.pop()  # written once, by rank 0, after training
    assert len(metrics) == 1 and metrics[0]["world_size"] == 2 and metrics[0]["steps_per_rank"] == [4, 4]
    ckpts = sorted(settings.cache_dir.glob("train_user/*/checkpoints/*"))
    assert [p.name for p in ckpts] == ["epoch-0000"], ckpts  # no leftover temp dir of a second writer
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert state["extra"]["written_by"] == {"rank": 0, "pid": recs[0]["pid"]}
    assert sum(1 for line in proc.stdout.splitlines() if line.startswith('{"stage"')) == 1

    # the weights load (safetensors, strict) and encode
    model, _ = load_model(vdir, device="cpu")
    table = next(iter_batches(seq_path, version=version, columns=columns_for(fields) + ["as_of"],
                              batch_size=4096))
    chunk, z = encode_arrow(model, table)
    assert z.shape == (N_USERS, 32) and np.isfinite(z).all()
    assert np.unique(z.round(5), axis=0).shape[0] > 1


# ---------------------------------------------------------------------------------------------------------------
# resume after a kill
# ---------------------------------------------------------------------------------------------------------------
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


def test_validation_loss_is_the_training_objective_with_loss_norm():
    """Early stopping watches the loss the model trains on: with `loss_norm` each field's CE / log(its classes)."""
    import torch
    from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder
    from ubp.models.train_user import evaluate
    from user_model_fixtures import SIZES, make_chunk

    batch = make_chunk(8, seed=5).collate(np.arange(8))
    out = {}
    for norm in (False, True):
        torch.manual_seed(0)
        model = GRUAutoencoder(GRUAEConfig.preset("small", SIZES, emb_dim=16, hidden=32, dropout=0.0,
                                                  loss_norm=norm))
        out[norm] = evaluate(model, [batch], torch.device("cpu"))
        with torch.no_grad():
            loss, _ = model.eval()(batch)
        assert out[norm]["val_loss"] == pytest.approx(float(loss), rel=1e-5)  # one batch: the model's own loss
    fields = ("event_type", "sku", "category", "price", "url")
    assert out[False]["val_loss"] == pytest.approx(sum(out[False][f"val_loss_{f}"] for f in fields), rel=1e-6)
    assert out[True]["val_loss"] == pytest.approx(
        sum(out[True][f"val_loss_{f}"] / np.log(SIZES[f]) for f in fields), rel=1e-6)
    assert all(out[True][f"val_loss_{f}"] == pytest.approx(out[False][f"val_loss_{f}"]) for f in fields)
