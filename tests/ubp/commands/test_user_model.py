"""`ubp train-user-model` from the command line: `--loss-norm` reaches the trained version's config."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import printed_json, run_cli
from user_model_fixtures import one_torch_thread, write_lakehouse  # noqa: F401  (autouse fixture)


def test_loss_norm_flag_trains_a_normalised_version(settings, monkeypatch, capsys):
    write_lakehouse(settings, n_users=8, seed=0, min_len=2, max_len=6)
    lake = str(settings.lakehouse)
    args = ("--lakehouse", lake, "train-user-model", "--member", "day_event", "--epochs", "1", "--batch-size", "4",
            "--promote", "never")
    code, out, err = run_cli(monkeypatch, capsys, *args, "--loss-norm")
    assert code == 0, err
    normed = printed_json(out)
    config = json.loads((Path(normed["model_dir"]) / "config.json").read_text())
    assert config["loss_norm"] is True and config["batch_size"] == 4
    code, out, err = run_cli(monkeypatch, capsys, *args)  # without the flag: the member's own loss, another run
    assert code == 0, err
    plain = printed_json(out)
    assert plain["version"] != normed["version"]
    assert "loss_norm" not in json.loads((Path(plain["model_dir"]) / "config.json").read_text())
