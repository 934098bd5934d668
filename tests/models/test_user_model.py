"""`build_user_model` (`models/user_model.py`) picks the network of a config's arch; a config saved before archs
existed (no `arch`) still loads as a GRU-AE, and a GRU-AE's saved config is what it was then."""

from __future__ import annotations

import json

from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder
from ubp.models.next_event import NextEventTransformer
from ubp.models.user_model import build_user_model
from user_model_fixtures import SIZES, one_torch_thread  # noqa: F401  (autouse fixture)


def test_the_arch_picks_the_network():
    gru = build_user_model(GRUAEConfig.preset("day_event", SIZES))
    nxt = build_user_model(GRUAEConfig.preset("next_sku", SIZES, n_layers=1))
    assert type(gru) is GRUAutoencoder and gru.config.arch == "gru_ae"
    assert type(nxt) is NextEventTransformer and nxt.config.arch == "next_event"


def test_an_old_config_without_arch_loads_as_a_gru_ae():
    cfg = GRUAEConfig.preset("small", SIZES)
    saved = cfg.to_dict()
    assert "arch" not in saved and "n_heads" not in saved  # a GRU-AE's config.json and run key are unchanged
    old = json.loads(json.dumps(saved))
    loaded = GRUAEConfig.from_dict(old)
    assert loaded == cfg and loaded.arch == "gru_ae"
    assert type(build_user_model(loaded)) is GRUAutoencoder
    nxt = GRUAEConfig.preset("next_url", SIZES)
    again = GRUAEConfig.from_dict(json.loads(json.dumps(nxt.to_dict())))
    assert again == nxt and (again.arch, again.n_heads, again.hidden) == ("next_event", 6, 192)
