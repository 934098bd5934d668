"""Loading a user model version and encoding users (`models/infer_user.py`), no Spark: config + safetensors load
strictly into the same network, encoding keeps the input row order whatever the length bucketing does, and the
version's serving transform (fitted on the training users, capped) is applied unless raw latents are asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder
from ubp.models.infer_user import (
    encode_arrow,
    encode_batches,
    encode_chunk,
    fit_serving_transform,
    load_model,
)
from ubp.models.members import PostSpec
from ubp.models.user_data import SequenceChunk
from user_model_fixtures import SIZES, make_sequences, one_torch_thread, write_version  # noqa: F401  (autouse)


@pytest.fixture
def version(tmp_path):
    """A registry-like version directory of a tiny untrained model: config.json, weights, model.json."""
    torch.manual_seed(0)
    cfg = GRUAEConfig.preset("small", SIZES, emb_dim=8, hidden=16, n_layers=1, dropout=0.0)
    model = GRUAutoencoder(cfg).eval()
    return write_version(tmp_path, model, "small"), model


def test_load_gives_the_same_network_and_the_manifest(version):
    vdir, original = version
    model, manifest = load_model(vdir, device="cpu")
    assert manifest == {"vocab_version": "v-test", "member": "small"}
    assert model.config == original.config and not model.training
    assert model.serving_transform is None  # no transform files: raw latents are served
    for a, b in zip(original.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_encoding_keeps_row_order_and_matches_the_model(version):
    vdir, original = version
    model, _ = load_model(vdir, device="cpu")
    table = make_sequences(23, seed=4, min_len=1, max_len=30)  # lengths vary: bucketing reorders internally
    chunk = SequenceChunk.from_arrow(table, model.config.input_fields, model.config.max_len)
    z = encode_chunk(model, chunk, batch_size=4)
    assert z.shape == (23, 16) and z.dtype == np.float32
    with torch.no_grad():
        ref = original.encode(chunk.collate(np.arange(len(chunk)))).numpy()  # one batch, row order
    np.testing.assert_allclose(z, ref, atol=1e-5)
    _, arrow_z = encode_arrow(model, table, batch_size=7)
    np.testing.assert_allclose(arrow_z, z, atol=1e-6)
    parts = list(encode_batches(model, iter(table.to_batches(max_chunksize=10)), batch_size=4))
    assert [len(p[0]) for p in parts] == [10, 10, 3]
    assert np.concatenate([p[0] for p in parts]).tolist() == table.column("client_id").to_pylist()
    np.testing.assert_allclose(np.concatenate([p[2] for p in parts]), z, atol=1e-6)


def test_serving_transform_is_fitted_capped_and_applied(version):
    vdir, _ = version
    model, _ = load_model(vdir, device="cpu")
    table = make_sequences(40, seed=5, min_len=2, max_len=12)
    transform, raw_health, served_health = fit_serving_transform(
        model, iter(table.to_batches(max_chunksize=16)), PostSpec(pca_dim=4), max_users=30, batch_size=8)
    assert raw_health["users"] == served_health["users"] == 30  # only the first 30 users fitted it
    assert transform.dim == 4 and model.serving_transform is transform
    _, served = encode_arrow(model, table)
    _, raw = encode_arrow(model, table, raw=True)
    assert served.shape == (40, 4) and raw.shape == (40, 16)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)  # row L2
    np.testing.assert_allclose(served, transform.apply(raw), atol=1e-6)
    transform.save(vdir)
    again, _ = load_model(vdir, device="cpu")  # the version now serves through its stored transform
    np.testing.assert_allclose(encode_arrow(again, table)[1], served, atol=1e-5)


def test_a_next_event_version_loads_and_encodes_in_row_order(tmp_path):
    """The loader builds the config's arch (`build_user_model`): a transformer version encodes like a GRU-AE one."""
    from ubp.models.next_event import NextEventTransformer

    torch.manual_seed(0)
    cfg = GRUAEConfig.preset("next_sku", SIZES, emb_dim=16, hidden=16, n_heads=2, n_layers=1)
    original = NextEventTransformer(cfg).eval()
    write_version(tmp_path, original, "next_sku")
    model, _ = load_model(tmp_path, device="cpu")
    assert type(model) is NextEventTransformer and model.config == cfg
    table = make_sequences(23, seed=4, min_len=1, max_len=30)
    chunk = SequenceChunk.from_arrow(table, model.config.input_fields, model.config.max_len)
    z = encode_chunk(model, chunk, batch_size=4)  # length-bucketed, other batch-mates
    with torch.no_grad():
        ref = original.encode(chunk.collate(np.arange(len(chunk)))).numpy()
    assert z.shape == (23, 16)
    np.testing.assert_allclose(z, ref, atol=1e-5)
