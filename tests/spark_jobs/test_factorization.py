"""The factorisation ensemble member (`spark_jobs/factorization.py`): deterministic model versions, the truncated SVD
of the log-weighted matrix (no Spark), and on tiny hand-made events the interaction weights (buy 3, add 1, removes
and events at or after the as-of ignored) and the [category | url] factor halves per user."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sequences_fixtures import event, ts
from ubp.spark_jobs.factorization import (
    ALSConfig,
    category_interactions,
    model_version,
    svd_user_factors,
    url_interactions,
    user_factors,
)

from ubp.tables import EVENTS, PRODUCTS

AS_OF = ts("2024-01-10 00:00:00")


def test_model_version_is_deterministic_and_timezone_blind():
    cfg = ALSConfig()
    v = model_version(cfg, AS_OF)
    assert v.startswith("svd-") and v == model_version(ALSConfig(), AS_OF)
    plus_two = timezone(timedelta(hours=2))
    assert model_version(cfg, AS_OF.astimezone(plus_two)) == v  # the same instant in another zone
    assert model_version(cfg, AS_OF.replace(tzinfo=None)) == v  # naive = UTC
    assert model_version(ALSConfig(rank=32), AS_OF) != v and model_version(cfg, AS_OF + timedelta(days=1)) != v
    assert model_version(ALSConfig(method="als"), AS_OF).startswith("als-")


def test_svd_factors_keep_the_user_geometry_and_pad_to_rank():
    clients = np.array([30, 10, 10, 20, 20, 30])
    items = np.array([7, 5, 6, 5, 6, 6])
    weights = np.array([1.0, 3.0, 1.0, 3.0, 1.0, 2.0])
    users, f = svd_user_factors(clients, items, weights, rank=8)
    assert users.tolist() == [10, 20, 30] and f.shape == (3, 8) and f.dtype == np.float32
    assert not f[:, 2:].any()  # 3 items: at most 2 components, the rest zero
    m = np.zeros((3, 3))
    m[[2, 0, 0, 1, 1, 2], [2, 0, 1, 0, 1, 1]] = np.log1p(weights)
    # a rank-2 matrix is captured whole: user-user inner products are those of the log-weighted rows
    np.testing.assert_allclose(f @ f.T, m @ m.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f[0], f[1], atol=1e-5)  # users 10 and 20 did the same
    one, g = svd_user_factors(np.array([2, 1]), np.array([9, 9]), np.array([3.0, 1.0]), rank=4)
    assert one.tolist() == [1, 2] and g[:, 1:].sum() == 0  # a single item: the log weight is the factor
    np.testing.assert_allclose(g[:, 0], np.log1p([1.0, 3.0]), rtol=1e-6)


@pytest.fixture(scope="module")
def frames(spark):
    rows = [
        event("product_buy", 1, "2024-01-02 10:00:00", sku=10),  # category 100: 3
        event("add_to_cart", 1, "2024-01-03 10:00:00", sku=11),  # category 100: +1
        event("remove_from_cart", 1, "2024-01-03 11:00:00", sku=11),  # no weight
        event("add_to_cart", 1, "2024-01-04 10:00:00", sku=12),  # category 200: 1
        event("page_visit", 1, "2024-01-05 00:00:00", url=7),
        event("page_visit", 1, "2024-01-06 00:00:00", url=7),
        event("page_visit", 2, "2024-01-05 00:00:00", url=8),  # user 2: visits only
        event("page_visit", 2, "2024-01-07 00:00:00", url=7),
        event("add_to_cart", 3, "2024-01-04 00:00:00", sku=12),  # user 3: products only
        event("product_buy", 3, "2024-01-10 00:00:00", sku=10),  # at the as-of: ignored
        event("add_to_cart", 3, "2024-01-04 01:00:00", sku=55),  # not in the catalog: no category
    ]
    events = spark.createDataFrame(rows, EVENTS.spark_schema())
    products = spark.createDataFrame([(s, c, 1, None, "p", AS_OF) for s, c in ((10, 100), (11, 100), (12, 200))],
                                     PRODUCTS.spark_schema())
    return events, products


def test_interaction_weights(frames):
    events, products = frames
    cat = {(r["client_id"], r["item"]): r["weight"] for r in category_interactions(events, products, AS_OF).collect()}
    assert cat == {(1, 100): 4.0, (1, 200): 1.0, (3, 200): 1.0}
    url = {(r["client_id"], r["item"]): r["weight"] for r in url_interactions(events, AS_OF).collect()}
    assert url == {(1, 7): 2.0, (2, 7): 1.0, (2, 8): 1.0}
    assert category_interactions(events, products, datetime(2024, 1, 1)).count() == 0  # all after the as-of


def _rows(df) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = df.toPandas().sort_values("client_id")
    return t["client_id"].to_numpy(), np.stack(t["embedding"].to_numpy()).astype(np.float32), t["n_events"].to_numpy()


def test_user_factors_have_a_category_and_a_url_half(frames):
    events, products = frames
    ids, x, n = _rows(user_factors(events, products, AS_OF, ALSConfig(rank=2)))
    assert ids.tolist() == [1, 2, 3] and x.shape == (3, 4) and x.dtype == np.float32
    assert n.tolist() == [2 + 1, 2, 1]  # (user, item) interactions: categories + urls
    assert not x[1, :2].any() and x[1, 2:].any()  # user 2: visits only
    assert x[2, :2].any() and not x[2, 2:].any()  # user 3: products only


def test_streamed_svd_projects_users_it_did_not_fit_on(spark):
    """The SVD half fitted on a hashed sample of users projects every user per Arrow batch: with the sample = all
    users it equals the in-memory SVD; with a smaller sample, users outside it still get their projection."""
    from ubp.spark_jobs.factorization import svd_components, svd_half

    rng = np.random.default_rng(0)
    n_users = 300
    taste = rng.integers(0, 4, n_users)  # four groups of users, each with its own items
    rows = {(int(u), int(taste[u] * 10 + rng.integers(0, 10))): float(rng.integers(1, 4)) for u in range(n_users)
            for _ in range(6)}
    clients = np.array([u for u, _ in rows]) + 1000
    items, weights = np.array([i for _, i in rows]), np.array(list(rows.values()))
    inter = spark.createDataFrame([(int(c), int(i), float(w)) for c, i, w in zip(clients, items, weights, strict=True)],
                                  "client_id bigint, item bigint, weight float")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
    try:
        full = _rows(svd_half(inter, ALSConfig(rank=4), fit_users=10_000).withColumnRenamed("factors", "embedding")
                     .withColumnRenamed("n", "n_events"))
        part = _rows(svd_half(inter, ALSConfig(rank=4), fit_users=100).withColumnRenamed("factors", "embedding")
                     .withColumnRenamed("n", "n_events"))
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    users, ref = svd_user_factors(clients, items, weights, rank=4)
    assert full[0].tolist() == users.tolist() == part[0].tolist()
    np.testing.assert_allclose(full[1], ref, rtol=1e-4, atol=1e-4)
    assert full[2].tolist() == np.unique(clients, return_counts=True)[1].tolist()
    # fitted on ~1/3 of the users: everyone is still projected, and the groups stay apart (same-group users closer)
    f = part[1] / np.maximum(np.linalg.norm(part[1], axis=1, keepdims=True), 1e-9)
    same = taste[:, None] == taste[None, :]
    sim = f @ f.T
    assert np.abs(part[1]).sum(axis=1).min() > 0 and sim[same].mean() > sim[~same].mean() + 0.3
    ids, comps = svd_components(clients, items, weights, rank=4)
    assert ids.tolist() == sorted(set(items.tolist())) and comps.shape == (len(ids), 4)
