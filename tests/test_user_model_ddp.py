"""Multi-process training with a REAL `torchrun --standalone --nproc_per_node=2` (gloo on CPU) from the same entry
point as single-process training: both ranks run, each trains on a disjoint shard of the length-bucketed batches with
the same number of steps, only rank 0 writes checkpoints and the registry version, and the weights load and encode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from user_model_fixtures import make_sequences, write_lakehouse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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


def test_stream_batches_even_shards_for_any_world_size():
    """The sharding itself, without processes: for world sizes 1..4, ranks get disjoint users, exactly the same
    number of batches (even=True), and together the batches of all complete rounds of the single-process order."""
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.user_data import stream_batches

    table = make_sequences(61, seed=5, min_len=1, max_len=10)
    fields = GRUAEConfig().input_fields

    def read():  # two Arrow batches and a small buffer: rounds span buffer flushes
        return iter(table.to_batches(max_chunksize=40))

    def run(rank: int, world: int, even: bool) -> list[np.ndarray]:
        return [b["client_id"].numpy() for b in stream_batches(read, fields, batch_size=4, seed=7, rank=rank,
                                                               world_size=world, even=even, buffer_users=30)]

    ref = run(0, 1, False)
    assert all(np.array_equal(a, b) for a, b in zip(run(0, 1, True), ref, strict=True))
    for world in (2, 3, 4):
        shards = [run(r, world, True) for r in range(world)]
        rounds = len(ref) // world
        assert [len(s) for s in shards] == [rounds] * world
        for r, s in enumerate(shards):
            assert all(np.array_equal(a, b) for a, b in zip(s, ref[r: rounds * world: world], strict=True))
        ids = np.concatenate([np.concatenate(s) for s in shards])
        assert len(ids) == len(set(ids.tolist()))
        uneven = [len(run(r, world, False)) for r in range(world)]
        assert sum(uneven) == len(ref)  # without even=True every batch is used, counts may differ by one
