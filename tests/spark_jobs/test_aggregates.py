"""user_aggregates on a hand-computed example."""

from __future__ import annotations

import pytest
from sequences_fixtures import event, read_table, ts, write_bronze
from ubp.spark_jobs.aggregates import feature_names, feature_names_version

AS_OF = ts("2024-01-31 00:00:00")
EVENTS = [
    # user 1
    event("add_to_cart", 1, "2024-01-30 12:00:00", sku=10),  # 0.5 d before as-of
    event("add_to_cart", 1, "2024-01-25 00:00:00", sku=11),  # 6 d
    event("product_buy", 1, "2024-01-30 18:00:00", sku=10),  # 0.25 d
    event("page_visit", 1, "2024-01-10 00:00:00", url=7),  # 21 d
    event("search_query", 1, "2024-01-20 00:00:00", query=[2] * 16),
    event("search_query", 1, "2024-01-21 00:00:00", query=[4] * 16),
    event("page_visit", 1, "2023-12-01 00:00:00", url=7),  # 61 d: outside every window
    event("product_buy", 1, "2024-02-05 00:00:00", sku=11),  # after as-of: ignored
    # user 2: makes sku 11 / url 8 second in their rankings
    event("add_to_cart", 2, "2024-01-29 00:00:00", sku=10),
    event("page_visit", 2, "2024-01-29 00:00:00", url=8),
]
PRODUCTS = [(10, 500, 20), (11, 501, 40)]


def test_aggregates_hand_computed(spark, settings):
    from ubp.stages.aggregates import aggregates

    write_bronze(spark, settings, EVENTS, PRODUCTS)
    res = aggregates(settings, as_of=AS_OF)
    assert res["top_values"]["add_to_cart.sku"] == [10, 11]
    assert res["top_values"]["page_visit.url"] == [7, 8]
    rows = read_table(spark, settings, "user_aggregates")
    assert set(rows) == {1, 2}
    u1 = rows[1]
    assert u1["n_events"] == 7 and u1["feature_names_version"] == feature_names_version()
    f = dict(zip(feature_names(), u1["features"], strict=True))
    assert len(u1["features"]) == len(feature_names())
    # official baseline counts
    assert (f["add_to_cart_sku_top1_1d"], f["add_to_cart_sku_top1_7d"], f["add_to_cart_sku_top1_30d"]) == (1, 1, 1)
    assert (f["add_to_cart_sku_top2_1d"], f["add_to_cart_sku_top2_7d"], f["add_to_cart_sku_top2_30d"]) == (0, 1, 1)
    assert f["add_to_cart_price_top1_7d"] == 1 and f["add_to_cart_price_top2_7d"] == 1  # prices 20 / 40
    assert f["add_to_cart_category_top1_30d"] == 1
    assert f["product_buy_sku_top1_1d"] == 1 and f["product_buy_sku_top2_30d"] == 0
    assert (f["page_visit_url_top1_7d"], f["page_visit_url_top1_30d"]) == (0, 1)  # the 61-day-old visit is out
    assert f["query_mean_0"] == pytest.approx(3.0) and f["query_mean_15"] == pytest.approx(3.0)
    # statistics
    assert (f["n_add_to_cart"], f["n_product_buy"], f["n_page_visit"], f["n_search_query"]) == (2, 1, 2, 2)
    assert f["n_remove_from_cart"] == 0 and f["n_events"] == 7
    assert f["n_page_visit_30d"] == 1
    assert f["buy_spend_total"] == 20 and f["buy_spend_mean"] == 20
    assert f["cart_spend_total"] == 60 and f["cart_spend_mean"] == 30
    assert f["add_to_buy_conversion"] == pytest.approx(0.5)
    assert f["days_since_last"] == pytest.approx(0.25)
    assert f["days_since_first"] == pytest.approx(61.0)
    assert f["mean_gap_days"] == pytest.approx((61.0 - 0.25) / 6, rel=1e-5)
    assert f["n_active_days"] == 6  # 12-01, 01-10, 01-20, 01-21, 01-25, 01-30
    assert f["n_distinct_sku"] == 2 and f["n_distinct_url"] == 1 and f["n_distinct_category"] == 2
    assert f["delta_events_week"] == 3 - 2  # 01-25, 01-30 x2 in the last 7 days; the searches in days 7..14
    assert f["delta_events_month"] == 6 - 0  # the 61-day-old visit is outside days 30..60 too
    u2 = dict(zip(feature_names(), rows[2]["features"], strict=True))
    assert u2["add_to_buy_conversion"] == 0 and u2["query_mean_3"] == 0 and u2["page_visit_url_top2_1d"] == 0
    assert u2["page_visit_url_top2_7d"] == 1
