"""GRU-AE user model: padding invariance, cheap heads = masked loss, dataset purity, overfit, artifacts, vocab checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder  # noqa: E402
from ubp.models.user_data import SequenceChunk, bucket_batches, is_val_user, stream_batches  # noqa: E402
from user_model_fixtures import SIZES, make_sequences, write_lakehouse  # noqa: E402

from ubp.errors import UbpError  # noqa: E402
from ubp.tables import BOS_ID, EOS_ID, PAD_ID  # noqa: E402

TINY = dict(emb_dim=16, hidden=32, n_layers=2, dropout=0.0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The CI box is 2 shared cores: intra-op threads spin-wait against other jobs (20x slower steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, **kw) -> tuple[GRUAEConfig, GRUAutoencoder]:
    torch.manual_seed(seed)
    cfg = GRUAEConfig.preset("small", SIZES, **{**TINY, **kw})
    return cfg, GRUAutoencoder(cfg).eval()


def _chunk(n: int = 12, seed: int = 0, max_len: int = 20, **kw) -> SequenceChunk:
    cfg = GRUAEConfig.preset("small", SIZES)
    return SequenceChunk.from_arrow(make_sequences(n, seed=seed, max_len=max_len, **kw), cfg.input_fields, 128)


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
    b = _chunk(5, seed=4).collate(np.arange(5))
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
    b = _chunk(10, seed=3, max_len=15).collate(np.arange(10))
    assert model._sampled("sku") and model._sampled("url") and not model._sampled("category")
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


def test_padding_does_not_change_the_latent():
    cfg, model = _model()
    chunk = _chunk(12, min_len=1, max_len=30)
    lengths = chunk.lengths
    short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[long_] > lengths[short] + 5
    with torch.no_grad():
        alone = model.encode(chunk.collate([short]))[0]
        in_batch = model.encode(chunk.collate(np.arange(len(chunk))))[short]  # batch-mates up to 15x longer
        reordered = model.encode(chunk.collate([long_, short]))[1]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    assert torch.allclose(alone, reordered, atol=1e-5)
    # the trap this guards against: an unpacked GRU over right-padded input does change the state
    b = chunk.collate(np.arange(len(chunk)))
    with torch.no_grad():
        _, h = model.encoder(model.embed(b))
    assert not torch.allclose(h[-1][short], alone, atol=1e-3)


def test_cheap_heads_give_the_masked_padded_loss():
    cfg, model = _model(seed=1)
    chunk = _chunk(10, seed=3, max_len=15)
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


def test_collate_is_pure_and_adds_bos_eos():
    chunk = _chunk(6, seed=2, min_len=3, max_len=9)
    a, b = chunk.collate([0, 1, 2]), chunk.collate([0, 1, 2])
    for k in a:
        assert torch.equal(a[k], b[k])
    a["event_type"][0, 1] = 99  # a consumer mutating its batch does not leak into the dataset
    assert not torch.equal(a["event_type"], chunk.collate([0, 1, 2])["event_type"])
    et, n = b["event_type"], b["lengths"]
    assert (et[:, 0] == BOS_ID).all()
    for i in range(3):
        assert et[i, n[i] - 1] == EOS_ID
        assert (et[i, n[i]:] == PAD_ID).all()
    assert b["query"].shape[-1] == 16


def test_truncation_keeps_newest_events():
    table = make_sequences(3, seed=5, min_len=20, max_len=20)
    chunk = SequenceChunk.from_arrow(table, ["event_type", "day"], max_len=10)
    assert (chunk.lengths == 8).all()
    b = chunk.collate([0])
    assert b["day"][0, 1:9].tolist() == table.column("day")[0].as_py()[-8:]


def test_split_is_stable_and_bucketing_groups_lengths():
    ids = np.arange(10_000, dtype=np.int64)
    val = is_val_user(ids, 0.1)
    assert 0.08 < val.mean() < 0.12
    assert np.array_equal(val[::-1], is_val_user(ids[::-1], 0.1))
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    batches = bucket_batches(lengths, 50, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # vs ~95 for random batches
    table = make_sequences(60, seed=1)
    train = [int(c) for b in stream_batches(lambda: iter(table.to_batches()), ["event_type"], 8, split="train")
             for c in b["client_id"]]
    val_ids = [int(c) for b in stream_batches(lambda: iter(table.to_batches()), ["event_type"], 8, split="val")
               for c in b["client_id"]]
    assert not set(train) & set(val_ids) and len(train) + len(val_ids) == 60


def test_overfit_artifacts_and_idempotence(settings):
    from safetensors.torch import load_file

    from ubp import registry
    from ubp.stages.train_user_model import train_user_model

    write_lakehouse(settings, n_users=8, seed=0, min_len=2, max_len=6)
    overrides = dict(emb_dim=32, hidden=64, n_layers=1, dropout=0.0, lr=1e-2, batch_size=8, patience=100)
    result = train_user_model(settings, member="small", max_epochs=45, seed=0, overrides=overrides,
                              val_fraction=0.0, show_progress=False)
    accs = {k: v for k, v in result["metrics"].items() if k.startswith("val_acc_")}
    assert set(accs) == {f"val_acc_{f}" for f in ("event_type", "sku", "category", "price", "url")}
    assert min(accs.values()) >= 0.95, accs
    version = result["version"]
    assert registry.current_version(settings, "user-small") == version  # promote="if_none", the member's kind
    assert registry.current_version(settings, "user") is None  # the served kind belongs to day_event
    vdir = Path(result["model_dir"])
    for name in ("config.json", "model.json", "metrics.jsonl", "weights.safetensors", "loss.png",
                 "latent_transform.safetensors", "latent_transform.json"):
        assert (vdir / name).stat().st_size > 0, name
    manifest = json.loads((vdir / "model.json").read_text())
    assert manifest["vocab_version"] == "v-test" and manifest["training_table"]["version"] == 0
    assert manifest["member"] == "small" and manifest["latent_health"]["raw"]["users"] == 8
    records = [json.loads(x) for x in (vdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r]
    assert [r["epoch"] for r in epochs] == list(range(45))
    assert "val_loss" in epochs[-1] and result["metrics"]["val_loss"] < 0.5
    assert "latent_health" in records[-1]
    assert all(not k.startswith("_") for k in load_file(vdir / "weights.safetensors"))
    # same inputs again: same version, no retraining
    again = train_user_model(settings, member="small", max_epochs=45, seed=0, overrides=overrides,
                             val_fraction=0.0, show_progress=False)
    assert again["version"] == version and again["reused"]
    # encode through the safe loader: same latents as the checkpointed model gives
    from ubp.models.infer_user import encode_batches, load_model

    from ubp.reader import iter_batches

    model, man = load_model(vdir, device="cpu")
    rows = list(encode_batches(model, iter_batches(settings.table_path("user_sequences"))))
    assert sum(len(r[0]) for r in rows) == 8 and rows[0][2].shape[1] == 64
    served = np.concatenate([r[2] for r in rows])
    assert np.abs(served.mean(axis=0)).max() < 1e-4  # served vectors are centred on the training users
    raw = np.concatenate([r[2] for r in encode_batches(model, iter_batches(settings.table_path("user_sequences")),
                                                       raw=True)])
    assert np.allclose(served, raw - raw.mean(axis=0), atol=1e-5)
    # a different vocabulary: warm start from this model is refused with a clear error
    write_lakehouse(settings, n_users=8, seed=0, vocab="v-other", min_len=2, max_len=6)
    with pytest.raises(UbpError, match="model trained on vocabulary v-test, table uses v-other"):
        train_user_model(settings, member="small", max_epochs=1, overrides=overrides, init_from=version,
                         show_progress=False)
