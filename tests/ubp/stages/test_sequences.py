"""user_sequences + vocabularies on tiny hand-made bronze tables."""

from __future__ import annotations

import pytest
from sequences_fixtures import event, read_table, ts, write_bronze

from ubp import reader
from ubp.errors import UbpError
from ubp.tables import FIRST_TOKEN_ID, OOV_ID, PAD_ID

Q = list(range(16))
EVENTS = [
    # user 1: all five types, inserted out of order; the visit and the add share a timestamp (tie -> type code)
    event("product_buy", 1, "2024-01-03 12:00:00", sku=10),
    event("page_visit", 1, "2024-01-01 10:00:00", url=100),
    event("search_query", 1, "2024-01-02 08:00:00", query=Q),
    event("add_to_cart", 1, "2024-01-01 10:00:00", sku=10),
    event("remove_from_cart", 1, "2024-01-02 09:00:00", sku=11),
    # user 2: five visits -> truncation keeps the newest max_len
    *[event("page_visit", 2, f"2024-01-0{d} 10:00:00", url=100 + d) for d in range(1, 6)],
    # user 3: sku 12 is not in the catalog; the buy on 01-20 is after the as-of
    event("add_to_cart", 3, "2024-01-04 10:00:00", sku=12),
    event("product_buy", 3, "2024-01-20 10:00:00", sku=10),
    # user 4: only events after the as-of -> no row
    event("page_visit", 4, "2024-01-21 10:00:00", url=101),
]
PRODUCTS = [(10, 500, 7), (11, 501, 8)]
AS_OF = ts("2024-01-10 00:00:00")


def test_sequence_ordering_truncation_asof_and_oov(spark, settings):
    from ubp.stages.sequences import sequences

    write_bronze(spark, settings, EVENTS, PRODUCTS)
    res = sequences(settings, as_of=AS_OF, max_len=3, top_k={"sku": 1, "url": 2})
    assert res["rows"]["user_sequences"] == 3
    rows = read_table(spark, settings, "user_sequences")
    assert set(rows) == {1, 2, 3}  # user 4 only has events after the as-of

    vocab = reader.read_vocab(settings, res["vocab_version"])
    et = vocab["event_type"]
    assert et == {c: c + FIRST_TOKEN_ID for c in range(5)}
    # sku 10 (3 product events before as-of) beats 11 and 12 (1 each); top_k=1 -> 11, 12 are OOV
    assert vocab["sku"] == {10: FIRST_TOKEN_ID}
    sku10 = vocab["sku"][10]

    u1 = rows[1]
    assert u1["n_events"] == 5 and u1["seq_len"] == 3
    # chronological: add(0) before visit(3) at the same second, then search, remove, buy -> newest 3 kept
    assert u1["event_type"] == [et[4], et[1], et[2]]
    assert u1["sku"] == [PAD_ID, OOV_ID, sku10]
    assert u1["sku_raw"] == [-1, 11, 10]
    assert u1["url"] == [PAD_ID, PAD_ID, PAD_ID]
    # sparse query layout: 16 codes for the one kept search event, none for the other two
    assert u1["query"] == [vocab["query"][q] for q in Q]
    assert u1["category"] == [PAD_ID, vocab["category"][501], vocab["category"][500]]
    assert u1["price"] == [PAD_ID, vocab["price"][8], vocab["price"][7]]
    assert u1["ts"] == [int(ts(s).timestamp()) for s in ("2024-01-02 08:00:00", "2024-01-02 09:00:00",
                                                         "2024-01-03 12:00:00")]
    # day index since the first date in the data (2024-01-01)
    assert u1["day"] == [FIRST_TOKEN_ID + 1, FIRST_TOKEN_ID + 1, FIRST_TOKEN_ID + 2]
    assert u1["week"] == [FIRST_TOKEN_ID] * 3
    assert u1["first_ts"].replace(tzinfo=None) == ts("2024-01-01 10:00:00").replace(tzinfo=None)
    assert u1["last_ts"].replace(tzinfo=None) == ts("2024-01-03 12:00:00").replace(tzinfo=None)

    u2 = rows[2]
    assert u2["n_events"] == 5 and u2["seq_len"] == 3
    assert [r for r in u2["sku_raw"]] == [-1, -1, -1]
    assert u2["query"] == []  # no searches
    assert u2["day"] == [FIRST_TOKEN_ID + 2, FIRST_TOKEN_ID + 3, FIRST_TOKEN_ID + 4]  # the newest three days
    # url top_k=2 over visits before as-of: 101 (u2) and 100 (u1) tie with 102..105 at 1 visit -> smallest raw wins
    assert vocab["url"] == {100: FIRST_TOKEN_ID, 101: FIRST_TOKEN_ID + 1}
    assert u2["url"] == [OOV_ID] * 3

    u3 = rows[3]
    assert u3["n_events"] == 1  # the 01-20 buy is after the as-of
    assert u3["sku"] == [OOV_ID] and u3["category"] == [OOV_ID] and u3["price"] == [OOV_ID]
    assert u3["sku_raw"] == [12]

    # same as-of -> identical table; the vocabulary (and its version) is reused and recorded
    sequences(settings, as_of=AS_OF, max_len=3, top_k={"sku": 1, "url": 2})
    assert read_table(spark, settings, "user_sequences") == rows
    assert reader.sequences_vocab_version(settings) == res["vocab_version"]
    assert reader.table_properties(settings.table_path("user_sequences"))["ubp.as_of"] == AS_OF.isoformat()
    sizes = reader.vocab_sizes(settings, res["vocab_version"])
    assert sizes["sku"] == FIRST_TOKEN_ID + 1 and sizes["event_type"] == FIRST_TOKEN_ID + 5
    assert sizes["day"] == FIRST_TOKEN_ID + 5  # 2024-01-01 .. 2024-01-05, the days before the as-of


@pytest.mark.slow
def test_default_as_of_incremental_and_vocab_check(spark, settings):
    from ubp.errors import UbpError
    from ubp.stages.sequences import sequences

    first = [e for e in EVENTS if e[3] < AS_OF]
    write_bronze(spark, settings, first, PRODUCTS)
    full = sequences(settings)  # default as-of: latest event + 1 s
    assert full["as_of"] == "2024-01-05T10:00:01+00:00"
    before = read_table(spark, settings, "user_sequences")
    assert set(before) == {1, 2, 3}

    # later events for users 3 and 4 arrive
    later = [e for e in EVENTS if e[3] >= AS_OF]
    write_bronze(spark, settings, later, None, mode="append")
    inc = sequences(settings, incremental=True)
    assert inc["incremental"] and inc["vocab_version"] == full["vocab_version"]
    assert inc["merge"]["numTargetRowsUpdated"] == 1 and inc["merge"]["numTargetRowsInserted"] == 1
    after = read_table(spark, settings, "user_sequences")
    assert set(after) == {1, 2, 3, 4}
    for cid in (1, 2):  # untouched users: identical rows, old as-of included
        assert after[cid] == before[cid]
    assert after[3]["n_events"] == 2 and after[3]["sku_raw"] == [12, 10]
    assert after[3]["as_of"] != before[3]["as_of"]
    # days after the vocabulary's last day are OOV until the vocabulary is refreshed
    assert after[3]["day"][-1] == OOV_ID and after[4]["day"] == [OOV_ID]

    # a full rebuild with the same vocabulary gives the same rows for the rebuilt users
    sequences(settings)
    rebuilt = read_table(spark, settings, "user_sequences")
    assert rebuilt[3] == after[3] and rebuilt[4] == after[4]

    # a refreshed vocabulary gets a new version; a model trained on the old one is refused
    fresh = sequences(settings, refresh_vocab=True)
    assert fresh["vocab_version"] != full["vocab_version"]
    table_version = reader.sequences_vocab_version(settings)
    assert table_version == fresh["vocab_version"]
    with pytest.raises(UbpError, match=f"model trained on vocabulary {full['vocab_version']}, table uses "
                                       f"{fresh['vocab_version']}"):
        reader.check_vocab_version(full["vocab_version"], table_version)
    assert read_table(spark, settings, "user_sequences")[4]["day"] != [OOV_ID]
    with pytest.raises(UbpError, match="as-of"):
        sequences(settings, as_of=ts("2024-01-02 00:00:00"), incremental=True)


def test_missing_bronze_is_a_clear_error(settings):
    from ubp.errors import UbpError
    from ubp.stages.aggregates import aggregates
    from ubp.stages.sequences import sequences

    with pytest.raises(UbpError, match="no events table"):
        sequences(settings)
    with pytest.raises(UbpError, match="no events table"):
        aggregates(settings)


def test_sparse_query_codes_follow_the_kept_searches_into_model_batches(spark, settings):
    """Only search events carry query codes (16 each); truncation drops a search's codes with it; a search without
    a query keeps 16 PAD codes; the model's reader expands them back to [B, T, 16] lined up with the events."""
    from ubp.models.user_data import SequenceChunk

    from ubp.stages.sequences import sequences

    rev = Q[::-1]
    events = [
        event("search_query", 7, "2024-01-01 09:00:00", query=[15] * 16),  # dropped by max_len
        event("search_query", 7, "2024-01-02 09:00:00"),  # no query: 16 PAD codes
        event("page_visit", 7, "2024-01-02 10:00:00", url=100),
        event("search_query", 7, "2024-01-03 09:00:00", query=rev),
        event("add_to_cart", 7, "2024-01-04 09:00:00", sku=10),
    ]
    write_bronze(spark, settings, events, PRODUCTS)
    res = sequences(settings, as_of=AS_OF, max_len=4)
    vocab = reader.read_vocab(settings, res["vocab_version"])
    row = read_table(spark, settings, "user_sequences")[7]
    codes = [vocab["query"][q] for q in rev]
    assert row["seq_len"] == 4 and row["query"] == [PAD_ID] * 16 + codes

    (batch,) = reader.iter_batches(settings.table_path("user_sequences"), columns=["client_id", "event_type", "query"])
    chunk = SequenceChunk.from_arrow(batch, fields=("event_type", "query"), max_len=128)
    grid = chunk.collate([0])["query"][0].tolist()  # [T, 16]: BOS, 4 events, EOS
    assert grid[1] == [PAD_ID] * 16 and grid[2] == [PAD_ID] * 16  # the query-less search, the visit
    assert grid[3] == codes and grid[4] == [PAD_ID] * 16  # the search, the add
    assert grid[0] == grid[5] == [PAD_ID] * 16  # BOS, EOS


def test_as_of_filter_is_left_out_only_when_the_pinned_log_proves_every_event_is_before(spark, settings):
    """The stage reads the events at one pinned version; the as-of filter is dropped only when that version's log
    statistics (millisecond-truncated) prove every event is before the as-of."""
    from datetime import timedelta

    from ubp.stages.sequences import _bronze, resolve_as_of, sequences

    late = event("page_visit", 9, "2024-01-05 10:00:00", url=100)
    t = late[3].replace(microsecond=500)
    write_bronze(spark, settings, [(*late[:3], t, *late[4:]), event("page_visit", 9, "2024-01-04 10:00:00", url=101)],
                 PRODUCTS)
    events, _, version = _bronze(spark, settings)
    path = settings.table_path("events")
    as_of, _, all_before = resolve_as_of(events, None, path, version)
    assert as_of == ts("2024-01-05 10:00:01") and all_before
    assert not resolve_as_of(events, t + timedelta(microseconds=100), path, version)[2]  # the stat says 10:00:00.000
    assert resolve_as_of(events, ts("2024-01-05 10:00:00") + timedelta(milliseconds=1), path, version)[2]

    # an append after the stage pinned its version does not move that version's as-of
    write_bronze(spark, settings, [event("page_visit", 9, "2024-01-06 10:00:00", url=100)], None, mode="append")
    assert resolve_as_of(events, None, path, version)[0] == ts("2024-01-05 10:00:01")

    # at the latest event itself the filter stays and excludes it (strictly before)
    sequences(settings, as_of=ts("2024-01-05 10:00:00"))
    assert read_table(spark, settings, "user_sequences")[9]["n_events"] == 1


def test_an_as_of_before_every_event_commits_an_empty_table(spark, settings):
    """No event before the as-of: the tasks write no file and the commit removes the previous rows (an empty
    table, not the old one)."""
    from ubp.stages.sequences import sequences

    write_bronze(spark, settings, EVENTS, PRODUCTS)
    assert sequences(settings, as_of=AS_OF, max_len=3)["rows"]["user_sequences"] == 3
    res = sequences(settings, as_of=ts("2023-12-31 00:00:00"), max_len=3)
    assert res["writer"] == "arrow" and res["rows"]["user_sequences"] == 0
    assert read_table(spark, settings, "user_sequences") == {}


def test_a_table_with_constraints_is_written_through_sparks_delta_writer(spark, settings):
    """The build commits its own Parquet files only when the table asks nothing more of a writer; with a CHECK
    constraint on it, the same rows go through Spark's Delta writer (which enforces the constraint)."""
    from ubp.stages.sequences import sequences

    write_bronze(spark, settings, EVENTS, PRODUCTS)
    first = sequences(settings, as_of=AS_OF, max_len=3)
    assert first["writer"] == "arrow"
    rows = read_table(spark, settings, "user_sequences")
    path = settings.table_path("user_sequences")
    spark.sql(f"ALTER TABLE delta.`{path}` ADD CONSTRAINT has_events CHECK (n_events > 0)")
    again = sequences(settings, as_of=AS_OF, max_len=3)
    assert again["writer"] == "spark" and again["rows"]["user_sequences"] == 3
    assert read_table(spark, settings, "user_sequences") == rows


def test_bronze_is_read_over_exactly_the_files_of_the_pinned_version(spark, settings):
    """`_bronze` scans the data files the pinned version's log lists (no Delta snapshot jobs): rows deleted before
    stay deleted although their old files are still on disk, later commits are not seen, and a table with deletion
    vectors falls back to Delta's own reader (the log's file list alone would resurrect soft-deleted rows)."""
    from delta.tables import DeltaTable

    from ubp.stages.sequences import _bronze

    write_bronze(spark, settings, EVENTS, PRODUCTS)
    path = settings.table_path("events")
    DeltaTable.forPath(spark, str(path)).delete("client_id = 2")  # rewrites files: the old ones stay on disk
    on_disk = len(list(path.rglob("*.parquet")))
    events, products, version = _bronze(spark, settings)
    assert on_disk > len(reader._open(path, version).file_uris())  # a directory glob would read deleted rows
    assert "event_date" not in events.columns  # partition columns are left out
    assert products.count() == len(PRODUCTS)
    assert sorted(r.client_id for r in events.select("client_id").distinct().collect()) == [1, 3, 4]
    assert events.count() == len(EVENTS) - 5

    write_bronze(spark, settings, [event("page_visit", 7, "2024-01-06 10:00:00", url=100)], None, mode="append")
    assert events.count() == len(EVENTS) - 5  # pinned: the append after it is not read

    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    DeltaTable.forPath(spark, str(path)).delete("client_id = 3")
    events, _, _ = _bronze(spark, settings)
    assert "event_date" in events.columns  # Delta's own reader (it keeps the partition columns)
    assert sorted(r.client_id for r in events.select("client_id").distinct().collect()) == [1, 4, 7]


def test_product_events_carry_their_products_name_codes_and_an_old_table_gains_the_column(spark, settings):
    """Name codes come from `products` by sku (token = code + FIRST_TOKEN_ID), 16 per product event; a sku with no
    name, or missing from the catalog, gets 16 PAD; other events none. A table built before the column cannot train
    `sku_text` (a clear error) and gains the column on the next full build."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from ubp.models.user_data import SequenceChunk

    from ubp.stages.sequences import sequences
    from ubp.stages.train_user_model import train_user_model

    events = [
        event("add_to_cart", 7, "2024-01-01 09:00:00", sku=10),
        event("page_visit", 7, "2024-01-02 10:00:00", url=100),
        event("search_query", 7, "2024-01-03 09:00:00", query=Q),
        event("remove_from_cart", 7, "2024-01-04 09:00:00", sku=11),  # no name in the catalog
        event("product_buy", 7, "2024-01-05 09:00:00", sku=12),  # not in the catalog
    ]
    write_bronze(spark, settings, events, [(10, 500, 7, Q[::-1]), (11, 501, 8, None)])
    sequences(settings, as_of=AS_OF, max_len=8)
    named = [c + FIRST_TOKEN_ID for c in Q[::-1]]
    assert read_table(spark, settings, "user_sequences")[7]["name"] == named + [PAD_ID] * 32

    path = settings.table_path("user_sequences")
    old = pa.Table.from_batches(list(reader.iter_batches(path))).drop_columns(["name"])
    write_deltalake(str(path), old, mode="overwrite", schema_mode="overwrite")  # as built before the column
    with pytest.raises(UbpError, match="has no column name .* rebuild it with `ubp sequences`"):
        train_user_model(settings, member="sku_text", max_epochs=1, show_progress=False)
    assert sequences(settings, as_of=AS_OF, max_len=8)["writer"] == "arrow"  # a full build adds the column
    (batch,) = reader.iter_batches(path, columns=["client_id", "event_type", "name"])
    grid = SequenceChunk.from_arrow(batch, ("event_type", "name"), events="product").collate([0])["name"][0]
    assert grid[1].tolist() == named and (grid[2:] == PAD_ID).all()  # BOS, add, remove, buy, EOS
