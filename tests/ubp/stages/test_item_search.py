"""Item search through the ANN index (`ubp/stages/item_search.py`): the index built by the real `publish` and
versioned with the item model, stale indexes refused, a table mixing model versions gets none, and `similar_items` /
`ubp similar-items` through the index agreeing with the exact path. Real FAISS, real Feast SQLite store, real Delta
tables (written with deltalake: no Spark needed). The index itself: tests/ubp/test_item_index.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from item_vector_fixtures import DIM, clustered, exact_top, write_item_vectors

from ubp.errors import UbpError


def test_publish_builds_the_index_and_similar_items_uses_it(settings):
    from typer.testing import CliRunner

    from ubp.cli import app
    from ubp.item_index import index_root
    from ubp.stages.publish import publish, similar_items

    n, k = 2000, 10
    vecs = clustered(n, seed=5)
    skus = np.arange(500, 500 + n, dtype=np.int64)
    write_item_vectors(settings, skus, vecs, "item-v1")
    res = publish(settings, online="sqlite", views=["item_vector"])
    built = res["item_index"]["item_vector_v1"]
    assert built["model_version"] == "item-v1" and built["count"] == n and built["dim"] == DIM
    manifest = json.loads((index_root(settings.lakehouse) / "item-v1" / "manifest.json").read_text())
    assert manifest["source"]["delta_version"] == res["views"]["item_vector"]["delta_version"] == 0
    assert manifest["cold"] == int((np.arange(n) % 4 == 0).sum())  # cold items are in the index
    again = publish(settings, online="sqlite", views=["item_vector"])  # nothing changed: the index is kept
    assert again["item_index"]["item_vector_v1"]["skipped"] == "up to date"

    rows = np.random.default_rng(2).choice(n, 60, replace=False)
    truth = exact_top(vecs, rows, k)
    hits = 0
    for q, t in zip(rows, truth, strict=True):
        got = similar_items(settings, int(skus[q]), k=k, online="sqlite")
        assert got[0]["sku"] == int(skus[t[0]])  # same top-1 as exact search, the item itself left out
        hits += len({g["sku"] for g in got} & set(skus[t].tolist()))
    assert hits / (k * len(rows)) >= 0.95
    sku = int(skus[rows[0]])
    exact = similar_items(settings, sku, k=k, online="sqlite", exact=True)
    via_index = similar_items(settings, sku, k=k, online="sqlite", exact=False)
    assert exact[0]["sku"] == via_index[0]["sku"] and exact[0]["score"] == pytest.approx(via_index[0]["score"],
                                                                                          abs=1e-5)
    assert {g["is_cold"] for g in similar_items(settings, sku, k=200)} == {True, False}
    with pytest.raises(UbpError, match="sku 99 has no published item vector"):
        similar_items(settings, 99)

    runner = CliRunner()
    for flag in ("--exact", "--index"):
        out = runner.invoke(app, ["--lakehouse", str(settings.lakehouse), "similar-items", str(sku), "--k", "3",
                                  flag])
        assert out.exit_code == 0, out.output
        lines = [json.loads(ln) for ln in out.output.splitlines() if ln.startswith("{")]
        assert [ln["sku"] for ln in lines][:1] == [exact[0]["sku"]] and len(lines) == 3


def test_index_is_versioned_and_a_stale_one_is_refused(settings):
    from ubp.item_index import index_root
    from ubp.stages.publish import publish, similar_items

    n = 600
    skus = np.arange(1, n + 1, dtype=np.int64)
    write_item_vectors(settings, skus, clustered(n, seed=1), "item-v1")
    publish(settings, online="sqlite", views=["item_vector"])
    assert similar_items(settings, 5, k=3)  # through the index of item-v1

    # a new item model: its vectors are published, but its index is not built (publish without the index step)
    new = clustered(n, seed=2)
    write_item_vectors(settings, skus, new, "item-v2", created=datetime(2024, 3, 1, tzinfo=UTC))
    publish(settings, online="sqlite", views=["item_vector"], index=False)
    with pytest.raises(UbpError, match=r"no item-vector index for item model item-v2 .*ubp publish --view item_vector"):
        similar_items(settings, 5, k=3)  # the item-v1 index is another vector space: never used for item-v2
    exact = similar_items(settings, 5, k=3, exact=True)  # exact search still answers
    assert exact[0]["sku"] == int(skus[exact_top(new, np.array([4]), 1)[0, 0]])

    res = publish(settings, online="sqlite", views=["item_vector"])  # rebuilt for item-v2, next to item-v1
    assert res["item_index"]["item_vector_v1"]["model_version"] == "item-v2"
    assert sorted(p.name for p in index_root(settings.lakehouse).iterdir()) == ["item-v1", "item-v2"]
    assert similar_items(settings, 5, k=3)[0]["sku"] == exact[0]["sku"]

    # same model, one more item (a new cold product): the table version moves on, the index must follow
    write_item_vectors(settings, np.array([n + 1]), new[:1] + 0.01, "item-v2", mode="append",
                       created=datetime(2024, 3, 1, tzinfo=UTC))
    publish(settings, online="sqlite", views=["item_vector"], index=False)
    with pytest.raises(UbpError, match=r"index for model item-v2 is stale: built from item_vectors v1, the online "
                                       r"store serves v2"):
        similar_items(settings, n + 1, k=3)
    publish(settings, online="sqlite", views=["item_vector"])
    assert similar_items(settings, n + 1, k=1)[0]["sku"] == 1  # its near-copy, found through the rebuilt index


def test_a_table_mixing_model_versions_gets_no_index(settings):
    from ubp.item_index import index_root
    from ubp.stages.item_search import build_item_index

    write_item_vectors(settings, np.arange(1, 101), clustered(100, seed=3), "item-v1")
    write_item_vectors(settings, np.arange(101, 201), clustered(100, seed=4), "item-v2", mode="append")
    res = build_item_index(settings)
    assert "mix model versions ['item-v1', 'item-v2']" in res["skipped"]
    assert not index_root(settings.lakehouse).exists()


def test_an_index_of_another_vector_space_is_refused(settings):
    """The index records the space it was built from; a query from another item space gets a one-line error."""
    from ubp.stages.item_search import build_item_index, load_index

    write_item_vectors(settings, np.arange(1, 101), clustered(100, seed=5), "item-v1")
    built = build_item_index(settings, space_id="item_vector_v1")
    assert built["count"] == 100
    assert load_index(settings, "item-v1", 0, space_id="item_vector_v1").neighbours(
        clustered(100, seed=5)[0], 2, exclude_sku=1)
    with pytest.raises(UbpError, match=r"different spaces \['item_vector_v1', 'item_vector_v2'\]") as err:
        load_index(settings, "item-v1", 0, space_id="item_vector_v2")
    assert "\n" not in str(err.value)
    # only the space's rows are indexed: a space without rows in the table has nothing to index
    with pytest.raises(UbpError, match="holds no item vectors"):
        build_item_index(settings, space_id="item_vector_v9", force=True)
