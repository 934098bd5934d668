"""Next-event transformer (`models/next_event.py`): shapes, causality, a user's vector independent of batch-mates and
padding, the targets are the next events' values only, and it learns a planted next-sku rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ubp.models.gru_ae import GRUAEConfig
from ubp.models.next_event import NextEventTransformer
from user_model_fixtures import (  # noqa: F401  (one_torch_thread: autouse fixture)
    SIZES,
    encode_alone_and_in_batches,
    make_chunk,
    one_torch_thread,
)

from ubp.tables import BOS_ID, EOS_ID, FIRST_TOKEN_ID, PAD_ID

TINY = dict(hidden=32, n_heads=4, n_layers=2, dropout=0.0)


def _model(seed: int = 0, member: str = "next_sku", **kw) -> NextEventTransformer:
    torch.manual_seed(seed)
    return NextEventTransformer(GRUAEConfig.preset(member, SIZES, **{**TINY, "emb_dim": 32, **kw})).eval()


def _chunk(n: int = 12, seed: int = 0, max_len: int = 20, **kw):
    from ubp.models.user_data import SequenceChunk
    from user_model_fixtures import make_sequences

    fields = GRUAEConfig.preset("next_sku", SIZES).input_fields
    return SequenceChunk.from_arrow(make_sequences(n, seed=seed, max_len=max_len, **kw), fields, 128)


def test_shapes_stats_and_a_projection_when_widths_differ():
    model = _model()
    b = _chunk(6, seed=1).collate(np.arange(6))
    z = model.encode(b)
    assert z.shape == (6, 32) and torch.isfinite(z).all()
    assert model.hidden_states(b).shape == (6, b["event_type"].shape[1] - 1, 32)  # BOS e1 .. en, no EOS column
    loss, stats = model(b)
    assert set(stats) == {"sku"} and torch.isfinite(loss) and loss > 0
    # the sku head learns from every product event (BOS predicts e1), and nothing follows `en`
    assert stats["sku"]["count"] == int((b["sku"] != PAD_ID).sum())
    narrow = _model(emb_dim=8)  # summed 8-wide embeddings projected to the 32-wide stream
    assert isinstance(narrow.proj, torch.nn.Linear) and narrow.encode(b).shape == (6, 32)
    assert isinstance(model.proj, torch.nn.Identity)


def test_causal_a_later_event_does_not_change_earlier_states():
    model = _model(seed=2)
    b = _chunk(4, seed=2, min_len=10, max_len=10).collate(np.arange(4))
    k = 6  # input position of event e6
    changed = {f: v.clone() for f, v in b.items()}
    changed["sku"][:, k] = FIRST_TOKEN_ID + (changed["sku"][:, k] + 5) % (SIZES["sku"] - FIRST_TOKEN_ID)
    changed["event_type"][:, k] = FIRST_TOKEN_ID  # a product event now, whatever it was
    with torch.no_grad():
        h, h2 = model.hidden_states(b), model.hidden_states(changed)
    assert torch.allclose(h[:, :k], h2[:, :k], atol=1e-5)
    assert not torch.allclose(h[:, k], h2[:, k], atol=1e-3)


def test_a_users_vector_does_not_depend_on_batch_mates_or_padding():
    model = _model(seed=3, dropout=0.1)  # eval mode: dropout off
    chunk = _chunk(12, min_len=1, max_len=30)
    lengths = chunk.lengths
    short, alone = encode_alone_and_in_batches(model, chunk)
    with torch.no_grad():
        all_alone = torch.stack([model.encode(chunk.collate([i]))[0] for i in range(len(chunk))])
        all_together = model.encode(chunk.collate(np.arange(len(chunk))))
    assert torch.allclose(all_alone, all_together, atol=1e-5)
    # the vector is the state at the last real event: the padded batch's state there, not at the last column
    b = chunk.collate(np.arange(len(chunk)))
    with torch.no_grad():
        h = model.hidden_states(b)
    assert torch.allclose(h[short, lengths[short]], alone, atol=1e-5)
    assert not torch.allclose(h[short, -1], alone, atol=1e-3)


def test_the_loss_is_the_next_events_cross_entropy():
    model = _model(seed=4, member="next_url")
    b = _chunk(8, seed=5, max_len=15).collate(np.arange(8))
    with torch.no_grad():
        loss, stats = model(b)
        h = model.hidden_states(b)  # [B, T-1, H]
        logits = model.heads["url"](h[:, :-1])  # positions 0 .. T-3 predict columns 1 .. T-2
        target = b["url"][:, 1:-1].clone()  # the next event's url; EOS and pads are PAD in the url column
        ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD_ID)
    assert torch.allclose(loss, ref, atol=1e-5)
    assert stats["url"]["count"] == int((target != PAD_ID).sum())


def test_event_type_target_never_predicts_the_eos():
    torch.manual_seed(0)
    cfg = GRUAEConfig.preset("next_sku", SIZES, **TINY, emb_dim=32, target_fields=("event_type",))
    b = _chunk(5, seed=6).collate(np.arange(5))
    _, stats = NextEventTransformer(cfg).eval()(b)
    assert stats["event_type"]["count"] == int((b["lengths"] - 2).sum())  # e1 .. en, never the EOS


def test_sampled_softmax_in_training_full_softmax_in_eval():
    sizes = {**SIZES, "sku": 4000}
    torch.manual_seed(0)
    model = NextEventTransformer(GRUAEConfig.preset("next_sku", sizes, **TINY, emb_dim=32, sampled_negatives=64))
    b = _chunk(10, seed=3, max_len=15).collate(np.arange(10))
    model.train()
    loss, _ = model(b)
    loss.backward()
    touched = int((model.heads["sku"].weight.grad.abs().sum(1) > 0).sum())
    assert 0 < touched <= 64 + 60  # the sampled negatives and the batch's targets only
    model.eval()
    with torch.no_grad():
        full, _ = model(b)
    assert abs(float(full) - np.log(4000)) < 1.0  # an untrained full softmax sits near log(V)


def _planted(n_users: int, seed: int, n_sku: int = 16, length: int = 8) -> dict[str, torch.Tensor]:
    """Product events only; each next sku is a fixed function of the current one (a random permutation)."""
    rng = np.random.default_rng(seed)
    perm = np.random.default_rng(99).permutation(n_sku)
    sku = np.zeros((n_users, length), np.int64)
    sku[:, 0] = rng.integers(0, n_sku, n_users)
    for t in range(1, length):
        sku[:, t] = perm[sku[:, t - 1]]
    B, T = n_users, length + 2
    out = {f: torch.zeros((B, T), dtype=torch.long) for f in ("event_type", "sku")}
    out["event_type"][:, 0], out["event_type"][:, 1:-1], out["event_type"][:, -1] = BOS_ID, FIRST_TOKEN_ID, EOS_ID
    out["sku"][:, 1:-1] = torch.from_numpy(sku + FIRST_TOKEN_ID)
    out["lengths"] = torch.full((B,), T)
    return out


def test_learns_a_planted_next_sku_rule():
    n_sku = 16
    sizes = {**SIZES, "sku": FIRST_TOKEN_ID + n_sku}
    torch.manual_seed(0)
    cfg = GRUAEConfig.preset("next_sku", sizes, input_fields=("event_type", "sku"), hidden=32, emb_dim=32,
                             n_heads=2, n_layers=1, dropout=0.0)
    model = NextEventTransformer(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train, test = _planted(64, seed=0, n_sku=n_sku), _planted(64, seed=1, n_sku=n_sku)
    model.eval()
    with torch.no_grad():
        first, _ = model(test)
    model.train()
    for _ in range(60):
        loss, _ = model(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last, stats = model(test)
        nxt = model.predict_next(test, "sku")
    acc = float(stats["sku"]["correct"]) / stats["sku"]["count"]
    assert float(last) < 0.25 * float(first), (float(first), float(last))
    assert acc > 0.8, acc  # chance: 1 / 16; ceiling 7 / 8 + 1 / 128 (BOS cannot know e1)
    perm = np.random.default_rng(99).permutation(n_sku)
    expected = torch.from_numpy(perm[(test["sku"][:, -2] - FIRST_TOKEN_ID).numpy()] + FIRST_TOKEN_ID)
    assert float((nxt == expected).float().mean()) > 0.9  # the vector at `en` predicts the event after it


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        GRUAEConfig.preset("next_url", SIZES, hidden=32, n_heads=6)
    with pytest.raises(ValueError, match="arch must be one of"):
        GRUAEConfig.preset("next_sku", SIZES, arch="lstm")


def test_a_sequence_longer_than_max_len_is_refused():
    model = _model(max_len=8)
    b = make_chunk(3, seed=0, min_len=12, max_len=12)  # collated 14 tokens: 13 inputs > 8 positions
    with pytest.raises(ValueError, match="longer than max_len"):
        model.encode(b.collate(np.arange(3)))
