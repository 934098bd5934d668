"""Export a profile table in the RecSys Challenge 2025 submission format.

`client_ids.npy`: 1-D int64; `embeddings.npy`: 2-D float16 (<= 2048 columns, no NaN/inf), same row order.
Works for any profile table (`user_profiles`, `user_profiles_ensemble`). The table is streamed twice through the
log-aware Arrow reader (pass 1: which (model_version, as_of) slices exist and their sizes; pass 2: the rows) into
memory-mapped .npy files, so memory stays bounded by one batch plus the output. With `clients` (the challenge's
`relevant_clients.npy`) the rows are exactly those clients in that order; a client without a profile gets the
mean profile of the exported slice, and the number of such fills is reported.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.tables import PROFILE_TABLES

log = get_logger("ubp.export")
MAX_COLUMNS = 2048
F16_MAX = float(np.finfo(np.float16).max)


def _slices(path: Path, version: int) -> dict[tuple[str, int], dict]:
    """(model_version, as_of in epoch us) -> {"rows", "created_at"} from one streamed pass over 3 small columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ubp.reader import iter_batches

    out: dict[tuple[str, int], dict] = {}
    for rb in iter_batches(path, version, columns=["model_version", "as_of", "created_at"], batch_size=65536):
        t = pa.Table.from_batches([rb])
        t = t.set_column(1, "as_of", pc.cast(t.column("as_of"), pa.int64()))
        t = t.set_column(2, "created_at", pc.cast(t.column("created_at"), pa.int64()))
        agg = t.group_by(["model_version", "as_of"]).aggregate([("created_at", "max"), ("created_at", "count")])
        for mv, a, c, n in zip(*(agg.column(k).to_pylist() for k in
                                 ("model_version", "as_of", "created_at_max", "created_at_count")), strict=True):
            s = out.setdefault((mv, a), {"rows": 0, "created_at": c})
            s["rows"] += n
            s["created_at"] = max(s["created_at"], c)
    return out


def _pick(slices: dict[tuple[str, int], dict], model_version: str | None, as_of: datetime | None,
          table: str) -> tuple[str, int]:
    cands = dict(slices)
    if model_version is not None:
        cands = {k: v for k, v in cands.items() if k[0] == model_version}
    if as_of is not None:
        us = int(as_of.replace(tzinfo=as_of.tzinfo or UTC).timestamp() * 1_000_000)
        cands = {k: v for k, v in cands.items() if k[1] == us}
    if not cands:
        have = sorted({(k[0], _iso(k[1])) for k in slices})
        raise UbpError(f"{table} has no rows for model_version={model_version} as_of={as_of}; it has {have}")
    # newest as-of first, then the most recently written
    return max(cands, key=lambda k: (k[1], cands[k]["created_at"]))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def _embedding_matrix(col) -> np.ndarray:
    """list<float> Arrow column -> [n, d] float32 (every row must have the same length)."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    offsets = col.offsets.to_numpy()
    lens = np.diff(offsets)
    if len(lens) and (lens != lens[0]).any():
        raise UbpError(f"embeddings of different lengths in one export ({sorted(set(lens.tolist()))[:5]})")
    d = int(lens[0]) if len(lens) else 0
    vals = col.values.to_numpy(zero_copy_only=False)[offsets[0]: offsets[-1]]
    return vals.astype(np.float32, copy=False).reshape(len(lens), d)  # [n*d] -> [n, d]


def export_challenge(settings: Settings, out: str | Path, table: str = "user_profiles",
                     clients: str | Path | None = None, model_version: str | None = None,
                     as_of: datetime | None = None, batch_size: int = 16384) -> dict:
    """Write `client_ids.npy` + `embeddings.npy` for one (model_version, as_of) slice of a profile table."""
    import pyarrow.compute as pc

    from ubp.reader import iter_batches, table_version

    if table not in PROFILE_TABLES:
        raise UbpError(f"--table must be one of {', '.join(PROFILE_TABLES)}, not {table!r}")
    path = settings.table_path(table)
    version = table_version(path)
    slices = _slices(path, version)
    if not slices:
        raise UbpError(f"{table} is empty: nothing to export")
    mv, as_of_us = _pick(slices, model_version, as_of, table)
    n_slice = slices[(mv, as_of_us)]["rows"]
    filt = (pc.field("model_version") == mv) & (pc.field("as_of").cast("int64") == as_of_us)

    wanted = None
    if clients is not None:
        wanted = np.load(Path(clients), allow_pickle=False)
        if wanted.ndim != 1 or not np.issubdtype(wanted.dtype, np.integer):
            raise UbpError(f"{clients}: expected a 1-D integer array of client ids, got {wanted.dtype} {wanted.shape}")
        wanted = wanted.astype(np.int64)
        if len(np.unique(wanted)) != len(wanted):
            raise UbpError(f"{clients}: client ids are not unique")
        order = np.argsort(wanted, kind="stable")
        sorted_ids = wanted[order]
    n_out = len(wanted) if wanted is not None else n_slice

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp_ids, tmp_emb = out / ".client_ids.npy.tmp", out / ".embeddings.npy.tmp"
    ids_mm = emb_mm = None
    dim = None
    filled = np.zeros(n_out, dtype=bool)
    total = None
    n_rows, clipped, row = 0, 0, 0
    for rb in iter_batches(path, version, columns=["client_id", "embedding"], batch_size=batch_size, filter=filt):
        cid = rb.column("client_id").to_numpy(zero_copy_only=False).astype(np.int64)
        emb = _embedding_matrix(rb.column("embedding"))
        if dim is None:
            dim = emb.shape[1]
            if not 0 < dim <= MAX_COLUMNS:
                raise UbpError(f"{table} embeddings have {dim} columns; the challenge format allows 1..{MAX_COLUMNS}")
            ids_mm = np.lib.format.open_memmap(tmp_ids, mode="w+", dtype=np.int64, shape=(n_out,))
            emb_mm = np.lib.format.open_memmap(tmp_emb, mode="w+", dtype=np.float16, shape=(n_out, dim))
            total = np.zeros(dim, dtype=np.float64)
        elif emb.shape[1] != dim:
            raise UbpError(f"{table}: embeddings of {dim} and {emb.shape[1]} columns in one slice")
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            raise UbpError(f"{table}: {int(bad.sum())} profiles contain NaN/inf (e.g. client {int(cid[bad][0])})")
        clipped += int((np.abs(emb) > F16_MAX).sum())
        emb16 = np.clip(emb, -F16_MAX, F16_MAX).astype(np.float16)
        total += emb.sum(axis=0, dtype=np.float64)
        n_rows += len(cid)
        if wanted is None:
            ids_mm[row: row + len(cid)] = cid
            emb_mm[row: row + len(cid)] = emb16
            row += len(cid)
        else:
            pos = np.searchsorted(sorted_ids, cid)
            pos = np.minimum(pos, len(sorted_ids) - 1)
            hit = sorted_ids[pos] == cid if len(sorted_ids) else np.zeros(len(cid), bool)
            dest = order[pos[hit]]
            emb_mm[dest] = emb16[hit]
            filled[dest] = True
    if dim is None:
        raise UbpError(f"{table} has no rows for {mv} / {_iso(as_of_us)}")
    n_filled = 0
    mean = (total / max(n_rows, 1)).astype(np.float32)
    if wanted is not None:
        ids_mm[:] = wanted
        missing = ~filled
        n_filled = int(missing.sum())
        emb_mm[missing] = np.clip(mean, -F16_MAX, F16_MAX).astype(np.float16)
    ids_mm.flush()
    emb_mm.flush()
    del ids_mm, emb_mm
    os.replace(tmp_ids, out / "client_ids.npy")
    os.replace(tmp_emb, out / "embeddings.npy")
    info = {"stage": "export", "rows": {"client_ids": int(n_out), table: int(n_rows)}, "table": table,
            "table_version": version, "model_version": mv, "as_of": _iso(as_of_us), "columns": int(dim),
            "filled_with_mean": n_filled, "clipped_to_float16": clipped, "out": str(out),
            "fill": "mean profile of the exported slice" if wanted is not None else None}
    (out / "export.json").write_text(json.dumps(info, indent=2))
    log.info("exported %d rows x %d cols from %s (%s, as_of %s) to %s; %d clients filled with the mean profile",
             n_out, dim, table, mv, info["as_of"], out, n_filled)
    return info
