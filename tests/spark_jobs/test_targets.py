"""Evaluation targets: the time split (no target event before the as-of) and each task's label rules."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from target_fixtures import AS_OF, day, events_df, products_df
from ubp.spark_jobs import targets as T

SPEC = [
    # user 1: bought cat 100 before the as-of only -> churned, no propensity label
    ("product_buy", 1, day(-3), 10, None),
    ("add_to_cart", 1, day(-4), 11, None),  # sku 11 is seen before the as-of: not new
    ("page_visit", 1, day(2), None, 7),
    # user 2: bought before, buys sku 11 (cat 101) in the window -> not churned
    ("product_buy", 2, day(-10), 10, None),
    ("product_buy", 2, day(5), 11, None),
    ("add_to_cart", 2, day(6), 10, None),  # an add is not a purchase
    # user 3: only visits before (not active), buys the new sku 12 (cat 100) in the window
    ("page_visit", 3, day(-1), None, 8),
    ("product_buy", 3, day(1), 12, None),
    # user 4: no event before the as-of -> not in any population
    ("product_buy", 4, day(3), 11, None),
    # after the window: ignored
    ("product_buy", 1, day(20), 11, None),
]
PRODUCTS = [(10, 100, 5), (11, 101, 50), (12, 100, 50)]


@pytest.fixture
def data(spark):
    return events_df(spark, SPEC), products_df(spark, PRODUCTS)


def as_dict(df, col):
    return {r["client_id"]: r[col] for r in df.collect()}


def test_default_as_of_is_last_purchase_minus_window(data):
    events, _ = data
    assert T.default_as_of(events) == day(20) - timedelta(days=14)


def test_churn_and_conversion_labels(data):
    events, _ = data
    churn = as_dict(T.churn_labels(events, AS_OF), "label")
    assert churn == {1: 1, 2: 0}  # only users who bought before the as-of
    conversion = as_dict(T.churn_labels(events, AS_OF, active_only=False), "label")
    assert conversion == {1: 1, 2: 0, 3: 0}


def test_no_target_event_before_as_of(data):
    events, products = data
    # every label comes from the window: user 1's earlier purchase of category 100 gives no label
    targets, popularity = T.propensity_targets(events, products, AS_OF, "category")
    labels = as_dict(T.propensity_labels(events, products, AS_OF, "category", targets), "labels")
    assert 1 not in labels
    assert {targets[i] for i in labels[2]} == {101}
    assert {targets[i] for i in labels[3]} == {100}
    # popularity is counted BEFORE the as-of only: cat 100 bought twice before, cat 101 never
    assert dict(zip(targets, popularity, strict=True)) == {100: 2, 101: 0}
    # moving the as-of past a purchase turns it from a target into input
    later = AS_OF + timedelta(days=5, hours=1)
    t2, _ = T.propensity_targets(events, products, later, "sku")
    lab2 = as_dict(T.propensity_labels(events, products, later, "sku", t2), "labels")
    assert 2 not in lab2 and 3 not in lab2  # their window purchases are now before the as-of
    # the window filter itself
    w = T.window_events(events, AS_OF).collect()
    assert w and all(AS_OF <= r["timestamp"] <= AS_OF + timedelta(days=14) for r in w)
    assert all(r["timestamp"] < AS_OF for r in T.input_events(events, AS_OF).collect())


def test_new_sku_and_price_targets(data):
    events, products = data
    new, _ = T.propensity_targets(events, products, AS_OF, "new_sku")
    assert new == [12]  # sku 11 is bought in the window too, but it was seen (added to cart) before
    price, _ = T.propensity_targets(events, products, AS_OF, "price")
    assert price == [50]
    sku, _ = T.propensity_targets(events, products, AS_OF, "sku", top_n=1)
    assert sku == [11]  # bought twice in the window (users 2 and 4), the most popular


def test_population_and_active(data):
    events, _ = data
    assert {r[0] for r in T.population(events, AS_OF).collect()} == {1, 2, 3}
    assert {r[0] for r in T.active_users(events, AS_OF).collect()} == {1, 2}


def test_collected_labels_match_the_dataframe_functions(data):
    events, products = data
    labels = T.collect_labels(events, products, AS_OF)
    assert set(labels) == {"churn", "conversion", "category", "sku", "new_sku", "price"}
    for task in ("churn", "conversion"):
        expected = as_dict(T.churn_labels(events, AS_OF, active_only=(task == "churn")), "label")
        got = dict(zip(labels[task]["client_id"].tolist(), labels[task]["y"].tolist(), strict=True))
        assert got == expected, task
    for task in ("category", "sku", "new_sku", "price"):
        targets, popularity = T.propensity_targets(events, products, AS_OF, task)
        spec = labels[task]
        assert spec["targets"] == targets and spec["popularity"] == popularity, task
        expected = as_dict(T.propensity_labels(events, products, AS_OF, task, targets), "labels")
        got = {c: sorted(np.flatnonzero(row).tolist()) for c, row in zip(spec["client_id"], spec["y"], strict=True)
               if row.any()}
        population = set(spec["client_id"].tolist())  # user 4 (no event before the as-of) has no profile row
        assert got == {c: sorted(v) for c, v in expected.items() if c in population}, task
