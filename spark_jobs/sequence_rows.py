"""The executor side of `ubp sequences`: a user-grouped stream of raw events -> `user_sequences` rows, in Arrow.

Spark shuffles the events by user and sorts them by user only (one radix sort on the id); the Python worker of each
task (`mapInArrow`) receives Arrow batches in which every user's events are contiguous and, per chunk of complete
users, vectorised with numpy:
1. tokenises (sorted vocabulary keys + `searchsorted`; event type, day and week by arithmetic),
2. orders each user's events by (timestamp, event-type code, sku, url, query tokens),
   (a product event's 16 name codes, joined from `products` by sku upstream, become tokens code + FIRST_TOKEN_ID),
3. keeps the newest `max_len` events per user, and
4. cuts the per-field list columns out of the flat arrays with one offsets array (no per-element work).
`write_files` then writes each task's rows with Arrow's C++ Parquet writer; the driver commits the files to Delta.

Why not Spark SQL all the way: `collect_list` of a per-event struct, `sort_array` (an interpreted struct
comparator), the per-field split and parquet-mr's list writer (a group per element) do per element what numpy and
Arrow do per column (timings: docs/benchmarks.md, "Sequences"). Memory stays bounded: a chunk is ~`chunk_rows` rows plus one user's
events.

No Spark import here: the module runs in Python workers and in unit tests without a JVM.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ubp.tables import (
    CODE_VALUES,
    FIRST_TOKEN_ID,
    OOV_ID,
    PAD_ID,
    PRODUCT_CODES,
    QUERY_CODES,
    SEARCH_CODE,
    USER_SEQUENCES,
    VISIT_CODE,
)

# What the worker receives per event (`spark_jobs.sequences.event_rows` selects exactly these; `name`, the product's
# 16 name codes, may be absent: then every product event gets 16 x PAD).
EVENT_COLUMNS: tuple[str, ...] = ("client_id", "ts_us", "etype", "sku", "url", "category", "price", "query", "name")
_DAY_US = 86_400_000_000
# Scalar columns whose min/max go into the Delta log (as Spark's Delta writer records them).
_STATS_COLUMNS = ("client_id", "as_of", "vocab_version", "n_events", "first_ts", "last_ts", "seq_len")


@dataclass(frozen=True)
class SequenceSpec:
    """Everything a worker needs to build rows: the vocabulary as sorted numpy lookups (small: bounded by top-K),
    the as-of, the length cut-off and the vocabulary version. Pickled into each task's closure."""

    as_of: datetime
    max_len: int
    vocab_version: str
    lookups: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)  # field -> (sorted raw keys, tokens)
    first_day: int = 0
    last_day: int = -1
    last_week: int = -1

    @classmethod
    def from_maps(cls, maps: Mapping[str, Mapping[int, int]], as_of: datetime, max_len: int,
                  vocab_version: str) -> SequenceSpec:
        """From `Vocab.maps` (raw value -> token per field)."""
        if max_len < 1:
            raise ValueError("max_len must be >= 1")
        lookups = {}
        for name in ("sku", "url", "category", "price", "query"):
            items = sorted((maps.get(name) or {}).items())
            lookups[name] = (np.array([k for k, _ in items], np.int64), np.array([v for _, v in items], np.int32))
        days, weeks = maps.get("day") or {}, maps.get("week") or {}
        return cls(as_of=as_of, max_len=max_len, vocab_version=vocab_version, lookups=lookups,
                   first_day=min(days) if days else 0, last_day=max(days) if days else -1,
                   last_week=max(weeks) if weeks else -1)


def _ints(col: pa.ChunkedArray | pa.Array, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, validity mask) of an integer column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.ones(len(arr), bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    values = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return values, valid


def _lookup(table: tuple[np.ndarray, np.ndarray], raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """raw -> token (OOV_ID when null or not in the vocabulary)."""
    keys, tokens = table
    if len(keys) == 0:
        return np.full(len(raw), OOV_ID, np.int32)
    pos = np.minimum(np.searchsorted(keys, raw), len(keys) - 1)
    return np.where(valid & (keys[pos] == raw), tokens[pos], OOV_ID).astype(np.int32)


def _name_lookup(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Name code -> token: code + FIRST_TOKEN_ID (a fixed alphabet, no vocabulary), OOV when null or not 0..255."""
    return np.where(valid & (raw >= 0) & (raw < CODE_VALUES), raw + FIRST_TOKEN_ID, OOV_ID).astype(np.int32)


def _code_tokens(codes: pa.ChunkedArray, rows: np.ndarray,
                 lookup: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """[len(rows), 16] tokens of the given rows' 16-code lists (a search's query, a product's name): the first 16
    codes through `lookup`, OOV for a missing or unknown code, 16 x PAD when the row has no list."""
    q = codes.combine_chunks().take(pa.array(rows, pa.int64()))
    lens = pc.fill_null(pc.list_value_length(q), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_raw, flat_valid = _ints(pc.list_flatten(q), np.int64)
    flat = lookup(flat_raw, flat_valid)
    starts = np.cumsum(lens) - lens
    i = np.arange(QUERY_CODES)
    inside = i[None, :] < lens[:, None]  # [n, 16]
    idx = np.where(inside, starts[:, None] + i[None, :], 0)
    out = np.where(inside, flat[idx] if len(flat) else OOV_ID, OOV_ID).astype(np.int32)
    out[~q.is_valid().to_numpy(zero_copy_only=False)] = PAD_ID
    return out


def user_rows(events: pa.Table, spec: SequenceSpec) -> pa.Table:
    """Events of complete users (`EVENT_COLUMNS`, any order) -> their `user_sequences` rows, sorted by user.

    Each user's events are ordered by (timestamp, event-type code, sku, url, query tokens): equal keys are equal
    events, so the order and the kept set are deterministic. `n_events`, `first_ts` and `last_ts` count all of the
    user's events; the lists keep the newest `max_len`."""
    n = events.num_rows
    cid, _ = _ints(events.column("client_id"), np.int64)
    ts_us, _ = _ints(events.column("ts_us"), np.int64)
    etype, _ = _ints(events.column("etype"), np.int32)
    sku, sku_ok = _ints(events.column("sku"), np.int64)
    url, url_ok = _ints(events.column("url"), np.int64)
    is_product, is_visit, is_search = np.isin(etype, PRODUCT_CODES), etype == VISIT_CODE, etype == SEARCH_CODE
    sku_raw = np.where(is_product & sku_ok, sku, -1)
    url_raw = np.where(url_ok, url, -1)

    order = np.lexsort((url_raw, sku_raw, etype, ts_us, cid))  # the last key is the primary one
    search_rows = np.flatnonzero(is_search)
    q_tok = np.zeros((n, QUERY_CODES), np.int32)
    if len(search_rows):
        q_tok[search_rows] = _code_tokens(events.column("query"), search_rows,
                                          lambda raw, ok: _lookup(spec.lookups["query"], raw, ok))
        order = _break_query_ties(order, (cid, ts_us, etype, sku_raw, url_raw), is_search, q_tok)
    product_rows = np.flatnonzero(is_product)
    n_tok = np.zeros((n, QUERY_CODES), np.int32)  # PAD: no name (absent column, sku not in the catalog)
    if len(product_rows) and "name" in events.column_names:
        n_tok[product_rows] = _code_tokens(events.column("name"), product_rows, _name_lookup)

    cid, ts_us, etype, sku_raw, url_raw = (a[order] for a in (cid, ts_us, etype, sku_raw, url_raw))
    is_product, is_visit, is_search, q_tok = is_product[order], is_visit[order], is_search[order], q_tok[order]
    n_tok = n_tok[order]
    cat, cat_ok = (a[order] for a in _ints(events.column("category"), np.int64))
    price, price_ok = (a[order] for a in _ints(events.column("price"), np.int64))
    sku_ok, url_ok = sku_ok[order], url_ok[order]

    # users and the newest max_len events of each
    starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n].astype(np.int64)
    lens = ends - starts
    kept_len = np.minimum(lens, spec.max_len)
    keep = np.arange(n) >= np.repeat(ends - kept_len, lens)
    offsets = pa.array(np.r_[0, np.cumsum(kept_len)].astype(np.int32))

    def lists(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values[keep]))

    eday = np.floor_divide(ts_us, _DAY_US)
    day_idx = eday - spec.first_day
    week_idx = np.floor_divide(day_idx, 7)
    day = np.where((day_idx >= 0) & (eday <= spec.last_day), day_idx + FIRST_TOKEN_ID, OOV_ID).astype(np.int32)
    week = np.where((day_idx >= 0) & (week_idx <= spec.last_week), week_idx + FIRST_TOKEN_ID, OOV_ID).astype(np.int32)
    pad = np.int32(PAD_ID)
    cols = {
        "event_type": lists((etype + FIRST_TOKEN_ID).astype(np.int32)),
        "sku": lists(np.where(is_product, _lookup(spec.lookups["sku"], sku_raw, sku_ok & is_product), pad)),
        "category": lists(np.where(is_product, _lookup(spec.lookups["category"], cat, cat_ok), pad)),
        "price": lists(np.where(is_product, _lookup(spec.lookups["price"], price, price_ok), pad)),
        "url": lists(np.where(is_visit, _lookup(spec.lookups["url"], url_raw, url_ok), pad)),
        "day": lists(day),
        "week": lists(week),
        "sku_raw": lists(sku_raw),
        "ts": lists(np.floor_divide(ts_us, 1_000_000)),
    }
    def sparse_codes(carrier: np.ndarray, tokens: np.ndarray) -> pa.ListArray:
        """16 tokens per kept carrier event (search: query, product: name), flattened in event order."""
        kept = keep & carrier
        per_user = np.add.reduceat(kept.astype(np.int64), starts) if n else np.zeros(0, np.int64)
        code_offsets = np.r_[0, np.cumsum(per_user)] * QUERY_CODES
        return pa.ListArray.from_arrays(pa.array(code_offsets.astype(np.int32)), pa.array(tokens[kept].ravel()))

    cols["query"] = sparse_codes(is_search, q_tok)
    cols["name"] = sparse_codes(is_product, n_tok)

    users = len(starts)
    ts_type = pa.timestamp("us", tz="UTC")
    as_of = spec.as_of if spec.as_of.tzinfo else spec.as_of.replace(tzinfo=UTC)
    as_of_us = round(as_of.timestamp() * 1_000_000)
    cols |= {
        "client_id": pa.array(cid[starts]),
        "as_of": pa.array(np.full(users, as_of_us, np.int64), ts_type),
        "vocab_version": pa.array(np.full(users, spec.vocab_version, object), pa.string()),
        "n_events": pa.array(lens.astype(np.int64)),
        "first_ts": pa.array(ts_us[starts], ts_type),
        "last_ts": pa.array(ts_us[ends - 1], ts_type),
        "seq_len": pa.array(kept_len.astype(np.int32)),
    }
    schema = USER_SEQUENCES.arrow_schema()
    return pa.Table.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)


def _break_query_ties(order: np.ndarray, keys: tuple[np.ndarray, ...], is_search: np.ndarray,
                      q_tok: np.ndarray) -> np.ndarray:
    """Order runs of equal (user, ts, type, sku, url) search events by their query tokens (lexicographically, as
    Spark and DuckDB compare arrays). Rare (two searches of one user in the same microsecond), so only those runs
    are sorted again."""
    sorted_keys = [k[order] for k in keys]
    same = np.ones(len(order) - 1, bool)
    for k in sorted_keys:
        same &= k[1:] == k[:-1]
    same &= is_search[order][1:]
    if not same.any():
        return order
    tied = np.zeros(len(order), bool)
    tied[1:] |= same
    tied[:-1] |= same
    group = np.cumsum(np.r_[True, ~same])  # run id per sorted position
    pos = np.flatnonzero(tied)
    rows = order[pos]
    sub = np.lexsort((*(q_tok[rows, i] for i in range(QUERY_CODES - 1, -1, -1)), group[pos]))
    order = order.copy()
    order[pos] = rows[sub]
    return order


def stream_user_rows(batches: Iterable[pa.RecordBatch], spec: SequenceSpec,
                     chunk_rows: int = 262_144) -> Iterator[pa.Table]:
    """User-grouped event batches (every user's events contiguous, as Spark's sort by user delivers them) -> tables
    of `user_sequences` rows, about `chunk_rows` events at a time. The last user of a batch may continue in the
    next one, so a chunk ends only where a user starts; memory is one chunk plus one user's events, and each batch
    is searched once (a user spanning many batches costs no rescans)."""
    pending: list[pa.RecordBatch] = []
    rows, last = 0, None
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        cid = batch.column("client_id")
        tail = cid[n - 1].as_py()
        start = int(pc.index(cid, tail).as_py())  # where this batch's last user begins (grouped by user)
        if start == 0 and tail == last:  # the pending last user goes on
            pending.append(batch)
            rows += n
            continue
        if rows + start >= chunk_rows:
            yield user_rows(pa.Table.from_batches([*pending, batch.slice(0, start)]), spec)
            pending, rows = [batch.slice(start)], n - start
        else:
            pending.append(batch)
            rows += n
        last = tail
    if rows:
        yield user_rows(pa.Table.from_batches(pending), spec)


def file_stats(scalars: pa.Table, null_counts: Mapping[str, int]) -> str:
    """The Delta log's per-file statistics, as Spark's Delta writer records them: numRecords, min/max of the scalar
    columns (timestamps truncated to milliseconds) and the null count of every column."""

    def value(v):
        if isinstance(v, datetime):
            return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
        return v

    mins, maxs = {}, {}
    for name in _STATS_COLUMNS:
        mm = pc.min_max(scalars.column(name))
        mins[name], maxs[name] = value(mm["min"].as_py()), value(mm["max"].as_py())
    return json.dumps({"numRecords": scalars.num_rows, "minValues": mins, "maxValues": maxs,
                       "nullCount": dict(null_counts)}, separators=(",", ":"))


FILES_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("modification_time", pa.int64()),
                          ("num_records", pa.int64()), ("stats", pa.string())])


def write_files(batches: Iterable[pa.RecordBatch], spec: SequenceSpec, table_dir: str,
                rows_per_file: int = 1_000_000) -> Iterator[pa.RecordBatch]:
    """Build the rows of one task and write them as Parquet files into the table's directory (not committed: the
    driver commits every task's files in one Delta commit, so readers never see a partial table; a failed task's
    files stay unreferenced until VACUUM). Yields one (path, size, modification time, rows, stats) row per file."""
    import pyarrow.parquet as pq

    schema = USER_SEQUENCES.arrow_schema()
    required = [f.name for f in schema if not f.nullable]
    writer, path, parts, nulls = None, "", [], {}

    def close() -> pa.RecordBatch:
        writer.close()
        st = os.stat(os.path.join(table_dir, path))
        scalars = pa.concat_tables(parts)
        return pa.RecordBatch.from_pydict(
            {"path": [path], "size": [st.st_size], "modification_time": [int(st.st_mtime * 1000)],
             "num_records": [scalars.num_rows], "stats": [file_stats(scalars, nulls)]}, schema=FILES_SCHEMA)

    for table in stream_user_rows(batches, spec):
        bad = [name for name in required if table.column(name).null_count]
        if bad:
            raise ValueError(f"user_sequences columns {bad} must not be null")
        if writer is None:
            path = f"part-{uuid.uuid4()}-c000.snappy.parquet"
            writer = pq.ParquetWriter(os.path.join(table_dir, path), schema, compression="snappy")
            parts, nulls = [], dict.fromkeys(schema.names, 0)
        writer.write_table(table)
        parts.append(table.select(list(_STATS_COLUMNS)))
        for name in schema.names:
            nulls[name] += table.column(name).null_count
        if sum(p.num_rows for p in parts) >= rows_per_file:
            yield close()
            writer = None
    if writer is not None:
        yield close()
