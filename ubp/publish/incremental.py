"""Publish one feature view incrementally: diff the Delta snapshot against the publish state, write the changed
entities, delete the gone ones, record the interval in Feast's registry as `materialize_incremental` does."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ubp.errors import UbpError
from ubp.publish.delta import delta_version, scan_delta
from ubp.publish.encoding import _naive, _ts_us
from ubp.publish.layout import ViewLayout
from ubp.publish.redis import RedisWriter, redis_client
from ubp.publish.sqlite import SqliteWriter
from ubp.publish.state import PublishedState, diff_state, latest_per_key
from ubp.publish.versions import require_private_api


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
    min_as_of: datetime | None = None  # the oldest as-of written (where a materialization interval starts)

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
    from ubp import hooks

    hook = hooks.current()
    written = 0
    done = np.zeros(len(w_keys), dtype=bool)
    min_ts = int(w_ts.min())
    flt = pc.field(view.timestamp_field) >= pa.scalar(min_ts, pa.timestamp("us", tz="UTC"))
    if view.where:
        flt = flt & view.row_filter()
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
        hook.after_publish_batch(view.name, len(k))
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


def _open_writer(store: Any, view: ViewLayout) -> SqliteWriter | RedisWriter:
    """The writer of `store`'s online store for `view`."""
    config = store.config
    online = config.online_store
    require_private_api("feast")
    if online.type == "sqlite":
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        return SqliteWriter(SqliteOnlineStore._get_db_path(config), config.project, view, config)
    if online.type == "redis":
        return RedisWriter(redis_client(online.connection_string), config.project, view, online.key_ttl_seconds)
    raise UbpError(f"fast publish supports the sqlite and redis online stores, not {online.type!r}")


def state_file(store: Any, view_name: str, state_dir: Path) -> Path:
    """Where the publish state of view `view_name` in `store`'s online store lives (one folder per online store)."""
    config = store.config
    online = config.online_store
    if online.type == "sqlite":
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        store_id = f"sqlite:{Path(SqliteOnlineStore._get_db_path(config)).resolve()}"
    else:
        store_id = f"redis:{online.connection_string}"
    sid = hashlib.sha1(f"{store_id}|{config.project}".encode()).hexdigest()[:12]
    return state_dir / f"{online.type}-{sid}" / f"{view_name}.npz"


def _load_state(writer: SqliteWriter | RedisWriter, path: Path) -> PublishedState:
    """The view's publish state; empty when the online store was wiped (teardown, a new Redis): nothing of it is
    online then. Entities a killed publish may have touched (`PublishedState.in_doubt`) are not used as evidence."""
    old = PublishedState.load(path)
    sure = old.keys[~old.in_doubt()]
    if isinstance(writer, SqliteWriter):
        lost = len(old.keys) > 0 and writer.is_empty()
    else:
        lost = len(sure) > 0 and not writer.exists(sure[:3])
    return PublishedState() if lost else old


def current_state(store: Any, fv: Any, state_dir: Path) -> PublishedState | None:
    """The publish state of `fv` when its online data is the view's current Delta snapshot (same table version, same
    layout, still online), else None: what decides whether a publish has anything to do."""
    view = ViewLayout.of(fv)
    writer = _open_writer(store, view)
    try:
        old = _load_state(writer, state_file(store, view.name, state_dir))
    finally:
        writer.close()
    current = old.fingerprint == view.fingerprint() and old.delta_version == delta_version(view.path)
    return old if current else None


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
    """Publish one feature view's Delta table into `store`'s online store (SQLite or Redis), incrementally.

    Writes the view it is given, in place: `ubp.stages.publish` gives it the slot that is not served
    (`ubp.feast_slots`) and switches afterwards."""
    t0 = time.perf_counter()
    view = ViewLayout.of(fv)
    writer = _open_writer(store, view)
    state_path = state_file(store, view.name, state_dir)
    version = delta_version(view.path)
    old = _load_state(writer, state_path)
    # --full, or the view changed (another table, other features): rewrite every entity, still delete the gone ones
    rewrite_all = full or old.fingerprint != view.fingerprint()
    if not rewrite_all and old.delta_version == version and len(old.keys):
        writer.close()
        return PublishResult(view.name, 0, 0, len(old.keys), version, old.max_as_of(), time.perf_counter() - t0,
                             skipped=True)

    keys, ts, created, files = latest_per_key(view.path, view, version)
    write_mask, gone = diff_state(old, keys, ts, created)
    if rewrite_all:
        write_mask[:] = True
    w_keys, w_ts, w_cr = keys[write_mask], ts[write_mask], created[write_mask]
    written = 0
    if len(w_keys) or len(gone):
        # until this publish completes, the entities it writes or deletes are in doubt: a publish killed halfway
        # (Redis keeps what it got) is followed by one that rewrites or deletes each of them again
        old.touching(w_keys, gone).save(state_path)
    try:
        if len(w_keys):
            written = _write_changes(writer, view, version, w_keys, w_ts, w_cr, batch_size, progress, files)
        if len(gone):
            writer.delete(gone)
    except BaseException:
        writer.close(ok=False)  # SQLite: roll the whole publish back (the state keeps those entities in doubt)
        raise
    writer.close()
    state = PublishedState(keys, ts, created, version, view.fingerprint())
    state.save(state_path)
    min_as_of = _naive(int(ts.min())).replace(tzinfo=UTC) if len(ts) else None
    if record:
        record_materialization(store, fv, min_as_of)
    return PublishResult(view.name, written, len(gone), len(keys), version, state.max_as_of(),
                         time.perf_counter() - t0, min_as_of=min_as_of)


def record_materialization(store: Any, fv: Any, min_start: datetime | None) -> None:
    """Append (start, end) to the view's materialization intervals, as `materialize_incremental` does."""
    end = datetime.now(UTC)
    current = store.registry.get_feature_view(fv.name, store.project)
    start = current.most_recent_end_time or min_start or end
    store.registry.apply_materialization(current, store.project, start, end, commit=True)
