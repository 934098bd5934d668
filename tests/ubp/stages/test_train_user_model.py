"""Stage `train_user_model`: a tiny model overfits, every artifact is written, the same inputs reuse the version,
the safe loader encodes centred latents, a model trained on another vocabulary is refused, and the opt-in `sku_text`
member trains and embeds end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from user_model_fixtures import one_torch_thread, write_lakehouse  # noqa: F401  (autouse fixture)

from ubp.errors import UbpError


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


def test_train_users_trains_on_a_stable_sample(settings, tmp_path, monkeypatch):
    """`--train-users N`: every epoch sees the same hashed ~N users (the training side of them), the manifest says
    so, and the run is keyed by it (the full run is another run)."""
    from ubp.models.user_data import in_sample, is_val_user

    from ubp.reader import iter_batches
    from ubp.stages.train_user_model import train_user_model

    write_lakehouse(settings, n_users=400, seed=1, min_len=2, max_len=5)
    monkeypatch.setenv("UBP_TRAIN_TRACE_DIR", str(tmp_path / "trace"))
    overrides = dict(emb_dim=8, hidden=16, n_layers=1, dropout=0.0, batch_size=32, patience=100)
    out = train_user_model(settings, member="small", max_epochs=2, overrides=overrides, train_users=100,
                           show_progress=False)
    manifest = json.loads((Path(out["model_dir"]) / "model.json").read_text())
    assert manifest["sample_fraction"] == 0.25
    ids = np.concatenate([b.column("client_id").to_numpy() for b in iter_batches(settings.table_path("user_sequences"))])
    expected = sorted(ids[in_sample(ids, 0.25) & ~is_val_user(ids, 0.1)].tolist())
    epochs = [json.loads(x) for x in (tmp_path / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert len(epochs) == 2 and all(sorted(e["client_ids"]) == expected for e in epochs)
    assert 60 < len(expected) < 120
    full = train_user_model(settings, member="small", max_epochs=2, overrides=overrides, show_progress=False)
    assert not full.get("reused") and full["version"] != out["version"]


def test_a_next_event_member_trains_and_serves_row_normalised_vectors(settings):
    """`next_sku` through the same stage: its own kind, a transformer config, the next-sku accuracy recorded, and
    the served vectors (what `embed-users` writes) centred and row-L2 normalised."""
    from ubp.models.infer_user import encode_batches, load_model
    from ubp.models.next_event import NextEventTransformer

    from ubp import registry
    from ubp.reader import iter_batches
    from ubp.stages.train_user_model import train_user_model

    write_lakehouse(settings, n_users=30, seed=2, min_len=2, max_len=10)
    overrides = dict(emb_dim=16, hidden=16, n_heads=2, n_layers=1, batch_size=8)
    result = train_user_model(settings, member="next_sku", max_epochs=2, overrides=overrides, show_progress=False)
    assert result["kind"] == "user-next_sku" and registry.current_version(settings, "user-next_sku") == result["version"]
    assert registry.current_version(settings, "user") is None
    vdir = Path(result["model_dir"])
    config = json.loads((vdir / "config.json").read_text())
    assert (config["arch"], config["n_heads"], config["target_fields"]) == ("next_event", 2, ["sku"])
    assert set(result["metrics"]) >= {"val_loss", "val_acc_sku"} and result["metrics"]["epochs_run"] == 2
    model, manifest = load_model(vdir, device="cpu")
    assert type(model) is NextEventTransformer and manifest["member"] == "next_sku"
    rows = list(encode_batches(model, iter_batches(settings.table_path("user_sequences"))))
    served = np.concatenate([r[2] for r in rows])
    assert served.shape == (30, 16)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)


def test_sku_text_trains_on_product_events_and_embeds_their_users(spark, settings):
    """The opt-in `sku_text` member end to end: trained on the name codes of product events (input and target),
    served as PCA 64 of its latent, embedded by Spark into `user_member_profiles` for the users with a product
    event, the same vectors as in-process encoding."""
    from deltalake import DeltaTable
    from ubp.models.infer_user import encode_batches, load_model

    from ubp.reader import iter_batches
    from ubp.stages.embed_users import embed_users
    from ubp.stages.train_user_model import train_user_model

    path = write_lakehouse(settings, n_users=24, seed=3, min_len=1, max_len=10)
    overrides = dict(emb_dim=8, hidden=16, n_layers=1, dropout=0.0, batch_size=8)
    result = train_user_model(settings, member="sku_text", max_epochs=1, overrides=overrides, val_fraction=0.2,
                              show_progress=False)
    config = json.loads((Path(result["model_dir"]) / "config.json").read_text())
    assert (config["events"], config["max_len"], config["vocab_sizes"]["name"]) == ("product", 66, 260)
    assert {"val_acc_event_type", "val_acc_name"} <= set(result["metrics"])
    out = embed_users(settings, member="sku_text")
    assert out["model_version"] == result["version"]
    got = DeltaTable(str(settings.table_path("user_member_profiles"))).to_pyarrow_table().to_pylist()
    model, _ = load_model(result["model_dir"], device="cpu")
    ref = {int(c): z for cids, _, zs in encode_batches(model, iter_batches(path))
           for c, z in zip(cids, zs, strict=True)}
    table = pa.Table.from_batches(list(iter_batches(path, columns=["client_id", "name"])))
    with_products = {c for c, n in zip(table["client_id"].to_pylist(), table["name"].to_pylist(), strict=True) if n}
    assert {r["client_id"] for r in got} == set(ref) == with_products  # users without a product event: no row
    for row in got:
        np.testing.assert_allclose(np.asarray(row["embedding"]), ref[row["client_id"]], atol=1e-5)
