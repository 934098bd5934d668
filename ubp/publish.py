"""Fast publish: stream a gold Delta table into Feast's online store, byte for byte what Feast itself would write.

Feast's own `materialize` / `write_to_online_store` build one protobuf object per value and one Python tuple per row
(5-15k rows/s for 128-float vectors here). This path writes the same bytes without them:

- the Delta table is read through its log (`deltalake`: the current snapshot only, deleted rows are gone) in Arrow
  batches;
- entity keys (`serialize_entity_key` v3 of one int64 join key), float vectors (`Value.float_list_val`) and int64s
  (`Value.int64_val`) are serialised with numpy over whole columns; low-cardinality columns (strings, bools,
  timestamps) go through Feast's own `python_values_to_proto_values` once per distinct value;
- SQLite gets Feast's own upsert as ONE `INSERT ... SELECT` statement per batch (the batch bound as a few blobs,
  see `SqliteWriter`); Redis gets raw RESP `HSET` commands (the hash layout
  of Feast's Redis store: key = entity key + project, fields = murmur3 of `view:feature` plus `_ts:view`), packed
  per column and pipelined in chunks while redis-server works (see `RedisWriter`).

Incremental: the publish state (per online store and view: the published (key, as_of, created_at) of each entity and
the Delta version) lives in `<lakehouse>/_feast/published/`. A publish computes, per entity, the row Feast would
serve (latest as_of, then latest created_at, over the current Delta snapshot), writes only entities whose row is new
or changed (a newer as-of, a rewrite) and deletes entities that are no longer in the table, so a row deleted from
Delta is not served. Afterwards the interval is recorded in Feast's registry with `apply_materialization`, exactly as
`materialize_incremental` does.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ubp.errors import UbpError
from ubp.log import get_logger

log = get_logger(__name__)

_EPOCH = datetime(1970, 1, 1)
_VALUE_TYPE_STRING = 2  # feast ValueType.STRING
_VALUE_TYPE_INT64 = 4  # feast ValueType.INT64
_FLOAT_LIST_TAG = b"\x82\x01"  # Value.float_list_val: field 16, wire type 2
_INT64_TAG = 0x20  # Value.int64_val: field 4, varint


# ---------------------------------------------------------------------------------------------------------------
# Private Feast / redis-py functions: used only with the versions the byte-exact tests passed with
# ---------------------------------------------------------------------------------------------------------------
# The fast path calls Feast's `_mmh3`, `SqliteOnlineStore._get_db_path`, `RedisOnlineStore._parse_connection_string`
# and writes on redis-py's `Connection._sock`. Private functions change without notice, and a change there would
# not fail loudly: it would write bytes Feast no longer reads. tests/test_publish*.py compare every byte with Feast's
# own write path on SQLite and Redis; after they pass on a new version, add it here.
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {"feast": ("0.67.0",), "redis": ("7.4.1",)}
PRIVATE_CALLS: dict[str, str] = {
    "feast": "_mmh3, SqliteOnlineStore._get_db_path, RedisOnlineStore._parse_connection_string",
    "redis": "Connection._sock",
}


def installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def private_api_ok(package: str, installed: str | None = None) -> bool:
    """Whether `package` (installed, or the version given) is one the fast path's private calls were tested with."""
    have = installed if installed is not None else installed_version(package)
    return have in TESTED_VERSIONS[package]


def require_private_api(package: str, installed: str | None = None) -> None:
    """Refuse, in one line naming both versions, to run the fast path on an untested `package` version."""
    if private_api_ok(package, installed):
        return
    have = installed if installed is not None else installed_version(package)
    tested = ", ".join(TESTED_VERSIONS[package])
    raise UbpError(
        f"fast publish calls private {package} functions ({PRIVATE_CALLS[package]}) tested byte for byte with "
        f"{package} {tested}, but {package} {have} is installed: install {package}=={TESTED_VERSIONS[package][-1]} "
        f"(requirements.lock), or run tests/test_publish*.py on {have} and add it to ubp.publish.TESTED_VERSIONS"
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading Delta through its log
# ---------------------------------------------------------------------------------------------------------------
def delta_version(path: Path | str) -> int:
    from ubp.reader import table_version

    return table_version(path)


def scan_delta(
    path: Path | str,
    columns: list[str],
    *,
    version: int | None = None,
    filter: Any = None,
    batch_size: int = 65_536,
    files: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of one Delta snapshot (log-aware: only the files of that version; deleted rows are absent).

    `ubp.reader.iter_batches` does the reading (it also handles deletion vectors via delta-rs' own scan)."""
    from ubp.reader import iter_batches

    yield from iter_batches(str(path), version=version, columns=columns, batch_size=batch_size, filter=filter,
                            files=files)


# ---------------------------------------------------------------------------------------------------------------
# Byte-exact serialisation (Feast 0.67: key_encoding_utils.serialize_entity_key v3, Value.proto, sqlite/redis stores)
# ---------------------------------------------------------------------------------------------------------------
def entity_key_prefix(join_key: str) -> bytes:
    """`serialize_entity_key` v3 of a single int64 join key, without the 8 value bytes."""
    k = join_key.encode()
    return struct.pack("<III", 1, _VALUE_TYPE_STRING, len(k)) + k + struct.pack("<II", _VALUE_TYPE_INT64, 8)


def _fixed_matrix(head: bytes, body: np.ndarray, tail: bytes = b"") -> np.ndarray:
    """(n, width) uint8: row i = `head + body[i] + tail` (body: (n, m) uint8)."""
    n, m = body.shape
    h, t = len(head), len(tail)
    buf = np.empty((n, h + m + t), dtype=np.uint8)
    if h:
        buf[:, :h] = np.frombuffer(head, dtype=np.uint8)
    buf[:, h : h + m] = body
    if t:
        buf[:, h + m :] = np.frombuffer(tail, dtype=np.uint8)
    return buf


def _row_bytes(buf: np.ndarray) -> list[bytes]:
    """The rows of an (n, width) uint8 matrix as n bytes objects."""
    n, width = buf.shape
    raw = buf.tobytes()
    return [raw[i : i + width] for i in range(0, n * width, width)]


def _fixed_records(head: bytes, body: np.ndarray, tail: bytes = b"") -> list[bytes]:
    """n records `head + body[i] + tail` as bytes objects (body: (n, m) uint8)."""
    return _row_bytes(_fixed_matrix(head, body, tail))


def encode_entity_keys(keys: np.ndarray, join_key: str, suffix: bytes = b"") -> list[bytes]:
    """Serialised entity keys of int64 ids (SQLite: suffix b""; Redis: suffix = project name)."""
    body = np.ascontiguousarray(keys.astype("<i8", copy=False)).view(np.uint8).reshape(len(keys), 8)
    return _fixed_records(entity_key_prefix(join_key), body, suffix)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _varint_matrix(values: np.ndarray, tag: int) -> tuple[np.ndarray, np.ndarray]:
    """`tag + varint(v)` for each int64, left-aligned in an (n, 11) uint8 matrix, and each record's length
    (negative numbers as 10-byte two's complement, like protobuf)."""
    u = values.astype(np.int64, copy=False).view(np.uint64)
    n = len(u)
    groups = np.empty((n, 10), dtype=np.uint8)
    for j in range(10):
        groups[:, j] = ((u >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
    thresholds = np.array([1 << (7 * j) for j in range(1, 10)], dtype=np.uint64)
    nbytes = 1 + (u[:, None] >= thresholds[None, :]).sum(axis=1)
    cont = np.arange(10)[None, :] < (nbytes - 1)[:, None]
    groups[cont] |= 0x80
    mat = np.zeros((n, 11), dtype=np.uint8)
    mat[:, 0] = tag
    mat[:, 1:] = np.where(np.arange(10)[None, :] < nbytes[:, None], groups, 0)
    return mat, (nbytes + 1).astype(np.int64)


def _varints(values: np.ndarray, tag: int) -> list[bytes]:
    """`tag + varint(v)` for each int64 as bytes objects (see `_varint_matrix`)."""
    mat, lens = _varint_matrix(values, tag)
    flat = mat[np.arange(11)[None, :] < lens[:, None]].tobytes()
    ends = np.cumsum(lens)
    starts = ends - lens
    return [flat[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _float_list_head(dim: int) -> bytes:
    """The bytes of `Value(float_list_val=FloatList(val=v))` before the floats, for len(v) = dim > 0."""
    nb = 4 * dim
    inner = b"\x0a" + _varint(nb)
    return _FLOAT_LIST_TAG + _varint(len(inner) + nb) + inner


def float_list_matrix(col: pa.Array | pa.ChunkedArray, order: np.ndarray | None = None) -> np.ndarray | None:
    """`encode_float_lists` as one (n, width) uint8 matrix (row i = record i, or record order[i]) when every row is a
    float32 vector of the same non-zero length without nulls (the usual embedding column); None otherwise (use the
    record path)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) or not n or col.null_count:
        return None
    if not pa.types.is_float32(col.type.value_type) or col.values.null_count:
        return None
    offsets = col.offsets.to_numpy()
    lengths = np.diff(offsets)
    dim = int(lengths[0])
    if dim == 0 or (lengths != dim).any():
        return None
    floats = col.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[0] + n * dim].reshape(n, dim)
    if order is not None:
        floats = floats[order]  # the row gather is the one copy of the vectors before the header is prepended
    body = np.ascontiguousarray(floats.astype("<f4", copy=False)).view(np.uint8).reshape(n, 4 * dim)
    return _fixed_matrix(_float_list_head(dim), body)


def encode_float_lists(col: pa.Array | pa.ChunkedArray) -> list[bytes] | None:
    """`Value(float_list_val=FloatList(val=v)).SerializeToString()` per row; None when the column needs the slow path."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    mat = float_list_matrix(col)  # the usual case: one dimension, no nulls
    if mat is not None:
        return _row_bytes(mat)
    if col.null_count or not pa.types.is_float32(col.type.value_type):
        return None
    offsets = col.offsets.to_numpy()
    lengths = np.diff(offsets)
    n = len(col)
    if n == 0:
        return []
    values = col.values
    if values.null_count:
        return None
    floats = values.to_numpy(zero_copy_only=False)
    out: list[bytes | None] = [None] * n
    for dim in np.unique(lengths).tolist():
        rows = np.nonzero(lengths == dim)[0]
        nb = 4 * dim
        if dim == 0:
            head = _FLOAT_LIST_TAG + b"\x00"
            for r in rows.tolist():
                out[r] = head
            continue
        head = _float_list_head(dim)
        mat = floats[offsets[rows][:, None] + np.arange(dim)[None, :]]
        body = np.ascontiguousarray(mat.astype("<f4", copy=False)).view(np.uint8).reshape(len(rows), nb)
        recs = _fixed_records(head, body)
        if len(rows) == n:
            return recs
        for r, rec in zip(rows.tolist(), recs, strict=True):
            out[r] = rec
    return out  # type: ignore[return-value]


def _feast_values(values: np.ndarray, value_type: Any) -> tuple[list[bytes], list[str | None]]:
    """Feast's own conversion (the reference): serialised Value bytes and SQLite value_text per element."""
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(values, value_type)
    return [p.SerializeToString() for p in protos], [extract_text_and_num(p, False)[0] for p in protos]


def encode_column(col: pa.Array | pa.ChunkedArray, value_type: Any) -> tuple[list[bytes], list[str | None]]:
    """Serialised `Value` bytes and SQLite `value_text` for one feature column, exactly as Feast would write them."""
    from feast.value_type import ValueType

    if isinstance(col, pa.ChunkedArray):
        chunks = [c for c in col.chunks if len(c)]
        if len(chunks) != 1:  # encode chunk by chunk (no copy of a vector column into one buffer)
            vals: list[bytes] = []
            texts: list[str | None] = []
            for c in chunks:
                v, t = encode_column(c, value_type)
                vals += v
                texts += t
            return vals, texts
        col = chunks[0]
    n = len(col)
    if value_type == ValueType.FLOAT_LIST:
        recs = encode_float_lists(col)
        if recs is not None:
            return recs, [None] * n
    if value_type == ValueType.INT64 and pa.types.is_integer(col.type) and not col.null_count:
        ints = col.to_numpy(zero_copy_only=False).astype(np.int64)
        return _varints(ints, _INT64_TAG), [str(v) for v in ints.tolist()]
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return _feast_values(col.to_numpy(zero_copy_only=False), value_type)
    vals, texts, idx = _distinct_values(col, value_type)
    return [vals[i] for i in idx.tolist()], [texts[i] for i in idx.tolist()]


def _distinct_values(col: pa.Array, value_type: Any) -> tuple[list[bytes], list[str | None], np.ndarray]:
    """Feast's conversion once per distinct value (strings, bools, timestamps are low cardinality): (values, texts,
    index of each row's value). A null is converted exactly as Feast sees it in this column (None, NaT, NaN)."""
    enc = pc.dictionary_encode(col)
    vals, texts = _feast_values(enc.dictionary.to_numpy(zero_copy_only=False), value_type)
    indices = enc.indices
    if indices.null_count:
        nvals, ntexts = _feast_values(col.filter(col.is_null()).slice(0, 1).to_numpy(zero_copy_only=False),
                                      value_type)
        indices = indices.fill_null(len(vals))
        vals, texts = vals + nvals, texts + ntexts
    return vals, texts, indices.to_numpy(zero_copy_only=False)


def _naive(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def sqlite_ts(us: np.ndarray) -> list[int]:
    """What Feast's SQLite adapter stores for a naive-UTC datetime: `int(dt.timestamp())` (per distinct value)."""
    uniq, inv = np.unique(us, return_inverse=True)
    conv = [int(_naive(v).timestamp()) for v in uniq.tolist()]
    return [conv[i] for i in inv.tolist()]


def redis_ts(us: np.ndarray) -> list[bytes]:
    """Feast's Redis `_ts:view` field: a serialised google.protobuf.Timestamp (per distinct value)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    uniq, inv = np.unique(us, return_inverse=True)
    conv = []
    for v in uniq.tolist():
        ts = Timestamp()
        ts.FromDatetime(_naive(v).replace(tzinfo=UTC))
        conv.append(ts.SerializeToString())
    return [conv[i] for i in inv.tolist()]


def _ts_us(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_timestamp(col.type) and col.type.unit != "us":
        col = pc.cast(col, pa.timestamp("us", tz=col.type.tz))
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------------------------
# What to publish: a feature view's layout, read from the Feast object
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewLayout:
    name: str
    path: str
    join_key: str
    timestamp_field: str
    created_field: str | None
    features: tuple[tuple[str, Any], ...]  # (name, feast ValueType)

    @classmethod
    def of(cls, fv: Any) -> ViewLayout:
        src = fv.batch_source
        join_keys = list(fv.join_keys)
        if len(join_keys) != 1:
            raise UbpError(f"feature view {fv.name!r}: the fast publish path supports one int64 join key")
        return cls(
            name=fv.name,
            path=str(src.path),
            join_key=join_keys[0],
            timestamp_field=src.timestamp_field,
            created_field=src.created_timestamp_column or None,
            features=tuple((f.name, f.dtype.to_value_type()) for f in fv.features),
        )

    @property
    def columns(self) -> list[str]:
        cols = [self.join_key, self.timestamp_field] + ([self.created_field] if self.created_field else [])
        return cols + [f for f, _ in self.features if f not in cols]

    def fingerprint(self) -> str:
        spec = json.dumps([self.name, self.path, self.join_key, self.timestamp_field, self.created_field,
                           [(f, int(t.value)) for f, t in self.features]])
        return hashlib.sha1(spec.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Online store writers
# ---------------------------------------------------------------------------------------------------------------
_TS_DIGITS = 13  # sign + digits of an epoch-seconds timestamp in the bulk statement's per-entity blob


def _fixed_ascii(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8: each int64 as sign + zero-padded decimal digits (`CAST(x AS INTEGER)` reads it back)."""
    v = np.asarray(values, dtype=np.int64)
    a = np.abs(v).astype(np.uint64)
    out = np.empty((len(v), width), dtype=np.uint8)
    ten = np.uint64(10)
    for j in range(width - 1, 0, -1):
        out[:, j] = (a % ten).astype(np.uint8) + 48
        a //= ten
    out[:, 0] = np.where(v < 0, ord("-"), ord("0"))
    return out


@dataclass
class Slots:
    """One feature's per-entity byte strings as an (n, width) uint8 matrix, item i left-aligned in row i.

    `lens` is None when every item is `width` bytes (vectors of one dimension); otherwise each item's length, -1 for
    NULL (value_text of non-text features). The width is the batch's longest item: fine for vectors and short
    scalars (what feature views hold); a column with rare huge values would pad every row to them."""

    mat: np.ndarray
    lens: np.ndarray | None

    @classmethod
    def of(cls, items: list[bytes | None]) -> Slots:
        lens = np.fromiter((-1 if b is None else len(b) for b in items), dtype=np.int64, count=len(items))
        width = max(int(lens.max()), 0) if len(items) else 0
        mat = np.zeros((len(items), width), dtype=np.uint8)
        if width:  # boolean-mask assignment fills row by row, in the order of the joined bytes
            mat[np.arange(width)[None, :] < lens[:, None]] = np.frombuffer(
                b"".join(b for b in items if b is not None), dtype=np.uint8)
        return cls(mat, None if (lens == width).all() else lens)

    def take(self, idx: np.ndarray | slice) -> Slots:
        return Slots(self.mat[idx], None if self.lens is None else self.lens[idx])

    @property
    def all_null(self) -> bool:
        return self.lens is not None and bool((self.lens < 0).all())

    def spec(self) -> tuple[int, int]:
        """(slot width, digits of the length field; 0 = fixed width) - the statement's shape for this column."""
        if self.lens is None:
            return self.mat.shape[1], 0
        return self.mat.shape[1], len(str(self.mat.shape[1])) + 1

    def blobs(self) -> list[np.ndarray]:
        """The statement's parameters for this column (sqlite3 binds any C-contiguous buffer as a BLOB)."""
        digits = self.spec()[1]
        out = [np.ascontiguousarray(self.mat)]
        if digits:
            out.append(_fixed_ascii(self.lens, digits))
        return out


def encode_slots(col: pa.Array | pa.ChunkedArray, value_type: Any, order: np.ndarray) -> tuple[Slots, Slots]:
    """`encode_column` of `col` taken at `order`, as (value, value_text) slots, without a bytes object per row for
    the usual columns: same-length float vectors, int64 without nulls, low-cardinality values."""
    from feast.value_type import ValueType

    n = len(order)
    no_text = Slots(np.zeros((n, 0), np.uint8), np.full(n, -1, np.int64))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if value_type == ValueType.FLOAT_LIST:
        mat = float_list_matrix(col, order)
        if mat is not None:
            return Slots(mat, None), no_text
    if value_type == ValueType.INT64 and pa.types.is_integer(col.type) and not col.null_count:
        ints = col.to_numpy(zero_copy_only=False).astype(np.int64)[order]
        mat, lens = _varint_matrix(ints, _INT64_TAG)
        text = ints.astype("S20")  # fixed-width, NUL-padded decimal: already a slot matrix
        return (Slots(mat, lens), Slots(text.view(np.uint8).reshape(n, 20),
                                        np.char.str_len(text).astype(np.int64)))
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        vals, texts = encode_column(col, value_type)
        idx = order
    else:  # as `encode_column`: each distinct value once, then a gather
        vals, texts, idx = _distinct_values(col, value_type)
        idx = idx[order]
    return Slots.of(vals).take(idx), Slots.of([None if t is None else t.encode() for t in texts]).take(idx)


class SqliteWriter:
    """Feast's SQLite table `<project>_<view>`: one row per (entity_key, feature_name), same upsert as Feast.

    A batch goes in as ONE `INSERT ... SELECT` statement instead of an `executemany` of 4 rows per user: Python
    binds 6 values per row (~1.5 us), which cost as much as SQLite's own insert. The batch is bound as a handful of
    blobs: entity keys at a fixed width, per entity two timestamps as fixed-width ASCII, and per feature its values
    (and value texts) in fixed-width slots (`Slots`: item i at byte i * width, plus a fixed-width ASCII length
    when lengths vary). A recursive CTE yields one row per entity (key and timestamps cut once), CROSS JOINed with
    the feature names (entity outer, feature inner = primary-key order); `substr` cuts each value at an offset
    computed from the row number (blobs, never text, so `substr` is O(1)). Statements run on a writer thread
    (sqlite3 releases the GIL inside sqlite3_step) while the caller reads and encodes the next batch. The stored
    values and their SQLite types are the ones Feast's own upsert stores (asserted against `write_to_online_store`
    and `materialize` in the tests).
    """

    def __init__(self, db_path: str, project: str, view: ViewLayout, config: Any) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        store = config.online_store
        if getattr(store, "vector_enabled", False) or getattr(store, "enable_openai_compatible_store", False):
            raise UbpError("fast publish supports the plain SQLite store (vector_enabled/openai store are off)")
        self.table = compute_table_id(project, view, config.registry.enable_online_feature_view_versioning)
        # one transaction for the whole publish (atomic for readers, and no per-batch commit rewriting the pages);
        # journal mode and synchronous stay SQLite's defaults (rollback journal, FULL): crash-safe, and with one
        # transaction per publish they cost a handful of fsyncs, not per-row work.
        # the connection is used by one thread at a time: statements run on `self.pool`'s thread while the caller
        # encodes the next batch (sqlite3 releases the GIL inside sqlite3_step); everything else waits for it first
        self.conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA cache_size=-524288")  # 512 MiB page cache for this connection only
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ubp-sqlite")
        self.in_flight: Future | None = None
        self.in_tx = False
        self.view = view
        self.names = sorted(f for f, _ in view.features)  # rows go in primary-key order: key bytes, feature name
        self.types = dict(view.features)
        self.q = '"' + self.table.replace('"', '""') + '"'
        self.delete_sql = f"DELETE FROM {self.q} WHERE entity_key = ?"
        self.count_sql = f"SELECT COUNT(*) FROM {self.q}"
        self._sql: dict[tuple, str] = {}  # (key width, with created, column specs) -> statement
        self.max_statement_bytes = 64 << 20

    def bulk_sql(self, key_width: int, with_created: bool, specs: tuple) -> str:
        """The one-statement upsert of a batch (see the class doc); parameters from `bulk_params`.

        `specs`: per feature, (value (width, digits), value_text (width, digits) or None = NULL) of its `Slots`."""
        cache_key = (key_width, with_created, specs)
        if cache_key in self._sql:
            return self._sql[cache_key]
        nf, tw = len(self.names), 2 * _TS_DIGITS
        param = iter(range(4 + nf, 10_000))

        def cut(width: int, digits: int) -> tuple[str, str | None]:
            """(the entity's bytes from the next slot blob, its length expression; None = fixed width)."""
            blob = next(param)
            if not digits:
                return f"substr(?{blob}, s.r * {width} + 1, {width})", None
            length = f"CAST(substr(?{next(param)}, s.r * {digits} + 1, {digits}) AS INTEGER)"
            return f"substr(?{blob}, s.r * {width} + 1, {length})", length

        values, texts = [], []
        for i, (vspec, tspec) in enumerate(specs):
            values.append(f"WHEN {i} THEN {cut(*vspec)[0]}")
            if tspec is None:
                continue
            text, length = cut(*tspec)
            text = f"CAST({text} AS TEXT)" if length is None else (
                f"CASE WHEN {length} < 0 THEN NULL ELSE CAST({text} AS TEXT) END")  # length -1 = NULL
            texts.append(f"WHEN {i} THEN {text}")

        def ts(pos: int, r: str) -> str:
            return f"CAST(substr(?3, {r} * {tw} + {pos + 1}, {_TS_DIGITS}) AS INTEGER)"

        created = (ts(_TS_DIGITS, "0"), ts(_TS_DIGITS, "(r + 1)")) if with_created else ("NULL", "NULL")
        names = ", ".join(f"({i}, ?{4 + i})" for i in range(nf))
        sql = (
            # one row per entity: its key and timestamps are cut once, not once per feature
            f"WITH RECURSIVE s(r, k, e, c) AS (SELECT 0, substr(?2, 1, {key_width}), {ts(0, '0')}, {created[0]} "
            f"UNION ALL SELECT r + 1, substr(?2, (r + 1) * {key_width} + 1, {key_width}), {ts(0, '(r + 1)')}, "
            f"{created[1]} FROM s WHERE r < ?1), f(i, name) AS (VALUES {names}) "
            f"INSERT INTO {self.q} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            f"SELECT s.k, f.name, CASE f.i {' '.join(values)} END, "
            f"{'CASE f.i ' + ' '.join(texts) + ' END' if texts else 'NULL'}, s.e, s.c "
            "FROM s CROSS JOIN f WHERE true "  # CROSS JOIN: entities outer, features inner = primary-key order
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
        self._sql[cache_key] = sql
        return sql

    def bulk_params(self, ek: np.ndarray, cols: list[tuple[Slots, Slots]], ets: np.ndarray,
                    cts: np.ndarray | None) -> tuple[tuple, tuple]:
        """(specs for `bulk_sql`, its parameters) for n entities (ek: (n, key width) uint8) x F features (`cols` in
        `self.names` order: value and value_text slots)."""
        n = len(ek)
        tsm = np.concatenate([_fixed_ascii(ets, _TS_DIGITS),
                              _fixed_ascii(cts if cts is not None else ets, _TS_DIGITS)], axis=1)
        specs, blobs = [], []
        for vals, texts in cols:
            specs.append((vals.spec(), None if texts.all_null else texts.spec()))
            blobs += vals.blobs()
            if not texts.all_null:
                blobs += texts.blobs()
        return tuple(specs), (n - 1, np.ascontiguousarray(ek), tsm, *self.names, *blobs)

    def _wait(self) -> None:
        """Let the statement in flight finish (and raise its error here)."""
        if self.in_flight is not None:
            fut, self.in_flight = self.in_flight, None
            fut.result()

    def _submit(self, sql: str, params: tuple) -> None:
        """Run `sql` on the writer thread; at most one statement in flight, so memory stays two batches."""
        self._wait()
        self.in_flight = self.pool.submit(self.conn.execute, sql, params)

    def is_empty(self) -> bool:
        self._wait()
        try:
            return self.conn.execute(self.count_sql).fetchone()[0] == 0
        except sqlite3.OperationalError:
            return True

    def write(self, keys: np.ndarray, ts: np.ndarray, created: np.ndarray | None,
              batch: pa.RecordBatch | pa.Table) -> None:
        """Rows go in primary-key order (entity key bytes, then feature name): B-tree appends, not random inserts,
        which is ~3x less SQLite work than Feast's feature-by-entity order for the same bytes. Returns once the
        batch's statement is queued: SQLite inserts it while the caller reads and encodes the next batch."""
        if not len(keys):
            return
        order = np.argsort(keys.astype("<i8").view(">u8"), kind="stable")  # = order of the little-endian key bytes
        keys, ts = keys[order], ts[order]
        created = created[order] if created is not None else None
        body = np.ascontiguousarray(keys.astype("<i8", copy=False)).view(np.uint8).reshape(len(keys), 8)
        ek = _fixed_matrix(entity_key_prefix(self.view.join_key), body)
        cols = [encode_slots(batch.column(f), self.types[f], order) for f in self.names]
        ets = np.asarray(sqlite_ts(ts), dtype=np.int64)
        cts = np.asarray(sqlite_ts(created), dtype=np.int64) if created is not None else None
        # statements of <= ~64 MiB of values (SQLite's blob limit is 1 GB; 2048-float ensembles are 8 KB a user)
        per_user = ek.shape[1] + sum(v.mat.shape[1] + t.mat.shape[1] for v, t in cols)
        step = max(1, self.max_statement_bytes // per_user)
        self._begin()
        for i in range(0, len(ek), step):
            part = slice(i, i + step)
            specs, params = self.bulk_params(ek[part], [(v.take(part), t.take(part)) for v, t in cols], ets[part],
                                             cts[part] if cts is not None else None)
            self._submit(self.bulk_sql(ek.shape[1], created is not None, specs), params)

    def _begin(self) -> None:
        self._wait()
        if not self.in_tx:
            self.conn.execute("BEGIN")
            self.in_tx = True

    def delete(self, keys: np.ndarray) -> None:
        self._begin()
        self.conn.executemany(self.delete_sql, ((k,) for k in encode_entity_keys(keys, self.view.join_key)))

    def close(self, ok: bool = True) -> None:
        """Commit (ok) or roll back the publish; a statement that failed in flight rolls back and raises here."""
        error: BaseException | None = None
        try:
            self._wait()
        except BaseException as exc:  # noqa: BLE001 - re-raised below once the transaction is rolled back
            error, ok = exc, False
        self.pool.shutdown(wait=True)
        if self.in_tx:
            self.conn.execute("COMMIT" if ok else "ROLLBACK")
            self.in_tx = False
        self.conn.close()
        if error is not None:
            raise error


def _resp(parts: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _framed(values: list[bytes]) -> list[bytes]:
    """RESP bulk strings `$<len>\\r\\n<bytes>\\r\\n` (fixed-width columns framed with numpy in one go)."""
    if not values:
        return []
    width = len(values[0])
    if all(len(v) == width for v in values):
        body = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), width)
        return _fixed_records(b"$%d\r\n" % width, body, b"\r\n")
    return [b"$%d\r\n%s\r\n" % (len(v), v) for v in values]


def _framed_low_card(values: list[bytes]) -> list[bytes]:
    """`_framed` for columns with few distinct values (timestamps, strings): frame each distinct value once."""
    cache: dict[bytes, bytes] = {}
    out = []
    for v in values:
        f = cache.get(v)
        if f is None:
            f = cache[v] = b"$%d\r\n%s\r\n" % (len(v), v)
        out.append(f)
    return out


class RedisWriter:
    """Feast's Redis layout: HSET <entity key + project> {_ts:<view>: Timestamp, mmh3(view:feature): Value, ...}.

    Commands are packed into RESP by hand: each column is framed once (fixed-width columns with numpy), then the
    commands of a chunk are one `b"".join` over interleaved column iterators (no per-command Python objects).
    Chunks are sent as they are packed, so redis-server (the other core) works while Python packs the next chunk;
    the replies (HSET/HDEL/EXPIRE: one line each) are read once at the end by counting lines on the raw socket.
    """

    def __init__(self, client: Any, project: str, view: ViewLayout, ttl_seconds: int | None = None,
                 chunk: int = 10_000) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        require_private_api("feast")
        self.client = client
        self.project = project.encode()
        self.view = view
        self.ts_field = f"_ts:{view.name}".encode()
        self.fields = [_mmh3(f"{view.name}:{f}") for f, _ in view.features]
        self.ttl = ttl_seconds
        self.chunk = chunk
        # the raw socket only on a tested redis-py; otherwise redis-py's own send and parser (slower, same bytes)
        self.raw_socket = private_api_ok("redis")

    def _send(self, payloads: Iterator[bytes], n_replies: int) -> None:
        """Send every payload, then read exactly `n_replies` single-line replies; errors become one UbpError."""
        conn = self.client.connection_pool.get_connection()
        try:
            conn.connect()
            sock = getattr(conn, "_sock", None) if self.raw_socket else None
            if sock is None:  # an untested redis-py: its own send and parser (slower, same result)
                self._send_via_parser(conn, b"".join(payloads), n_replies)
                return
            for payload in payloads:
                sock.sendall(payload)
            seen, chunks, prev = 0, [], b""
            while seen < n_replies:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("redis closed the connection while replying")
                seen += data.count(b"\r\n") + (prev.endswith(b"\r") and data.startswith(b"\n"))
                chunks.append(data)
                prev = data
            if seen != n_replies:
                raise ConnectionError(f"expected {n_replies} redis replies, got {seen}")
            replies = b"".join(chunks)
            errors = [ln for ln in replies.split(b"\r\n") if ln.startswith(b"-")] if b"-" in replies else []
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self.client.connection_pool.release(conn)
        if errors:
            raise UbpError(f"redis refused {len(errors)} of {n_replies} writes: {errors[0][:200].decode(errors='replace')}")

    @staticmethod
    def _send_via_parser(conn: Any, payload: bytes, n_replies: int) -> None:
        from redis.exceptions import ResponseError

        errors: list[Exception] = []
        conn.send_packed_command([payload])
        for _ in range(n_replies):  # read every reply, so the connection stays in step
            try:
                conn.read_response(disable_decoding=True)
            except ResponseError as exc:
                errors.append(exc)
        if errors:
            raise UbpError(f"redis refused {len(errors)} of {n_replies} writes: {errors[0]}")

    def exists(self, keys: np.ndarray) -> bool:
        ek = encode_entity_keys(keys, self.view.join_key, self.project)
        return all(self.client.hexists(k, self.ts_field) for k in ek)

    def _pack(self, keys: np.ndarray, ts: np.ndarray, batch: pa.RecordBatch | pa.Table) -> bytes:
        from itertools import chain, repeat

        ek = _framed(encode_entity_keys(keys, self.view.join_key, self.project))
        tsb = _framed_low_card(redis_ts(ts))
        cols = []
        for f, t in self.view.features:
            vals = encode_column(batch.column(f), t)[0]
            cols.append(_framed(vals) if t.name.endswith("_LIST") else _framed_low_card(vals))
        head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(self.fields)))
        names = [b"$%d\r\n%s\r\n" % (len(f), f) for f in [self.ts_field, *self.fields]]
        streams: list[Any] = [repeat(head), ek]
        for name, col in zip(names, [tsb, *cols], strict=True):
            streams += [repeat(name), col]
        if self.ttl:
            ttl = str(self.ttl).encode()
            streams += [repeat(b"*3\r\n$6\r\nEXPIRE\r\n"), ek, repeat(b"$%d\r\n%s\r\n" % (len(ttl), ttl))]
        return b"".join(chain.from_iterable(zip(*streams, strict=False)))  # repeat()s are endless

    def write(self, keys: np.ndarray, ts: np.ndarray, created: np.ndarray | None,
              batch: pa.RecordBatch | pa.Table) -> None:
        n, step = len(keys), self.chunk
        payloads = (self._pack(keys[i : i + step], ts[i : i + step], batch.slice(i, step)) for i in range(0, n, step))
        self._send(payloads, n * (2 if self.ttl else 1))

    def delete(self, keys: np.ndarray) -> None:
        ek = encode_entity_keys(keys, self.view.join_key, self.project)
        cmds = [_resp([b"HDEL", k, self.ts_field, *self.fields]) for k in ek]
        for i in range(0, len(cmds), 10_000):
            self._send(iter([b"".join(cmds[i : i + 10_000])]), len(cmds[i : i + 10_000]))

    def close(self, ok: bool = True) -> None:
        pass


def redis_client(connection_string: str) -> Any:
    """A redis-py client from Feast's `host:port[,db=N,password=...,ssl=true]` connection string."""
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore

    require_private_api("feast")
    startup, params = RedisOnlineStore._parse_connection_string(connection_string)
    host, port = startup[0]["host"], startup[0]["port"]
    return redis.Redis(host=host, port=int(port), **params)


# ---------------------------------------------------------------------------------------------------------------
# Publish state: what is online, per view (lets a publish write only what changed and delete what is gone)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class PublishedState:
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    created: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    delta_version: int = -1
    fingerprint: str = ""

    @classmethod
    def load(cls, path: Path) -> PublishedState:
        if not path.exists():
            return cls()
        with np.load(path, allow_pickle=False) as z:
            return cls(z["keys"], z["ts"], z["created"], int(z["delta_version"]), str(z["fingerprint"]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=self.keys, ts=self.ts, created=self.created,
                 delta_version=np.int64(self.delta_version), fingerprint=np.str_(self.fingerprint))
        tmp.replace(path)


def latest_per_key(
    path: str, view: ViewLayout, version: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str] | None]:
    """Per entity, the row Feast serves: the latest event timestamp, then the latest created timestamp.

    Reads only the key and timestamp columns, file by file. Returns (keys sorted, ts_us, created_us, files): the
    data files ordered by their smallest key in Feast's key byte order (None: keep the table's order), so the
    write pass appends to the SQLite B-tree when files hold key ranges (our gold writers' layout)."""
    from ubp.reader import iter_file_batches

    cols = [view.join_key, view.timestamp_field] + ([view.created_field] if view.created_field else [])
    ks, ts, cr = [], [], []
    first: dict[str | None, int] = {}
    for f, b in iter_file_batches(path, version, cols):
        k = b.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
        ks.append(k)
        ts.append(_ts_us(b.column(1)))
        cr.append(_ts_us(b.column(2)) if view.created_field else np.zeros(b.num_rows, np.int64))
        low = int(k.astype("<i8").view(">u8").min())  # the little-endian bytes, compared as one big-endian number
        first[f] = min(first.get(f, low), low)
    files = None if None in first else sorted(first, key=first.__getitem__)
    if not ks:
        return (np.empty(0, np.int64),) * 3 + (files,)
    k, t, c = np.concatenate(ks), np.concatenate(ts), np.concatenate(cr)
    order = np.lexsort((c, t, k))
    k, t, c = k[order], t[order], c[order]
    last = np.ones(len(k), dtype=bool)
    last[:-1] = k[1:] != k[:-1]
    return k[last], t[last], c[last], files


def diff_state(
    old: PublishedState, keys: np.ndarray, ts: np.ndarray, created: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mask over the new keys that must be written, old keys that must be deleted)."""
    if len(old.keys) == 0:
        return np.ones(len(keys), dtype=bool), np.empty(0, np.int64)
    pos = np.searchsorted(old.keys, keys)
    pos_c = np.minimum(pos, len(old.keys) - 1)
    same = (old.keys[pos_c] == keys) & (old.ts[pos_c] == ts) & (old.created[pos_c] == created)
    gone = ~np.isin(old.keys, keys, assume_unique=True)
    return ~same, old.keys[gone]


@dataclass
class PublishResult:
    view: str
    rows_written: int
    rows_deleted: int
    entities: int
    delta_version: int
    max_as_of: datetime | None
    seconds: float
    skipped: bool = False

    def as_dict(self) -> dict:
        return {
            "written": self.rows_written, "deleted": self.rows_deleted, "entities": self.entities,
            "delta_version": self.delta_version, "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_written / self.seconds) if self.seconds > 0 and self.rows_written else 0,
            "max_as_of": self.max_as_of.isoformat() if self.max_as_of else None, "skipped": self.skipped,
        }


def _write_changes(writer: SqliteWriter | RedisWriter, view: ViewLayout, version: int, w_keys: np.ndarray,
                   w_ts: np.ndarray, w_cr: np.ndarray, batch_size: int,
                   progress: Callable[[int], None] | None, files: list[str] | None = None) -> int:
    """Stream the snapshot again (rows with as_of >= the oldest change only) and write the rows picked by the diff."""
    written = 0
    done = np.zeros(len(w_keys), dtype=bool)
    min_ts = int(w_ts.min())
    flt = pc.field(view.timestamp_field) >= pa.scalar(min_ts, pa.timestamp("us", tz="UTC"))
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, pa.RecordBatch]] = []

    def flush() -> int:
        if not pending:
            return 0
        k = np.concatenate([p[0] for p in pending])
        t = np.concatenate([p[1] for p in pending])
        c = np.concatenate([p[2] for p in pending])
        b = pa.Table.from_batches([p[3] for p in pending])  # chunked: columns are encoded chunk by chunk, no copy
        pending.clear()
        writer.write(k, t, c if view.created_field else None, b)
        if progress:
            progress(len(k))
        return len(k)

    n_pending = 0
    for batch in scan_delta(view.path, view.columns, version=version, filter=flt, batch_size=batch_size, files=files):
        bk = batch.column(view.join_key).to_numpy(zero_copy_only=False).astype(np.int64)
        bt = _ts_us(batch.column(view.timestamp_field))
        bc = _ts_us(batch.column(view.created_field)) if view.created_field else np.zeros(len(bk), np.int64)
        pos = np.minimum(np.searchsorted(w_keys, bk), len(w_keys) - 1)
        hit = (w_keys[pos] == bk) & (w_ts[pos] == bt) & (w_cr[pos] == bc) & ~done[pos]
        if not hit.any():
            continue
        rows = np.nonzero(hit)[0]
        _, first = np.unique(pos[rows], return_index=True)  # exact duplicate rows: write one
        rows = np.sort(rows[first])
        done[pos[rows]] = True
        part = batch if len(rows) == batch.num_rows else batch.take(pa.array(rows))  # rows is sorted: all = as is
        pending.append((bk[rows], bt[rows], bc[rows], part))
        n_pending += len(rows)
        if n_pending >= batch_size:
            written += flush()
            n_pending = 0
    written += flush()
    return written


def publish_view(
    store: Any,
    fv: Any,
    state_dir: Path,
    *,
    full: bool = False,
    batch_size: int = 25_000,  # rows per statement: with the gold layout a contiguous key range
    record: bool = True,
    progress: Callable[[int], None] | None = None,
) -> PublishResult:
    """Publish one feature view's Delta table into `store`'s online store (SQLite or Redis), incrementally."""
    t0 = time.perf_counter()
    view = ViewLayout.of(fv)
    config = store.config
    online = config.online_store
    kind = online.type
    require_private_api("feast")
    if kind == "sqlite":
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        writer: SqliteWriter | RedisWriter = SqliteWriter(
            SqliteOnlineStore._get_db_path(config), config.project, view, config
        )
        store_id = f"sqlite:{Path(SqliteOnlineStore._get_db_path(config)).resolve()}"
    elif kind == "redis":
        writer = RedisWriter(redis_client(online.connection_string), config.project, view, online.key_ttl_seconds)
        store_id = f"redis:{online.connection_string}"
    else:
        raise UbpError(f"fast publish supports the sqlite and redis online stores, not {kind!r}")
    sid = hashlib.sha1(f"{store_id}|{config.project}".encode()).hexdigest()[:12]
    state_path = state_dir / f"{kind}-{sid}" / f"{view.name}.npz"
    version = delta_version(view.path)
    old = PublishedState.load(state_path)
    if len(old.keys):  # the online store was wiped (teardown, new Redis): nothing of the old state is online
        lost = writer.is_empty() if isinstance(writer, SqliteWriter) else not writer.exists(old.keys[:3])
        if lost:
            old = PublishedState()
    # --full, or the view changed (another table, other features): rewrite every entity, still delete the gone ones
    rewrite_all = full or old.fingerprint != view.fingerprint()
    if not rewrite_all and old.delta_version == version and len(old.keys):
        writer.close()
        return PublishResult(view.name, 0, 0, len(old.keys), version,
                             _naive(int(old.ts.max())).replace(tzinfo=UTC), time.perf_counter() - t0, skipped=True)

    keys, ts, created, files = latest_per_key(view.path, view, version)
    write_mask, gone = diff_state(old, keys, ts, created)
    if rewrite_all:
        write_mask[:] = True
    w_keys, w_ts, w_cr = keys[write_mask], ts[write_mask], created[write_mask]
    written = 0
    try:
        if len(w_keys):
            written = _write_changes(writer, view, version, w_keys, w_ts, w_cr, batch_size, progress, files)
        if len(gone):
            writer.delete(gone)
    except BaseException:
        writer.close(ok=False)  # SQLite: roll the whole publish back; the state file is not updated either
        raise
    writer.close()
    PublishedState(keys, ts, created, version, view.fingerprint()).save(state_path)
    max_as_of = _naive(int(ts.max())).replace(tzinfo=UTC) if len(ts) else None
    if record:
        record_materialization(store, fv, _naive(int(ts.min())).replace(tzinfo=UTC) if len(ts) else None)
    return PublishResult(view.name, written, len(gone), len(keys), version, max_as_of, time.perf_counter() - t0)


def record_materialization(store: Any, fv: Any, min_start: datetime | None) -> None:
    """Append (start, end) to the view's materialization intervals, as `materialize_incremental` does."""
    end = datetime.now(UTC)
    current = store.registry.get_feature_view(fv.name, store.project)
    start = current.most_recent_end_time or min_start or end
    store.registry.apply_materialization(current, store.project, start, end, commit=True)
