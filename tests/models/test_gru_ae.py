"""GRU-AE user model (`models/gru_ae.py`): presets and members as configured, concatenated fields, sampled
softmax, padding invariance, cheap heads = masked loss, name codes as input and 16-position target."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder, uses_sampled_softmax
from user_model_fixtures import (  # noqa: F401  (one_torch_thread: autouse fixture)
    SIZES,
    encode_alone_and_in_batches,
    make_chunk,
    one_torch_thread,
)

from ubp.tables import NAME_VOCAB_SIZE, PAD_ID

TINY = dict(emb_dim=16, hidden=32, n_layers=2, dropout=0.0)


def _model(seed: int = 0, **kw) -> tuple[GRUAEConfig, GRUAutoencoder]:
    torch.manual_seed(seed)
    cfg = GRUAEConfig.preset("small", SIZES, **{**TINY, **kw})
    return cfg, GRUAutoencoder(cfg).eval()


def test_presets():
    small = GRUAEConfig.preset("small", SIZES)
    paper = GRUAEConfig.preset("paper", SIZES)
    assert (small.emb_dim, small.hidden, small.n_layers, small.dropout) == (64, 128, 2, 0.5)
    assert (paper.emb_dim, paper.hidden, paper.n_layers, paper.dropout) == (512, 512, 3, 0.1)
    assert GRUAEConfig.from_dict(json.loads(json.dumps(small.to_dict()))) == small
    with pytest.raises(ValueError, match="unknown member"):
        GRUAEConfig.preset("huge", SIZES)


def test_members_as_the_team_configured_them():
    day = GRUAEConfig.preset("day_event", SIZES)
    assert day.input_fields == day.target_fields == ("event_type", "day")  # time is an input AND a target
    assert (day.combine, day.emb_dim, day.input_dim, day.hidden, day.n_layers, day.dropout) == (
        "concat", 64, 128, 128, 2, 0.5)
    assert (day.max_epochs, day.patience) == (30, 5)
    week = GRUAEConfig.preset("week_all", SIZES)
    assert week.input_fields == week.target_fields == ("week", "event_type", "category", "price", "sku", "url")
    assert (week.emb_dim, week.hidden, week.n_layers, week.dropout, week.max_epochs, week.patience) == (
        512, 512, 3, 0.1, 10, 3)
    allf = GRUAEConfig.preset("all_fields", SIZES)
    assert set(allf.target_fields) == {"event_type", "category", "price", "sku", "url"} and "week" not in allf.input_fields
    # concatenated fields: the GRU input is one embedding per field side by side
    torch.manual_seed(0)
    model = GRUAutoencoder(GRUAEConfig.preset("day_event", SIZES, emb_dim=8, hidden=16)).eval()
    b = make_chunk(5, seed=4).collate(np.arange(5))
    emb = model.embed(b)
    assert emb.shape[-1] == 16
    assert torch.equal(emb[..., :8], model.embed.tables["event_type"](b["event_type"]))
    assert torch.equal(emb[..., 8:], model.embed.tables["day"](b["day"]))
    loss, stats = model(b)
    assert set(stats) == {"event_type", "day"} and torch.isfinite(loss)


def test_sampled_softmax_trains_big_heads_and_validates_with_the_full_softmax():
    sizes = {**SIZES, "sku": 4000, "url": 4000}
    torch.manual_seed(0)
    cfg = GRUAEConfig.preset("small", sizes, **TINY, sampled_negatives=64)
    model = GRUAutoencoder(cfg)
    b = make_chunk(10, seed=3, max_len=15).collate(np.arange(10))
    assert uses_sampled_softmax(cfg, "sku") and uses_sampled_softmax(cfg, "url")
    assert not uses_sampled_softmax(cfg, "category")
    model.train()
    loss, stats = model(b)
    loss.backward()
    grad = model.heads["sku"].weight.grad
    touched = (grad.abs().sum(1) > 0).sum().item()
    assert 0 < touched <= 64 + 40  # only the sampled negatives and the batch's targets get a gradient
    model.zero_grad()
    model.eval()
    with torch.no_grad():
        full, _ = model(b)
        h, targets, _ = model._decode(b)
        mask = targets["sku"] != PAD_ID
        ref = F.cross_entropy(model.heads["sku"](h[mask]), targets["sku"][mask])
    assert torch.isfinite(full) and ref > 0  # eval = the full softmax over 4000 classes
    assert abs(float(ref) - np.log(4000)) < 1.0  # an untrained full softmax sits near log(V)


def test_loss_norm_weighs_every_field_by_the_log_of_its_classes():
    _, plain = _model()
    _, normed = _model(loss_norm=True)  # the same weights (same seed), the loss normalised per field
    b = make_chunk(8, seed=5).collate(np.arange(8))
    with torch.no_grad():
        loss, stats = plain(b)
        loss_n, stats_n = normed(b)
    assert stats.keys() == stats_n.keys()
    assert all(torch.allclose(stats[f]["loss"], stats_n[f]["loss"]) for f in stats)  # per-field stats stay raw CE
    assert torch.allclose(loss, sum(v["loss"] for v in stats.values()))
    expect = sum(v["loss"] / np.log(SIZES[f]) for f, v in stats.items())
    assert torch.allclose(loss_n, expect.float(), atol=1e-5)
    assert float(loss_n) < float(loss) / 2  # untrained: each normalised field sits near 1
    # off by default and then absent from the saved config: an existing member's training run key is unchanged
    assert "loss_norm" not in plain.config.to_dict() and normed.config.to_dict()["loss_norm"] is True
    assert GRUAEConfig.from_dict(normed.config.to_dict()) == normed.config


def test_padding_does_not_change_the_latent():
    cfg, model = _model()
    chunk = make_chunk(12, min_len=1, max_len=30)
    short, alone = encode_alone_and_in_batches(model, chunk)
    # the trap this guards against: an unpacked GRU over right-padded input does change the state
    b = chunk.collate(np.arange(len(chunk)))
    with torch.no_grad():
        _, h = model.encoder(model.embed(b))
    assert not torch.allclose(h[-1][short], alone, atol=1e-3)


def test_cheap_heads_give_the_masked_padded_loss():
    cfg, model = _model(seed=1)
    chunk = make_chunk(10, seed=3, max_len=15)
    b = chunk.collate(np.arange(len(chunk)))
    with torch.no_grad():
        loss, stats = model(b)
        # reference: every head on every padded position, cross-entropy ignoring PAD targets
        emb = model.embed(b)
        lengths = b["lengths"]
        packed = torch.nn.utils.rnn.pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        _, h = model.encoder(packed)
        dec_in = emb[:, :-1] + model.latent_to_input(h[-1])[:, None, :]
        dpacked = torch.nn.utils.rnn.pack_padded_sequence(dec_in, lengths - 1, batch_first=True, enforce_sorted=False)
        out, _ = model.decoder(dpacked, h)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=dec_in.shape[1])
        ref = 0.0
        for f in cfg.target_fields:
            logits = model.heads[f](out)  # [B, T-1, V]
            ref += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[f][:, 1:].reshape(-1), ignore_index=PAD_ID)
    assert torch.allclose(loss, torch.as_tensor(ref), atol=1e-5)
    assert stats["event_type"]["count"] == int((lengths - 1).sum())  # every event + EOS is a target


def test_name_codes_as_input_and_target_train_and_weigh_as_one_field():
    from ubp.models.user_data import SequenceChunk
    from user_model_fixtures import make_sequences

    torch.manual_seed(0)
    cfg = GRUAEConfig.preset("sku_text", SIZES | {"name": NAME_VOCAB_SIZE}, **TINY, max_len=10)
    model = GRUAutoencoder(cfg)
    chunk = SequenceChunk.from_arrow(make_sequences(16, seed=1, min_len=4, max_len=12), cfg.input_fields,
                                     cfg.max_len, cfg.events)
    b = chunk.collate(np.arange(len(chunk)))
    assert b["name"].shape[-1] == 16 and model.heads["name"].out_features == 16 * NAME_VOCAB_SIZE
    model.eval()
    with torch.no_grad():  # the name loss: one mean over every (event, position), as if the 16 codes were one field
        loss, stats = model(b)
        hidden, targets, _ = model._decode(b)
        y = targets["name"]  # [N, 16]
        keep = (y != PAD_ID).any(-1)
        logits = model.heads["name"](hidden[keep]).reshape(-1, NAME_VOCAB_SIZE)
        ref = F.cross_entropy(logits, y[keep].reshape(-1))
    assert torch.allclose(stats["name"]["loss"], ref, atol=1e-5)
    assert stats["name"]["count"] == 16 * int((b["name"][:, 1:] != PAD_ID).any(-1).sum())  # every product event
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = float(loss)
    for _ in range(60):
        opt.zero_grad()
        loss, _ = model(b)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    pred = model.eval().reconstruct(b)["name"]  # [B, T-1, 16]
    target = b["name"][:, 1:]
    assert pred.shape == target.shape and torch.equal(pred == PAD_ID, target == PAD_ID)
    assert (pred == target)[target != PAD_ID].float().mean() > 0.1  # chance: 1 / 256
    with pytest.raises(ValueError, match="events must be one of"):
        GRUAEConfig.preset("sku_text", SIZES | {"name": NAME_VOCAB_SIZE}, events="buys")
