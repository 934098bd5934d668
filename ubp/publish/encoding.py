"""Byte-exact Feast serialisation over whole columns (Feast 0.67: `serialize_entity_key` v3, `Value` protos,
the SQLite and Redis stores' timestamps), so the publish writes what Feast would write without a proto per value."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = datetime(1970, 1, 1)
_VALUE_TYPE_STRING = 2  # feast ValueType.STRING
_VALUE_TYPE_INT64 = 4  # feast ValueType.INT64
_FLOAT_LIST_TAG = b"\x82\x01"  # Value.float_list_val: field 16, wire type 2
_INT64_TAG = 0x20  # Value.int64_val: field 4, varint


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
