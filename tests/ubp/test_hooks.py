"""Test and diagnostic hooks (`ubp/hooks.py`): all off when unset, read from the environment at each call, and every
variable documented in the module's table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ubp import hooks


def test_everything_is_off_when_unset():
    assert hooks.Hooks.from_env({}) == hooks.Hooks()
    off = hooks.Hooks()
    assert (off.train_throttle_s, off.train_trace_dir, off.model_load_log, off.inject_failure) == (0.0, None, None, "")
    # set but empty counts as unset
    empty = {"UBP_TRAIN_THROTTLE_S": "", "UBP_TRAIN_TRACE_DIR": "", "UBP_MODEL_LOAD_LOG": "", "UBP_INJECT_FAILURE": ""}
    assert hooks.Hooks.from_env(empty) == off


def test_values_are_parsed():
    got = hooks.Hooks.from_env({"UBP_TRAIN_THROTTLE_S": "0.25", "UBP_TRAIN_TRACE_DIR": "/tmp/trace",
                                "UBP_MODEL_LOAD_LOG": "/tmp/loads.txt", "UBP_INJECT_FAILURE": "ingest, ensemble:before",
                                "UBP_UNRELATED": "x"})
    assert got == hooks.Hooks(train_throttle_s=0.25, train_trace_dir="/tmp/trace", model_load_log="/tmp/loads.txt",
                              inject_failure="ingest, ensemble:before")
    with pytest.raises(ValueError):
        hooks.Hooks.from_env({"UBP_TRAIN_THROTTLE_S": "fast"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.train_throttle_s = 0.0  # type: ignore[misc]


def test_current_reads_the_environment_on_each_call(monkeypatch):
    monkeypatch.delenv("UBP_TRAIN_THROTTLE_S", raising=False)
    assert hooks.current().train_throttle_s == 0.0
    monkeypatch.setenv("UBP_TRAIN_THROTTLE_S", "1.5")
    assert hooks.current().train_throttle_s == 1.5  # changed in the same process: seen at once
    monkeypatch.delenv("UBP_TRAIN_THROTTLE_S")
    assert hooks.current().train_throttle_s == 0.0


def test_every_variable_read_is_in_the_module_table():
    source = Path(hooks.__file__).read_text()
    read = set(re.findall(r'env\.get\("(UBP_[A-Z_]+)"', source))
    assert len(read) == len(dataclasses.fields(hooks.Hooks))  # one variable per hook
    documented = set(re.findall(r"^\| `(UBP_[A-Z_]+)` \|", hooks.__doc__, re.MULTILINE))
    assert read == documented
