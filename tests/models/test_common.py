"""Shared training utilities (`models/common.py`), no Spark: checkpoints that resume after a kill (weights, optimizer,
RNG, pruning, half-written directories ignored), safe weight I/O, metrics lines that survive a torn write, early
stopping, seeding and the torchrun environment."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from ubp.models.common import (
    CheckpointManager,
    DistInfo,
    EarlyStopping,
    MetricsWriter,
    atomic_write_text,
    count_parameters,
    dist_info,
    load_weights,
    pick_device,
    plot_loss_curve,
    read_metrics,
    save_weights,
    seed_everything,
    to_device,
)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(5, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_checkpoints_resume_weights_optimizer_and_rng(tmp_path):
    ckpt = CheckpointManager(tmp_path / "ckpt", keep=2)
    assert ckpt.latest() is None and ckpt.load_latest(_model(0)) is None
    model = _model(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for epoch in range(4):
        _step(model, opt)
        ckpt.save(model, opt, epoch=epoch, step=10 * (epoch + 1), extra={"best": 0.5 - epoch / 10})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-0002", "epoch-0003"]  # pruned, no temp
    after_save = torch.rand(3)  # what the RNG gives right after the last save

    other = _model(1)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.1)
    got = ckpt.load_latest(other, other_opt)
    assert (got.epoch, got.step, got.extra) == (3, 40, {"best": pytest.approx(0.2)})
    assert got.path == tmp_path / "ckpt" / "epoch-0003"
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["step"] == 4  # Adam's step count came back
    assert torch.equal(torch.rand(3), after_save)  # and the RNG state
    (tmp_path / "ckpt" / "epoch-0009").mkdir()  # a directory without state.json: a kill mid-write
    assert ckpt.latest().name == "epoch-0003"


def test_weights_are_safetensors_and_load_strictly(tmp_path):
    model, other = _model(0), _model(1)
    save_weights(model, tmp_path / "w" / "weights.safetensors")
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["weights.safetensors"]
    load_weights(other, tmp_path / "w" / "weights.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True))
    with pytest.raises(RuntimeError):
        load_weights(nn.Linear(4, 3), tmp_path / "w" / "weights.safetensors")  # other keys: refused
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2


def test_metrics_lines_are_plain_json_and_survive_a_torn_line(tmp_path):
    w = MetricsWriter(tmp_path / "m" / "metrics.jsonl")
    w.write({"epoch": 0, "loss": torch.tensor(1.5), "vec": torch.tensor([1.0, 2.0]), "n": np.int64(3),
             "bad": float("nan"), "nested": {"x": np.float32(0.5), "inf": math.inf}})
    w.write({"epoch": 1, "loss": 1.0})
    with open(w.path, "a") as fh:
        fh.write('{"epoch": 2, "lo')  # killed mid-write
    assert w.read() == read_metrics(w.path) == [
        {"epoch": 0, "loss": 1.5, "vec": [1.0, 2.0], "n": 3, "bad": None, "nested": {"x": 0.5, "inf": None}},
        {"epoch": 1, "loss": 1.0}]
    assert read_metrics(tmp_path / "missing.jsonl") == []
    png = plot_loss_curve(w.read(), tmp_path / "plots" / "loss.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    atomic_write_text(tmp_path / "a.json", json.dumps({"k": 1}))
    assert [p.name for p in tmp_path.glob("a.json*")] == ["a.json"]


def test_early_stopping_and_its_state():
    stop = EarlyStopping(patience=2, min_delta=0.1)
    assert stop.step(1.0, 0) and not stop.should_stop
    assert not stop.step(0.95, 1)  # better, but by less than min_delta
    assert stop.step(0.8, 2) and stop.bad_epochs == 0
    assert not stop.step(0.9, 3) and not stop.step(0.75, 4) and stop.should_stop
    assert (stop.best, stop.best_epoch) == (0.8, 2)
    fresh = EarlyStopping(patience=2, min_delta=0.1)
    fresh.load_state_dict(json.loads(json.dumps(stop.state_dict())))
    assert (fresh.best, fresh.best_epoch, fresh.bad_epochs) == (0.8, 2, 2) and fresh.should_stop
    untouched = EarlyStopping()
    back = EarlyStopping()
    back.load_state_dict(json.loads(json.dumps(untouched.state_dict())))  # inf best goes through JSON as null
    assert back.best == math.inf and back.best_epoch == -1


def test_seeds_devices_and_torchrun_environment(monkeypatch):
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("UBP_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    batch = {"x": torch.ones(2), "lengths": torch.tensor([1, 2]), "client_id": torch.tensor([5, 6])}
    moved = to_device(batch, torch.device("cpu"))
    assert set(moved) == {"x", "lengths"} and moved["lengths"] is batch["lengths"]
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist_info() == DistInfo() and not dist_info().enabled and dist_info().is_main
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist_info() == DistInfo(rank=1, world_size=2, local_rank=1)
    assert dist_info().enabled and not dist_info().is_main
