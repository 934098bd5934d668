"""The GRU-AE members (`models/members.py`): the default members and their order, the sizes and serving transform of
each as the module's table documents them, the CPU sizes of the large ones, and a clear error for an unknown name."""

from __future__ import annotations

import dataclasses

import pytest
from ubp.models.gru_ae import GRUAEConfig
from ubp.models.members import DEFAULT_MEMBERS, MEMBERS, Member, PostSpec, member
from user_model_fixtures import SIZES

from ubp import registry
from ubp.tables import NAME_VOCAB_SIZE


def test_defaults_are_the_registry_members_served_one_first():
    assert DEFAULT_MEMBERS == registry.DEFAULT_USER_MEMBERS == ("day_event", "week_all", "all_fields")
    assert DEFAULT_MEMBERS[0] == registry.PRIMARY_USER_MEMBER
    assert set(DEFAULT_MEMBERS) < set(MEMBERS)  # plus the older presets
    assert all(name == m.name and m.doc for name, m in MEMBERS.items())


def test_lookup_and_unknown_names():
    assert member("week_all") is MEMBERS["week_all"]
    with pytest.raises(ValueError, match=r"unknown member 'huge'; choose one of \['all_fields', 'day_event'"):
        member("huge")


@pytest.mark.parametrize(("name", "fields", "sizes", "post"), [
    ("day_event", ("event_type", "day"), (64, 128, 2, 0.5), PostSpec(pca_dim=0, row_norm=True)),
    ("week_all", ("week", "event_type", "category", "price", "sku", "url"), (512, 512, 3, 0.1), PostSpec(pca_dim=64)),
    ("all_fields", ("event_type", "category", "price", "sku", "url"), (512, 512, 3, 0.1), PostSpec(pca_dim=64)),
    ("sku_text", ("event_type", "name"), (64, 128, 2, 0.5), PostSpec(pca_dim=64)),
])
def test_members_follow_the_documented_table(name, fields, sizes, post):
    m = member(name)
    assert m.model["input_fields"] == m.model["target_fields"] == fields  # every input is rebuilt
    assert (m.model["emb_dim"], m.model["hidden"], m.model["n_layers"], m.model["dropout"]) == sizes
    assert m.post == post and not m.post.whiten  # centred, PCA when set, row L2


def test_sku_text_reads_the_last_64_product_events_and_is_opt_in():
    m = member("sku_text")
    assert (m.model["events"], m.model["max_len"], m.model["max_epochs"], m.model["patience"]) == ("product", 66, 30, 5)
    assert "sku_text" not in DEFAULT_MEMBERS  # the default runs (CI, the demo) do not train it


def test_every_member_builds_a_config_and_cpu_sizes_only_shrink():
    for name, m in MEMBERS.items():
        cfg = GRUAEConfig.preset(name, SIZES | {"name": NAME_VOCAB_SIZE})
        for key, full in m.model.items():
            assert getattr(cfg, key) == full, (name, key)
        assert set(m.cpu) <= set(m.model), name  # overrides only what the member sets
        assert all(m.cpu[k] < m.model[k] for k in m.cpu), name
    large = [n for n, m in MEMBERS.items() if m.cpu]
    assert sorted(large) == ["all_fields", "next_sku", "next_url", "week_all"]
    assert all(MEMBERS[n].cpu == {"emb_dim": 64, "hidden": 128, "n_layers": 2} for n in ("all_fields", "week_all"))
    assert all(MEMBERS[n].cpu == {"n_layers": 2} for n in ("next_sku", "next_url"))  # same width: fewer layers


@pytest.mark.parametrize(("name", "target", "sizes"), [
    ("next_sku", ("sku",), (128, 4, 4)),
    ("next_url", ("url",), (192, 6, 4)),
])
def test_next_event_members(name, target, sizes):
    """The team's `next_sku_128_4_4` / `next_url_192_6_4`: opt-in, served centred and row-L2 normalised."""
    cfg = GRUAEConfig.preset(name, SIZES)
    assert cfg.arch == "next_event" and cfg.target_fields == target
    assert cfg.input_fields == ("event_type", "sku", "category", "price", "url", "day")
    assert (cfg.hidden, cfg.n_heads, cfg.n_layers) == sizes and cfg.emb_dim == cfg.hidden
    assert (cfg.dropout, cfg.max_epochs, cfg.patience, cfg.sampled_negatives) == (0.1, 10, 3, 256)
    assert member(name).post == PostSpec(row_norm=True) and name not in DEFAULT_MEMBERS


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MEMBERS["day_event"].post.pca_dim = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Member("x", {}).name = "y"  # type: ignore[misc]
