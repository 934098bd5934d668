"""Feast's Redis online store, written as hand-packed, pipelined RESP commands (see `RedisWriter`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ubp.errors import UbpError
from ubp.publish.encoding import _fixed_records, encode_column, encode_entity_keys, redis_ts
from ubp.publish.layout import ViewLayout
from ubp.publish.versions import private_api_ok, require_private_api


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
