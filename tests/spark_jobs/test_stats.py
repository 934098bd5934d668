"""The statistics member (`spark_jobs/stats.py`, gold `user_stats`) on a hand-computed example, and the ensemble
stage with it: recency, mean gaps, conversion shares, active days; a single-event user, a user without buys, events
at and after the as-of left out, undefined values filled with the window length / -1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sequences_fixtures import event, read_table, ts, write_bronze
from ubp.spark_jobs.aggregates import feature_names as aggregate_names
from ubp.spark_jobs.stats import feature_names, feature_names_version

AS_OF = ts("2024-01-31 00:00:00")
WINDOW = 31.0  # days from the first event in the data (user 3's, 2023-12-31) to the as-of
EVENTS = [
    # user 1: days before as-of in the comments
    event("add_to_cart", 1, "2024-01-20 00:00:00", sku=10),  # 11
    event("add_to_cart", 1, "2024-01-25 00:00:00", sku=11),  # 6
    event("remove_from_cart", 1, "2024-01-26 00:00:00", sku=11),  # 5
    event("add_to_cart", 1, "2024-01-28 00:00:00", sku=10),  # 3
    event("product_buy", 1, "2024-01-29 00:00:00", sku=10),  # 2
    event("page_visit", 1, "2024-01-01 00:00:00", url=7),  # 30: inside the 30-day window (age <= 30 d)
    event("page_visit", 1, "2024-01-11 00:00:00", url=7),  # 20
    event("page_visit", 1, "2024-01-30 12:00:00", url=8),  # 0.5
    event("search_query", 1, "2024-01-15 00:00:00", query=[1] * 16),  # 16
    event("product_buy", 1, "2024-01-31 00:00:00", sku=11),  # AT the as-of: excluded (so sku 11 is never bought)
    event("product_buy", 1, "2024-02-02 00:00:00", sku=12),  # after: excluded
    # user 2: one event, no buys
    event("page_visit", 2, "2024-01-10 00:00:00", url=7),  # 21
    # user 3: the first event in the data; adds a sku it never buys
    event("product_buy", 3, "2023-12-31 00:00:00", sku=10),  # 31
    event("add_to_cart", 3, "2024-01-30 00:00:00", sku=12),  # 1
    event("product_buy", 3, "2024-01-30 06:00:00", sku=10),  # 0.75
]
PRODUCTS = [(10, 500, 20), (11, 501, 50), (12, 502, 90)]  # price buckets: low, mid, high


@pytest.fixture
def built(spark, settings):
    from ubp.stages.ensemble import compute_stats

    write_bronze(spark, settings, EVENTS, PRODUCTS)
    res = compute_stats(settings, as_of=AS_OF)
    rows = read_table(spark, settings, "user_stats")
    return settings, res, {u: dict(zip(feature_names(), r["features"], strict=True)) for u, r in rows.items()}, rows


def test_statistics_hand_computed(built):
    settings, res, f, rows = built
    assert res["rows"] == {"user_stats": 3} and set(f) == {1, 2, 3}
    assert rows[1]["n_events"] == 9 and rows[1]["feature_names_version"] == feature_names_version()
    assert not set(feature_names()) & set(aggregate_names())  # nothing the aggregates already hold
    u1 = f[1]
    # recency per type (the buy at the as-of does not count), undefined = the window length
    assert u1["days_since_last_add_to_cart"] == 3 and u1["days_since_last_remove_from_cart"] == 5
    assert u1["days_since_last_product_buy"] == 2 and u1["days_since_last_search_query"] == 16
    assert u1["days_since_last_page_visit"] == pytest.approx(0.5)
    # mean gap between consecutive events of a type; one event of the type: the window length
    assert u1["mean_gap_days_add_to_cart"] == pytest.approx((11 - 3) / 2)
    assert u1["mean_gap_days_page_visit"] == pytest.approx((30 - 0.5) / 2)
    assert u1["mean_gap_days_product_buy"] == WINDOW and u1["mean_gap_days_remove_from_cart"] == WINDOW
    # activity
    assert u1["n_active_months"] == 1 and u1["n_active_days_30d"] == 9 and u1["n_active_days_7d"] == 5
    assert u1["mean_gap_active_days"] == pytest.approx(29 / 8)  # 9 active days from 01-01 to 01-30
    assert u1["active_span_days"] == pytest.approx(29.5)
    assert (u1["n_events_7d"], u1["n_events_30d"]) == (5, 9)
    # conversion: skus {10, 11} added, {10} bought, {11} removed; adds of 10 (x2) precede its buy, 11's buy is out
    assert u1["added_skus_bought_share"] == 0.5 and u1["added_skus_removed_share"] == 0.5
    assert u1["adds_later_bought_share"] == pytest.approx(2 / 3)
    # popularity: sku 10 has 3 buys before the as-of (user 1 once, user 3 twice)
    assert u1["n_distinct_bought_sku"] == 1 and u1["bought_popularity_log"] == pytest.approx(math.log1p(3))
    assert (u1["n_buys_price_low"], u1["n_buys_price_mid"], u1["n_buys_price_high"]) == (1, 0, 0)

    u2 = f[2]  # a single visit, nothing else
    assert rows[2]["n_events"] == 1 and u2["days_since_last_page_visit"] == 21
    assert all(u2[f"days_since_last_{t}"] == WINDOW for t in ("add_to_cart", "product_buy", "search_query"))
    assert all(v == WINDOW for k, v in u2.items() if k.startswith("mean_gap"))
    assert u2["active_span_days"] == 0 and (u2["n_events_7d"], u2["n_events_30d"]) == (0, 1)
    assert u2["added_skus_bought_share"] == -1 and u2["adds_later_bought_share"] == -1  # nothing added
    assert u2["bought_popularity_log"] == 0 and u2["n_distinct_bought_sku"] == 0 and u2["n_buys_price_low"] == 0

    u3 = f[3]  # buys but never buys what it added
    assert u3["days_since_last_product_buy"] == pytest.approx(0.75)
    assert u3["mean_gap_days_product_buy"] == pytest.approx(30.25)
    assert u3["n_active_months"] == 2 and u3["mean_gap_active_days"] == 30  # Dec 2023 and Jan 2024
    assert u3["added_skus_bought_share"] == 0 and u3["adds_later_bought_share"] == 0
    assert u3["added_skus_removed_share"] == 0
    assert u3["bought_popularity_log"] == pytest.approx(math.log1p(3)) and u3["n_buys_price_low"] == 2
    assert u3["n_buys_price_high"] == 0  # its high-price sku was only added
    assert all(np.isfinite(v) for u in f.values() for v in u.values())


def test_rebuild_is_skipped_and_the_ensemble_reads_the_member(built, spark):
    from ubp.spark_jobs.ensemble import BlockTransform, load_recipe, load_stats_member

    from ubp.stages.aggregates import aggregates
    from ubp.stages.ensemble import compute_stats, ensemble

    settings, _, _, _ = built
    assert compute_stats(settings, as_of=AS_OF)["skipped"] is True
    assert load_recipe().spec("stats").transform == "quantile"
    aggregates(settings, as_of=AS_OF)
    out = ensemble(settings, as_of=AS_OF, members=("aggregates", "stats"))
    lay = out["members"]["stats"]
    assert lay["transform"] == "quantile" and lay["width"] == len(feature_names()) and lay["filled"] == 0
    assert out["rows"]["user_stats"] == 3 and out["rows"]["user_profiles_ensemble"] == 3
    # the written block is the stored quantile transform of the raw statistics
    from safetensors.numpy import load_file

    from ubp.reader import iter_batches

    t = load_file(str(settings.models_dir / "ensemble" / out["version"] / "transforms.safetensors"))
    raw = load_stats_member(settings, AS_OF)
    assert raw.client_ids.tolist() == [1, 2, 3] and raw.version == f"stats-{feature_names_version()}"
    want = BlockTransform("quantile", 1.0, t["stats.a"], t["stats.b"]).apply(raw.values)
    df = __import__("pyarrow").Table.from_batches(
        list(iter_batches(settings.table_path("user_profiles_ensemble")))).to_pandas().sort_values("client_id")
    x = np.stack(df["embedding"].to_numpy()).astype(np.float32)[:, lay["start"]: lay["start"] + lay["width"]]
    np.testing.assert_allclose(x, want, atol=2e-3)
    assert np.abs(x).max() <= 0.5 + 1e-3
