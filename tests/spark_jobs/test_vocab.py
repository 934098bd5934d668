"""Token vocabularies (`spark_jobs/vocab.py`): the content-hash version, sizes and day range of a collected vocabulary
(no Spark), and on a tiny hand-made event set: the as-of cut, the epoch day (also before 1970), catalog attributes
of product events only, frequency ranking with ties by raw value, top-K cut-offs, every day of the window, weeks,
and the rows of the `vocabularies` contract."""

from __future__ import annotations

from datetime import date

import pytest
from sequences_fixtures import event, ts
from ubp.spark_jobs.vocab import (
    ALL_FIELDS,
    Vocab,
    build_vocab,
    prepare_events,
    select_events,
    vocab_frame,
    vocab_version,
)

from ubp.tables import EVENT_TYPE_CODE, EVENTS, FIRST_TOKEN_ID, PRODUCTS, VOCABULARIES

AS_OF = ts("2024-01-10 00:00:00")
DAY0 = (date(2024, 1, 2) - date(1970, 1, 1)).days  # epoch day of the first event
EVENT_ROWS = [
    event("add_to_cart", 1, "2024-01-02 10:00:00", sku=10),
    event("product_buy", 1, "2024-01-03 10:00:00", sku=10),
    event("add_to_cart", 1, "2024-01-03 11:00:00", sku=11),
    event("search_query", 1, "2024-01-04 00:00:00", query=[5] * 8 + [6] * 8),
    event("page_visit", 1, "2024-01-05 00:00:00", url=7),
    event("page_visit", 1, "2024-01-05 01:00:00", url=7),
    event("page_visit", 1, "2024-01-09 23:59:59", url=8),  # day 7: the second week
    event("add_to_cart", 2, "2024-01-02 12:00:00", sku=12),
    event("remove_from_cart", 2, "2024-01-03 12:00:00", sku=11),
    event("add_to_cart", 2, "2024-01-04 12:00:00", sku=13),  # not in the catalog
    event("product_buy", 2, "2024-01-10 00:00:00", sku=99),  # at the as-of: excluded
]
CATALOG = [(10, 100, 5), (11, 100, 6), (12, 200, 5), (99, 300, 9)]  # (sku, category, price)


@pytest.fixture(scope="module")
def frames(spark):
    events = spark.createDataFrame(EVENT_ROWS, EVENTS.spark_schema())
    products = spark.createDataFrame([(s, c, p, None, "p.parquet", AS_OF) for s, c, p in CATALOG],
                                     PRODUCTS.spark_schema())
    return events, products


def test_version_is_a_content_hash_and_sizes_follow_the_tokens():
    maps = {"sku": {10: 4, 11: 5}, "day": {19724: 4, 19725: 5}}
    v = Vocab(maps={"day": {19725: 5, 19724: 4}, "sku": {11: 5, 10: 4}})  # insertion order does not matter
    assert v.version == vocab_version(maps) and len(v.version) == 16
    assert vocab_version({**maps, "sku": {10: 4, 11: 6}}) != v.version  # any change: a new version
    assert v.sizes() == {"sku": 6, "day": 6}
    assert (v.first_day, v.last_day) == (19724, 19725)
    empty = Vocab(maps={"sku": {}})
    assert empty.sizes() == {"sku": FIRST_TOKEN_ID} and (empty.first_day, empty.last_day) == (0, -1)
    assert Vocab(maps=maps, version="pinned").version == "pinned"


def test_events_before_the_as_of_with_codes_days_and_catalog_attributes(spark, frames):
    events, products = frames
    rows = {(r["client_id"], r["ts"]): r for r in prepare_events(events, products, AS_OF).collect()}
    assert len(rows) == len(EVENT_ROWS) - 1  # the event at the as-of is left out
    buy = rows[(1, int(ts("2024-01-03 10:00:00").timestamp()))]
    assert (buy["etype"], buy["eday"], buy["category"], buy["price"]) == (EVENT_TYPE_CODE["product_buy"], DAY0 + 1,
                                                                          100, 5)
    assert buy["ts_us"] == buy["ts"] * 1_000_000
    unknown = rows[(2, int(ts("2024-01-04 12:00:00").timestamp()))]
    assert unknown["sku"] == 13 and unknown["category"] is None  # a sku missing from the catalog
    visit = rows[(1, int(ts("2024-01-05 00:00:00").timestamp()))]
    assert visit["url"] == 7 and visit["category"] is None and visit["price"] is None
    assert select_events(events, AS_OF, all_before=True).count() == len(EVENT_ROWS)  # the caller vouches: no filter
    old = spark.createDataFrame([event("page_visit", 3, "1969-12-31 23:00:00", url=1)], EVENTS.spark_schema())
    assert select_events(old, AS_OF).first()["eday"] == -1  # floor, not truncation towards zero


def test_build_vocab_ranks_cuts_and_covers_every_day(spark, frames):
    events, products = frames
    sel = select_events(events, AS_OF)
    vocab = build_vocab(sel, products, top_k={"sku": 2})
    first = FIRST_TOKEN_ID
    assert vocab.maps["sku"] == {10: first, 11: first + 1}  # 2 events each, tie by raw value; 12 and 13 cut (OOV)
    assert vocab.freqs["sku"] == {10: 2, 11: 2}
    assert vocab.maps["category"] == {100: first, 200: first + 1}  # 100: skus 10 and 11 (4 events), 200: sku 12
    assert vocab.maps["price"] == {5: first, 6: first + 1} and vocab.freqs["price"] == {5: 3, 6: 2}
    assert vocab.maps["url"] == {7: first, 8: first + 1} and vocab.freqs["url"] == {7: 2, 8: 1}
    assert vocab.maps["query"] == {5: first, 6: first + 1} and vocab.freqs["query"] == {5: 8, 6: 8}
    assert vocab.maps["event_type"] == {c: c + first for c in EVENT_TYPE_CODE.values()}  # all five, always
    assert vocab.freqs["event_type"] == {0: 4, 1: 1, 2: 1, 3: 3, 4: 1}
    assert vocab.maps["day"] == {DAY0 + i: first + i for i in range(8)}  # 01-02 .. 01-09, the quiet days too
    assert vocab.freqs["day"][DAY0 + 5] == 0 and (vocab.first_day, vocab.last_day) == (DAY0, DAY0 + 7)
    assert vocab.maps["week"] == {0: first, 1: first + 1} and vocab.freqs["week"] == {0: 9, 1: 1}
    assert build_vocab(sel, products, top_k={"sku": 2}).version == vocab.version  # deterministic
    assert build_vocab(sel, products).maps["sku"] == {10: first, 11: first + 1, 12: first + 2, 13: first + 3}

    rows = vocab_frame(spark, vocab, AS_OF).collect()
    assert [f.name for f in VOCABULARIES.columns] == list(rows[0].asDict())
    assert len(rows) == sum(len(vocab.maps[f]) for f in ALL_FIELDS)
    assert {r["version"] for r in rows} == {vocab.version}
    got = {(r["field"], r["raw_value"]): (r["token_id"], r["frequency"]) for r in rows}
    assert got[("sku", 11)] == (first + 1, 2) and got[("day", DAY0 + 5)] == (first + 5, 0)
