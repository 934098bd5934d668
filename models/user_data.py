"""User sequences as model batches, streamed from Arrow record batches (the silver `user_sequences` table).

A `SequenceChunk` holds a few thousand users as flat Arrow buffers (values + offsets per field, never one Python
object per event). `SequenceChunk.collate(idx)` builds a fresh padded batch `BOS e1 .. en EOS` for the chosen
users with vectorised numpy (nothing is mutated, so a dataset item is the same however often it is read).
`stream_batches` reads a table chunk by chunk, keeps one side of the user-level train/val split (stable hash of
client_id), and groups users of similar length into a batch (length bucketing: little padding, and the GRUs run
packed anyway), so memory is bounded by the chunk size, not by the number of users.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ubp.tables import BOS_ID, EOS_ID, FIRST_TOKEN_ID, PAD_ID, PRODUCT_CODES, QUERY_CODES, SEARCH_CODE

TOKEN_FIELDS: tuple[str, ...] = ("event_type", "sku", "category", "price", "url", "day", "week")
# fields of 16 codes per event, stored only for the events that carry them: query (searches), name (product events)
CODE_FIELDS: tuple[str, ...] = ("query", "name")
SEARCH_TOKEN = SEARCH_CODE + FIRST_TOKEN_ID
PRODUCT_TOKENS = np.array(PRODUCT_CODES) + FIRST_TOKEN_ID
EVENT_FILTERS: tuple[str, ...] = ("all", "product")  # which events a sequence keeps (before the max_len cut)
Batch = dict[str, torch.Tensor]


def columns_for(fields: Iterable[str]) -> list[str]:
    """Table columns needed to build batches with these fields."""
    fields = set(fields) | {"event_type"}  # event_type lines the fields up (and places the sparse codes)
    return ["client_id", "n_events", *[f for f in (*TOKEN_FIELDS, *CODE_FIELDS) if f in fields]]


# ---------------------------------------------------------------------------------------------------------------
# train/val split
# ---------------------------------------------------------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def is_val_user(client_ids: np.ndarray, val_fraction: float, salt: int = 0) -> np.ndarray:
    """Stable user-level split: a user is in validation iff hash(client_id, salt) falls below `val_fraction`.
    The same user is always on the same side, whatever the chunking, ordering or number of workers."""
    h = _splitmix64(np.asarray(client_ids, dtype=np.int64).view(np.uint64) ^ np.uint64(salt))
    return (h % np.uint64(1_000_000)).astype(np.int64) < int(round(val_fraction * 1_000_000))


SAMPLE_SALT = 0x5A3D1E  # independent of the train/val split (salt 0)


def in_sample(client_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Stable user sample for training at scale: the same users whatever the chunking, on every epoch and run,
    drawn independently of the train/val split (so the sample keeps its validation share)."""
    if fraction >= 1.0:
        return np.ones(len(client_ids), dtype=bool)
    return is_val_user(client_ids, fraction, salt=SAMPLE_SALT)


# ---------------------------------------------------------------------------------------------------------------
# chunks and collation
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequenceChunk:
    """Users of one Arrow batch. `values[f]` is the flat token array of field f, one token per event (16 per event
    for the code fields "query" / "name", PAD where the event has none). Rows with no events are dropped on
    construction; `events="product"` keeps only the product events (before the newest max_len - 2 are kept)."""

    client_id: np.ndarray  # [U] int64
    n_events: np.ndarray  # [U] int64
    lengths: np.ndarray  # [U] kept events (after truncation to max_len - 2), > 0
    starts: np.ndarray  # [U] first kept event index into the per-event arrays
    values: dict[str, np.ndarray]

    @classmethod
    def from_arrow(cls, batch: pa.RecordBatch | pa.Table, fields: Iterable[str], max_len: int = 128,
                   events: str = "all") -> SequenceChunk:
        if events not in EVENT_FILTERS:
            raise ValueError(f"events must be one of {EVENT_FILTERS}, not {events!r}")
        fields = [f for f in (*TOKEN_FIELDS, *CODE_FIELDS) if f in set(fields)]
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
        if batch is None or batch.num_rows == 0:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, empty, {f: np.zeros(0, np.int64) for f in fields})
        client_id = batch.column("client_id").to_numpy(zero_copy_only=False).astype(np.int64)
        n_events = (batch.column("n_events").to_numpy(zero_copy_only=False).astype(np.int64)
                    if "n_events" in batch.schema.names else np.zeros(len(client_id), np.int64))
        ref = batch.column("event_type")
        offsets = ref.offsets.to_numpy().astype(np.int64)  # [U+1]
        event_types = ref.values.to_numpy(zero_copy_only=False)  # [events] (the whole buffer the rows index)
        values: dict[str, np.ndarray] = {}
        for f in fields:
            col = batch.column(f)
            if f in CODE_FIELDS:
                carriers = np.isin(event_types, [SEARCH_TOKEN] if f == "query" else PRODUCT_TOKENS)
                values[f] = _dense_codes(f, col, carriers, offsets)
                continue
            if not np.array_equal(col.offsets.to_numpy().astype(np.int64), offsets):
                raise ValueError(f"user_sequences column {f!r} does not line up with event_type "
                                 "(one token per event expected)")
            values[f] = col.values.to_numpy(zero_copy_only=False).astype(np.int64)
        if events == "product":  # compact every per-event array to the product events
            lo, hi = int(offsets[0]), int(offsets[-1])
            kept = np.zeros(hi, dtype=bool)  # [events the rows reach]
            kept[lo:] = np.isin(event_types[lo:hi], PRODUCT_TOKENS)
            offsets = np.concatenate([[0], np.cumsum(kept)])[offsets]  # [U+1] into the compacted arrays
            values = {f: v.reshape(-1, QUERY_CODES if f in CODE_FIELDS else 1)[:hi][kept].reshape(-1)
                      for f, v in values.items()}
        full_len = np.diff(offsets)
        keep_len = np.minimum(full_len, max_len - 2)  # keep the newest events
        starts = offsets[:-1] + (full_len - keep_len)
        nonempty = keep_len > 0
        return cls(client_id[nonempty], n_events[nonempty], keep_len[nonempty], starts[nonempty], values)

    def __len__(self) -> int:
        return len(self.client_id)

    def collate(self, idx: np.ndarray | list[int]) -> Batch:
        """A padded batch for users `idx`: each field [B, T] (T = longest + 2) with BOS at 0 and EOS after the last
        event (event_type only; other fields PAD there), "query" / "name" [B, T, 16], "lengths" [B], "client_id"
        [B]."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths[idx]
        B, T = len(idx), int(lens.max()) + 2 if len(idx) else 2
        total = int(lens.sum())
        rows = np.repeat(np.arange(B), lens)  # [total]
        within = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)  # [total] 0..len-1 per user
        src = np.repeat(self.starts[idx], lens) + within  # [total] index into per-event arrays
        cols = within + 1  # after BOS
        out: Batch = {}
        for f, vals in self.values.items():
            if f in CODE_FIELDS:
                grid = np.zeros((B, T, QUERY_CODES), dtype=np.int64)
                grid[rows, cols] = vals.reshape(-1, QUERY_CODES)[src]  # [total, 16]
            else:
                grid = np.zeros((B, T), dtype=np.int64)
                grid[rows, cols] = vals[src]
                if f == "event_type":
                    grid[:, 0] = BOS_ID
                    grid[np.arange(B), lens + 1] = EOS_ID
            out[f] = torch.from_numpy(grid)
        out["lengths"] = torch.from_numpy(lens + 2)
        out["client_id"] = torch.from_numpy(self.client_id[idx].copy())
        return out

    def select(self, mask: np.ndarray) -> SequenceChunk:
        """The users where `mask` is true, holding only their kept events: a chunk that kept views of the whole
        Arrow batch's event arrays would, with a small sample, pin every batch of a pass until its buffer fills."""
        lens, starts = self.lengths[mask], self.starts[mask]
        total = int(lens.sum())
        first = np.cumsum(lens) - lens  # [U'] each user's first event in the compacted arrays
        src = np.repeat(starts - first, lens) + np.arange(total)  # [total] index into the old per-event arrays
        values = {f: (v.reshape(-1, QUERY_CODES)[src].reshape(-1) if f in CODE_FIELDS else v[src])
                  for f, v in self.values.items()}
        return SequenceChunk(self.client_id[mask], self.n_events[mask], lens, first, values)


def _dense_codes(name: str, col: pa.ListArray, carriers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A sparse code column of the contract (16 codes per carrier event only: searches for "query", product events
    for "name") -> 16 codes per event, PAD elsewhere: flat [events * 16], indexed like the event_type values.

    An all-null column (a table built before the column existed; the reader fills it with nulls) gives PAD
    everywhere. Refuses a column that does not hold 16 codes per carrier event (e.g. a table written before the
    sparse query layout: rebuild it with `ubp sequences`)."""
    dense = np.full((len(carriers), QUERY_CODES), PAD_ID, dtype=np.int64)  # [events, 16]
    if col.null_count == len(col):
        return dense.reshape(-1)
    code_offsets = col.offsets.to_numpy().astype(np.int64)  # [U+1]
    codes = col.values.to_numpy(zero_copy_only=False).astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])  # the events the rows reference
    mask = np.zeros(len(carriers), dtype=bool)  # [events]
    mask[lo:hi] = carriers[lo:hi]
    n_before = np.concatenate([[0], np.cumsum(mask)])[offsets]  # [U+1] carrier events before each row
    if not np.array_equal(code_offsets - code_offsets[0], (n_before - n_before[0]) * QUERY_CODES):
        raise ValueError(f"user_sequences column {name!r} does not line up with event_type (16 codes per "
                         f"{'search' if name == 'query' else 'product'} event expected; a table from before this "
                         "layout needs `ubp sequences` again)")
    dense[mask] = codes[int(code_offsets[0]):int(code_offsets[-1])].reshape(-1, QUERY_CODES)  # [carriers, 16]
    return dense.reshape(-1)  # [events * 16]


class UserSequenceDataset(torch.utils.data.Dataset):
    """Map-style view of one chunk: item i is user i's own batch of one (fresh tensors; nothing is mutated)."""

    def __init__(self, chunk: SequenceChunk) -> None:
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.chunk)

    def __getitem__(self, i: int) -> Batch:
        return self.chunk.collate([i])


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   max_tokens: int | None = None) -> list[np.ndarray]:
    """Group indices of similar length: sort by length (random tie-break), cut into batches of `batch_size` users
    (fewer if `max_tokens` padded tokens would be exceeded), shuffle the batch order."""
    n = len(lengths)
    if n == 0:
        return []
    tie = rng.random(n) if rng is not None else np.arange(n)
    order = np.lexsort((tie, lengths))
    batches: list[np.ndarray] = []
    start = 0
    while start < n:
        end = min(start + batch_size, n)
        if max_tokens:
            while end - start > 1 and int(lengths[order[end - 1]] + 2) * (end - start) > max_tokens:
                end -= 1
        batches.append(order[start:end])
        start = end
    if rng is not None:
        rng.shuffle(batches)
    return batches


def stream_batches(
    read: Callable[[], Iterator[pa.RecordBatch]],
    fields: Iterable[str],
    batch_size: int = 256,
    max_len: int = 128,
    split: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    max_tokens: int | None = None,
    buffer_users: int = 16384,
    even: bool = False,
    sample_fraction: float = 1.0,
    events: str = "all",
) -> Iterator[Batch]:
    """Batches over one pass of `read()` (a fresh Arrow batch iterator), bucketed by length within a buffer of
    `buffer_users`. `split`: "train" / "val" / None (all). `sample_fraction` < 1 keeps only that stable share of
    users (`in_sample`), for training on a sample at scale. `events="product"`: product events only (see
    `SequenceChunk`).

    Under DDP every rank reads the same stream with the same seed, so all ranks build the same batch sequence; rank r
    collates only batches k with k % world_size == r (disjoint shards of users). `even=True` (training) yields a
    rank's batch only once the whole round of world_size batches exists and drops an incomplete last round (like
    DistributedSampler's drop_last), so every rank takes the same number of steps: with uneven counts the ranks
    that finish early would leave the others waiting forever in the last gradient all-reduce."""
    rng = np.random.default_rng(seed) if shuffle else None
    fields = list(fields)
    pending: list[SequenceChunk] = []
    n_pending = 0
    k = 0
    mine: tuple[SequenceChunk, np.ndarray] | None = None  # this rank's batch of the current round (even=True)

    def flush(chunks: list[SequenceChunk]) -> Iterator[Batch]:
        nonlocal k, mine
        for chunk in chunks:
            for idx in bucket_batches(chunk.lengths, batch_size, rng, max_tokens):
                own = k % world_size == rank
                k += 1
                if not even:
                    if own:
                        yield chunk.collate(idx)
                    continue
                if own:
                    mine = (chunk, idx)
                if k % world_size == 0 and mine is not None:  # round complete: every rank has its batch
                    c, i = mine
                    mine = None
                    yield c.collate(i)

    for rb in read():
        chunk = SequenceChunk.from_arrow(rb, fields, max_len, events)
        if sample_fraction < 1.0 and len(chunk):
            chunk = chunk.select(in_sample(chunk.client_id, sample_fraction))
        if split is not None and len(chunk):
            val = is_val_user(chunk.client_id, val_fraction, salt=0)
            chunk = chunk.select(val if split == "val" else ~val)
        if not len(chunk):
            continue
        pending.append(chunk)
        n_pending += len(chunk)
        if n_pending >= buffer_users:
            yield from flush([_concat(pending)])
            pending, n_pending = [], 0
    if pending:
        yield from flush([_concat(pending)])


def _concat(chunks: list[SequenceChunk]) -> SequenceChunk:
    if len(chunks) == 1:
        return chunks[0]
    starts, values = [], {f: [] for f in chunks[0].values}
    offset = 0
    for c in chunks:
        starts.append(c.starts + offset)
        n_ev = len(c.values["event_type"])
        for f, v in c.values.items():
            values[f].append(v)
        offset += n_ev
    return SequenceChunk(
        np.concatenate([c.client_id for c in chunks]), np.concatenate([c.n_events for c in chunks]),
        np.concatenate([c.lengths for c in chunks]), np.concatenate(starts),
        {f: np.concatenate(v) for f, v in values.items()},
    )


def prefetch(it: Iterator[Batch], depth: int = 2) -> Iterator[Batch]:
    """Build the next batches in a background thread while the model steps (numpy/arrow release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # surfaced in the consumer
            q.put(exc)
            return
        q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # consumer stopped early (max_batches, error): unblock the producer so it sees `stop` and exits
        stop.set()
        while not q.empty():
            q.get_nowait()
