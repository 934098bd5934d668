"""Publish state: what is online, per view, so a publish writes only what changed and deletes what is gone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ubp.publish.encoding import _naive, _ts_us
from ubp.publish.layout import ViewLayout

IN_DOUBT = np.iinfo(np.int64).min  # timestamp of an entity that an incomplete publish may have touched


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

    def max_as_of(self) -> datetime | None:
        """The newest as-of published (None: nothing, or only entities in doubt)."""
        ts = self.ts[self.ts != IN_DOUBT]
        return _naive(int(ts.max())).replace(tzinfo=UTC) if len(ts) else None

    def in_doubt(self) -> np.ndarray:
        """Mask of the entities a publish that did not complete may have written or deleted (see `touching`)."""
        return self.ts == IN_DOUBT

    def touching(self, written: np.ndarray, deleted: np.ndarray) -> PublishedState:
        """This state plus the entities a publish is about to write or delete, marked in doubt (their timestamps
        match no row, so the next diff writes each of them again, or deletes it when it left Delta); saved before a
        publish writes anything. The table version is unknown (-1): the next publish runs."""
        keys = np.union1d(self.keys, written)
        pos = np.searchsorted(keys, self.keys)
        ts = np.full(len(keys), IN_DOUBT, np.int64)
        created = np.full(len(keys), IN_DOUBT, np.int64)
        ts[pos], created[pos] = self.ts, self.created
        doubt = np.searchsorted(keys, np.concatenate([written, deleted]).astype(np.int64))
        ts[doubt] = created[doubt] = IN_DOUBT
        return PublishedState(keys, ts, created, -1, self.fingerprint)

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
    for f, b in iter_file_batches(path, version, cols + [c for c, _ in view.where]):
        mask = view.row_mask(b)  # one vector space's rows (numpy: the filter column may be a string view)
        if mask is not None and not mask.any():
            continue
        keep = slice(None) if mask is None else mask
        k = b.column(0).to_numpy(zero_copy_only=False).astype(np.int64)[keep]
        ks.append(k)
        ts.append(_ts_us(b.column(1))[keep])
        cr.append(_ts_us(b.column(2))[keep] if view.created_field else np.zeros(len(k), np.int64))
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
