"""The ANN index of item vectors (`ubp/item_index.py`): recall against exact search on 4,000 clustered vectors, the
manifest, and an index directory that must hold its own model version. Real FAISS."""

from __future__ import annotations

import json

import numpy as np
import pytest
from item_vector_fixtures import DIM, clustered, exact_top

from ubp.errors import UbpError


def test_index_recall_against_exact_and_manifest(tmp_path):
    from ubp.item_index import MANIFEST_FILE, IndexParams, ItemIndex, write_index

    n, k = 4000, 10
    vecs = clustered(n)
    skus = np.arange(1000, 1000 + n, dtype=np.int64)
    cold = np.arange(n) % 3 == 0
    params = IndexParams(m=16, ef_construction=64, ef_search=48)
    manifest = write_index(tmp_path, "item-v1", skus, vecs, cold, {"delta_version": 3}, params)
    assert {k: manifest[k] for k in ("model_version", "count", "dim", "metric", "library", "cold")} == {
        "model_version": "item-v1", "count": n, "dim": DIM, "metric": "cosine", "library": "faiss-cpu",
        "cold": int(cold.sum())}
    assert manifest["params"] == {"m": 16, "ef_construction": 64, "ef_search": 48} and manifest["build_seconds"] > 0
    assert json.loads((tmp_path / "item-v1" / MANIFEST_FILE).read_text()) == manifest
    assert not list(tmp_path.glob(".*"))  # the temporary build directory was renamed into place

    index = ItemIndex.load(tmp_path / "item-v1")
    rows = np.random.default_rng(1).choice(n, 300, replace=False)
    truth = exact_top(vecs, rows, k)
    hits = 0
    for q, t in zip(rows, truth, strict=True):
        got = index.neighbours(vecs[q], k, exclude_sku=int(skus[q]))
        assert len(got) == k and int(skus[q]) not in {g["sku"] for g in got}
        assert [g["score"] for g in got] == sorted((g["score"] for g in got), reverse=True)
        assert all(g["is_cold"] == bool(cold[g["sku"] - 1000]) for g in got)
        hits += len({g["sku"] for g in got} & set(skus[t].tolist()))
    assert hits / (k * len(rows)) >= 0.95
    # the scores are cosines of the raw (unnormalised) vectors
    top = index.neighbours(vecs[rows[0]], 1, exclude_sku=int(skus[rows[0]]))[0]
    other = vecs[top["sku"] - 1000]
    cos = float(vecs[rows[0]] @ other / np.linalg.norm(vecs[rows[0]]) / np.linalg.norm(other))
    assert top["score"] == pytest.approx(cos, abs=1e-5)


def test_index_directory_must_hold_its_model_version(tmp_path):
    from ubp.item_index import ItemIndex, write_index

    vecs = clustered(200)
    write_index(tmp_path, "item-v1", np.arange(200), vecs, np.zeros(200, bool), {})
    (tmp_path / "item-v1").rename(tmp_path / "item-v2")  # an index copied under another version's name
    with pytest.raises(UbpError, match="holds model 'item-v1', not 'item-v2'"):
        ItemIndex.load(tmp_path / "item-v2")
