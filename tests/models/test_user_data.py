"""Batches of the user model (`models/user_data.py`): collate purity, BOS/EOS, truncation, the stable validation
split, length bucketing, the even shards of `stream_batches` for any world size, and the name codes of product
events (placement, the product-events-only filter, tables without the column)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from ubp.models.user_data import SequenceChunk, bucket_batches, is_val_user, stream_batches
from user_model_fixtures import make_chunk, make_sequences, one_torch_thread  # noqa: F401  (autouse fixture)

from ubp.tables import BOS_ID, EOS_ID, EVENT_TYPE_CODE, EVENT_TYPES, FIRST_TOKEN_ID, PAD_ID


def test_collate_is_pure_and_adds_bos_eos():
    chunk = make_chunk(6, seed=2, min_len=3, max_len=9)
    a, b = chunk.collate([0, 1, 2]), chunk.collate([0, 1, 2])
    for k in a:
        assert torch.equal(a[k], b[k])
    a["event_type"][0, 1] = 99  # a consumer mutating its batch does not leak into the dataset
    assert not torch.equal(a["event_type"], chunk.collate([0, 1, 2])["event_type"])
    et, n = b["event_type"], b["lengths"]
    assert (et[:, 0] == BOS_ID).all()
    for i in range(3):
        assert et[i, n[i] - 1] == EOS_ID
        assert (et[i, n[i]:] == PAD_ID).all()
    assert b["query"].shape[-1] == 16


def test_truncation_keeps_newest_events():
    table = make_sequences(3, seed=5, min_len=20, max_len=20)
    chunk = SequenceChunk.from_arrow(table, ["event_type", "day"], max_len=10)
    assert (chunk.lengths == 8).all()
    b = chunk.collate([0])
    assert b["day"][0, 1:9].tolist() == table.column("day")[0].as_py()[-8:]


def test_split_is_stable_and_bucketing_groups_lengths():
    ids = np.arange(10_000, dtype=np.int64)
    val = is_val_user(ids, 0.1)
    assert 0.08 < val.mean() < 0.12
    assert np.array_equal(val[::-1], is_val_user(ids[::-1], 0.1))
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    batches = bucket_batches(lengths, 50, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # vs ~95 for random batches
    table = make_sequences(60, seed=1)
    train = [int(c) for b in stream_batches(lambda: iter(table.to_batches()), ["event_type"], 8, split="train")
             for c in b["client_id"]]
    val_ids = [int(c) for b in stream_batches(lambda: iter(table.to_batches()), ["event_type"], 8, split="val")
               for c in b["client_id"]]
    assert not set(train) & set(val_ids) and len(train) + len(val_ids) == 60


def test_stream_batches_even_shards_for_any_world_size():
    """The sharding itself, without processes: for world sizes 1..4, ranks get disjoint users, exactly the same
    number of batches (even=True), and together the batches of all complete rounds of the single-process order."""
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.user_data import stream_batches

    table = make_sequences(61, seed=5, min_len=1, max_len=10)
    fields = GRUAEConfig().input_fields

    def read():  # two Arrow batches and a small buffer: rounds span buffer flushes
        return iter(table.to_batches(max_chunksize=40))

    def run(rank: int, world: int, even: bool) -> list[np.ndarray]:
        return [b["client_id"].numpy() for b in stream_batches(read, fields, batch_size=4, seed=7, rank=rank,
                                                               world_size=world, even=even, buffer_users=30)]

    ref = run(0, 1, False)
    assert all(np.array_equal(a, b) for a, b in zip(run(0, 1, True), ref, strict=True))
    for world in (2, 3, 4):
        shards = [run(r, world, True) for r in range(world)]
        rounds = len(ref) // world
        assert [len(s) for s in shards] == [rounds] * world
        for r, s in enumerate(shards):
            assert all(np.array_equal(a, b) for a, b in zip(s, ref[r: rounds * world: world], strict=True))
        ids = np.concatenate([np.concatenate(s) for s in shards])
        assert len(ids) == len(set(ids.tolist()))
        uneven = [len(run(r, world, False)) for r in range(world)]
        assert sum(uneven) == len(ref)  # without even=True every batch is used, counts may differ by one


def test_sample_fraction_keeps_a_stable_share_independent_of_the_split():
    """Training at scale reads a hashed sample of users: the same users whatever the chunking or order, about the
    requested share, and drawn independently of the train/val split (the sample keeps ~10% validation users)."""
    from ubp.models.user_data import in_sample

    ids = np.arange(200_000, dtype=np.int64)
    keep = in_sample(ids, 0.05)
    assert 0.045 < keep.mean() < 0.055
    assert np.array_equal(keep[::-1], in_sample(ids[::-1], 0.05))
    assert in_sample(ids, 1.0).all()
    assert 0.08 < is_val_user(ids[keep], 0.1).mean() < 0.12  # not the same hash as the split
    table = make_sequences(400, seed=3)

    def users(chunk: int, fraction: float) -> list[int]:
        return sorted(int(c) for b in stream_batches(lambda: iter(table.to_batches(max_chunksize=chunk)),
                                                     ["event_type"], 8, sample_fraction=fraction)
                      for c in b["client_id"])

    sampled = users(50, 0.25)
    assert sampled == users(400, 0.25)
    assert sampled == sorted(int(c) for c in table.column("client_id").to_numpy()[
        in_sample(table.column("client_id").to_numpy(), 0.25)])
    assert 60 < len(sampled) < 140 and len(users(400, 1.0)) == 400


def test_select_keeps_only_the_selected_users_events():
    """A sampled chunk must not pin its whole source batch: at 1M users a 0.5% sample kept every batch's event
    arrays alive until the 16k-user buffer filled, i.e. the whole table (the training driver grew with users)."""
    table = make_sequences(50, seed=7, min_len=3, max_len=30)
    fields = ["event_type", "day", "sku", "query"]
    chunk = SequenceChunk.from_arrow(table, fields, max_len=12)  # truncation: starts are not the list offsets
    mask = np.zeros(len(chunk), bool)
    mask[[3, 17, 18, 41]] = True
    small = chunk.select(mask)
    assert len(small.values["event_type"]) == int(chunk.lengths[mask].sum())
    assert len(small.values["query"]) == 16 * int(chunk.lengths[mask].sum())
    a, b = small.collate(np.arange(4)), chunk.collate(np.flatnonzero(mask))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(chunk.select(np.zeros(len(chunk), bool))) == 0


def _name_table(null_names: bool = False) -> pa.Table:
    """Three hand-made users: 7 = visit, add (name A), search, buy (name B), visit; 8 = search, remove (a sku with no
    name: 16 x PAD); 9 = a visit only. Name codes are stored for product events only, as the contract says."""
    add, remove, buy, visit, search = (FIRST_TOKEN_ID + EVENT_TYPE_CODE[t] for t in EVENT_TYPES)
    a, b, q = list(range(10, 26)), list(range(30, 46)), list(range(50, 66))
    names = [a + b, [PAD_ID] * 16, []]
    return pa.table({
        "client_id": pa.array([7, 8, 9], pa.int64()), "n_events": pa.array([5, 2, 1], pa.int64()),
        "event_type": pa.array([[visit, add, search, buy, visit], [search, remove], [visit]], pa.list_(pa.int32())),
        "query": pa.array([q, q, []], pa.list_(pa.int32())),
        "name": pa.array([None] * 3 if null_names else names, pa.list_(pa.int32())),
    })


def test_name_codes_sit_on_their_product_events():
    b = SequenceChunk.from_arrow(_name_table(), ["event_type", "name", "query"]).collate([0, 1])
    name, pad = b["name"], [PAD_ID] * 16
    assert name.shape == (2, 7, 16)  # BOS + 5 events + EOS
    assert [name[0, t].tolist() for t in range(7)] == [pad, pad, list(range(10, 26)), pad, list(range(30, 46)), pad,
                                                       pad]
    assert (name[1] == PAD_ID).all()  # the removed sku has no name
    assert b["query"][0, 3].tolist() == list(range(50, 66)) and b["query"][1, 1].tolist() == list(range(50, 66))


def test_product_events_only_then_the_newest_kept():
    fields = ["event_type", "name", "query"]
    chunk = SequenceChunk.from_arrow(_name_table(), fields, max_len=3, events="product")  # one event per user
    assert chunk.client_id.tolist() == [7, 8]  # user 9 has no product event
    b = chunk.collate([0, 1])
    buy, remove = FIRST_TOKEN_ID + EVENT_TYPE_CODE["product_buy"], FIRST_TOKEN_ID + EVENT_TYPE_CODE["remove_from_cart"]
    assert b["event_type"].tolist() == [[BOS_ID, buy, EOS_ID], [BOS_ID, remove, EOS_ID]]
    assert b["name"][0, 1].tolist() == list(range(30, 46)) and (b["query"] == PAD_ID).all()
    full = SequenceChunk.from_arrow(_name_table().slice(0, 2), fields, events="product")  # a sliced batch too
    assert full.lengths.tolist() == [2, 1]
    again = full.select(np.array([True, False])).collate([0])
    assert again["name"][0, 1].tolist() == list(range(10, 26)) and again["name"][0, 2].tolist() == list(range(30, 46))


def test_a_table_without_name_codes_reads_as_pad_and_a_misaligned_one_is_refused():
    chunk = SequenceChunk.from_arrow(_name_table(null_names=True), ["event_type", "name"], events="product")
    assert chunk.lengths.tolist() == [2, 1] and (chunk.collate([0, 1])["name"] == PAD_ID).all()
    bad = _name_table().set_column(4, "name", pa.array([list(range(16)), [], []], pa.list_(pa.int32())))
    with pytest.raises(ValueError, match="16 codes per product event"):
        SequenceChunk.from_arrow(bad, ["event_type", "name"])
    with pytest.raises(ValueError, match="events must be one of"):
        SequenceChunk.from_arrow(_name_table(), ["event_type"], events="buys")
