"""Ensemble profile: load each member's user vectors, normalise, (optionally) reduce, concatenate, fill, cast.

As in the seed solution (RecSys Challenge 2025, 2nd place): every member is L2-normalised per row (statistics go
through a uniform QuantileTransformer first), large members are reduced with PCA, members are concatenated, users a
member does not cover get that member's mean row, and the result is cast to float16 with at most 2048 columns.

Members (each skipped with a warning when its table is missing):
- `gru`: gold `user_profiles` (the served GRU-AE member's current version, latest as-of); `gru_<member>`: another
  GRU-AE member's rows of gold `user_member_profiles` (its own current version, e.g. `gru_week_all`);
- `aggregates`: gold `user_aggregates` through a quantile transform;
- `factors`: the ALS member (`ubp.tables.USER_FACTORS`);
- `items`: mean of the item vectors (gold `item_vectors`) of the user's most recent skus (`user_sequences.sku_raw`).

Scale limit (documented): members are read batch by batch through the log-aware `ubp.reader`, but the normalised
matrices are held in driver memory (users x columns float32 per member, float16 for the result), and the item table
is held whole. Quantile transform and PCA are fitted on a random sample of at most `fit_rows` rows. That suits
hundreds of thousands of users on one machine; beyond that, apply the fitted transforms in a Spark `mapInPandas`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ubp.log import get_logger

log = get_logger(__name__)

MEMBERS: tuple[str, ...] = ("gru", "aggregates", "factors", "items")
MAX_COLUMNS = 2048
FLOAT16_MAX = 65504.0


@dataclass
class Member:
    """One member's users and (already normalised) vectors, rows aligned with client_ids (sorted, unique)."""

    name: str
    client_ids: np.ndarray  # (n,) int64, sorted
    values: np.ndarray  # (n, d) float32
    version: str
    as_of: datetime | None = None
    n_events: np.ndarray | None = None  # (n,) int64 where known
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------------
# normalisation
# ------------------------------------------------------------------------------------------------------------
def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _sample_rows(n: int, fit_rows: int, seed: int) -> np.ndarray:
    if n <= fit_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))


def quantile_normalise(x: np.ndarray, fit_rows: int = 100_000, seed: int = 0) -> np.ndarray:
    """Uniform quantile transform per column (fitted on a sample), centred to [-0.5, 0.5], then L2 per row."""
    from sklearn.preprocessing import QuantileTransformer

    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    idx = _sample_rows(len(x), fit_rows, seed)
    qt = QuantileTransformer(n_quantiles=max(2, min(1000, len(idx))), output_distribution="uniform",
                             subsample=len(idx), random_state=seed)
    qt.fit(x[idx])
    return l2_normalise(qt.transform(x).astype(np.float32) - 0.5)


def pca_reduce(x: np.ndarray, dim: int, fit_rows: int = 100_000, seed: int = 0) -> np.ndarray:
    """PCA to `dim` components fitted on a sample, then L2 per row. No-op when x has <= dim columns."""
    from sklearn.decomposition import PCA

    if x.shape[1] <= dim:
        return x
    idx = _sample_rows(len(x), fit_rows, seed)
    dim = min(dim, len(idx))
    pca = PCA(n_components=dim, random_state=seed).fit(x[idx])
    return l2_normalise(pca.transform(x).astype(np.float32))


# ------------------------------------------------------------------------------------------------------------
# combining
# ------------------------------------------------------------------------------------------------------------
def align(member: Member, client_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """The member's rows for `client_ids` (sorted unique int64); absent users get the member's mean row.

    Returns (matrix, number of users filled).
    """
    pos = np.searchsorted(member.client_ids, client_ids)
    pos = np.clip(pos, 0, max(len(member.client_ids) - 1, 0))
    found = (len(member.client_ids) > 0) & (member.client_ids[pos] == client_ids) if len(member.client_ids) else \
        np.zeros(len(client_ids), dtype=bool)
    d = member.values.shape[1]
    mean = member.values.mean(axis=0) if len(member.values) else np.zeros(d, dtype=np.float32)
    out = np.empty((len(client_ids), d), dtype=np.float32)
    out[found] = member.values[pos[found]]
    out[~found] = mean
    return out, int((~found).sum())


def combine(
    members: list[Member],
    client_ids: np.ndarray | None = None,
    pca: dict[str, int] | None = None,
    pca_above: int = 256,
    pca_dim: int = 128,
    max_columns: int = MAX_COLUMNS,
    fit_rows: int = 100_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Concatenate members into one float16 matrix.

    `client_ids` defaults to the union of the members' users. PCA: `pca[name]` gives a member's target width; by
    default members wider than `pca_above` go to `pca_dim`. Returns (client_ids, float16 matrix, layout) where
    layout records each member's column range, version and how many users were filled.
    """
    if not members:
        raise ValueError("no ensemble members")
    if client_ids is None:
        client_ids = np.unique(np.concatenate([m.client_ids for m in members]))
    client_ids = np.asarray(client_ids, dtype=np.int64)
    blocks, layout, start = [], {}, 0
    for m in members:
        values = m.values
        target = (pca or {}).get(m.name, pca_dim if values.shape[1] > pca_above else None)
        if target and values.shape[1] > target:
            values = pca_reduce(values, target, fit_rows=fit_rows, seed=seed)
        reduced = Member(m.name, m.client_ids, values, m.version)
        block, filled = align(reduced, client_ids)
        blocks.append(block)
        layout[m.name] = {"start": start, "width": block.shape[1], "version": m.version, "filled": filled,
                          "covered": len(client_ids) - filled}
        start += block.shape[1]
    x = np.concatenate(blocks, axis=1)
    if x.shape[1] > max_columns:
        raise ValueError(f"ensemble has {x.shape[1]} columns, more than {max_columns}: set a PCA width per member")
    if not np.isfinite(x).all():
        raise ValueError("ensemble has NaN/inf values")
    x16 = np.clip(x, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    return client_ids, x16, layout


def ensemble_version(members: list[Member], params: dict) -> str:
    payload = json.dumps({"members": {m.name: m.version for m in members}, **params}, sort_keys=True, default=str)
    return "ensemble-" + hashlib.sha1(payload.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------------------
# loading members from the lakehouse (streamed through ubp.reader, filtered per batch)
# ------------------------------------------------------------------------------------------------------------
def _to_utc(ts) -> datetime | None:
    if ts is None:
        return None
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _us(series) -> np.ndarray:
    """A timestamp column as int64 epoch microseconds (naive values are UTC)."""
    import pandas as pd

    return pd.to_datetime(series, utc=True).dt.as_unit("us").astype("int64").to_numpy()


def _ts_us(at: datetime) -> int:
    import pandas as pd

    return int(pd.Timestamp(at).as_unit("us").value)


def _at(series, at: datetime) -> np.ndarray:
    """Vectorised `series <= at` for a timestamp column: point-in-time, nothing built after `at`."""
    return _us(series) <= _ts_us(at)


def _versions(path: Path) -> list[tuple[str, datetime]]:
    """Distinct (model_version, as_of) pairs in a profile-like table."""
    from ubp.reader import iter_batches

    seen: set[tuple[str, datetime]] = set()
    for batch in iter_batches(path, columns=["model_version", "as_of"], batch_size=65536):
        t = batch.to_pandas().drop_duplicates()
        seen.update((str(v), _to_utc(a)) for v, a in zip(t["model_version"], t["as_of"], strict=True))
    return sorted(seen, key=lambda p: (p[1], p[0]))


def _pick(pairs: list[tuple[str, datetime]], version: str | None, as_of: datetime | None) -> tuple[str, datetime]:
    """The (version, latest as_of <= `as_of`) to read; version None = the version of the latest such as_of.

    Rows are then read point-in-time: the newest row per user with as_of <= that as_of (incremental builds keep
    unchanged users' rows at an earlier as_of).
    """
    cands = [p for p in pairs if (version is None or p[0] == version) and (as_of is None or p[1] <= as_of)]
    if not cands:
        raise LookupError(f"no rows for model_version={version} with as_of <= {as_of}; available: {pairs[-5:]}")
    best = cands[-1]
    return best[0], best[1]


def _read_vectors(path: Path, vec_col: str, keep) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Stream rows passing `keep(batch_df) -> mask`; newest row (by as_of) per client_id; sorted by client_id.

    Returns (client_ids, vectors, n_events or None).
    """
    from ubp.reader import iter_batches

    ids, ats, vecs, nev = [], [], [], []
    seen: set[str] = set()
    for batch in iter_batches(path, batch_size=16384):
        df = batch.to_pandas()
        df = df[keep(df)]
        if df.empty:
            continue
        if "space_id" in df.columns:
            seen.update(df["space_id"].unique().tolist())
        ids.append(df["client_id"].to_numpy(np.int64))
        ats.append(_us(df["as_of"]))
        vecs.append(np.stack(df[vec_col].to_numpy()).astype(np.float32))
        if "n_events" in df.columns:
            nev.append(df["n_events"].to_numpy(np.int64))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), None
    if len(seen) > 1:  # one member = one vector space; never average or concatenate across spaces
        from ubp.spaces import require_same_space

        require_same_space(f"ensemble member from {Path(path).name}", *sorted(seen))
    cid, at = np.concatenate(ids), np.concatenate(ats)
    order = np.lexsort((at, cid))  # by client, then as_of: the last of each client is its newest row
    cid = cid[order]
    last = np.r_[cid[1:] != cid[:-1], True]
    x = np.concatenate(vecs)[order][last]
    n = np.concatenate(nev)[order][last] if nev else None
    return cid[last], x, n


def _exists(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def gru_kind(name: str) -> str:
    """Registry kind behind a GRU ensemble member name: `gru` -> the served member, `gru_<member>` -> that one."""
    from ubp.registry import USER_KIND, user_kind

    return USER_KIND if name == "gru" else user_kind(name.removeprefix("gru_"))


def load_profile_member(settings, table: str = "user_profiles", name: str = "gru", model_version: str | None = None,
                        as_of: datetime | None = None, normalise: bool = True) -> Member:
    """A profile table (`user_profiles` or `user_profiles_ensemble`) as a member: L2-normalised rows. For
    `user_profiles` the rows are one GRU-AE member's (`gru_kind(name)`): its current version, else its newest."""
    from ubp.registry import current_version, list_versions

    path = settings.table_path(table)
    if not _exists(path):
        raise FileNotFoundError(f"{table}: no table at {path}")
    pairs = _versions(path)
    if model_version is None and table in ("user_profiles", "user_member_profiles"):
        kind = gru_kind(name)
        cur = current_version(settings, kind)
        mine = set(list_versions(settings, kind))
        if cur is not None and any(v == cur for v, _ in pairs):
            model_version = cur
        elif mine:  # not promoted yet: the member's newest version in the table
            pairs = [p for p in pairs if p[0] in mine]
        elif name != "gru":
            raise LookupError(f"{table} has no rows of {kind} models")
    version, at = _pick(pairs, model_version, as_of)
    cid, x, nev = _read_vectors(
        path, "embedding",
        lambda df: (df["model_version"] == version).to_numpy() & _at(df["as_of"], at),
    )
    return Member(name, cid, l2_normalise(x) if normalise else x, version, at, nev)


def load_aggregates_member(settings, as_of: datetime | None = None, fit_rows: int = 100_000, seed: int = 0) -> Member:
    path = settings.table_path("user_aggregates")
    if not _exists(path):
        raise FileNotFoundError(f"user_aggregates: no table at {path}")
    from ubp.reader import iter_batches

    pairs: set[tuple[str, datetime]] = set()
    for batch in iter_batches(path, columns=["feature_names_version", "as_of"], batch_size=65536):
        t = batch.to_pandas().drop_duplicates()
        pairs.update((str(v), _to_utc(a)) for v, a in zip(t["feature_names_version"], t["as_of"], strict=True))
    version, at = _pick(sorted(pairs, key=lambda p: (p[1], p[0])), None, as_of)
    cid, x, nev = _read_vectors(
        path, "features",
        lambda df: (df["feature_names_version"] == version).to_numpy()
        & _at(df["as_of"], at),
    )
    return Member("aggregates", cid, quantile_normalise(x, fit_rows, seed), f"aggregates-{version}", at, nev)


def factors_path(settings) -> Path:
    return settings.table_path("user_factors")


def load_factors_member(settings, as_of: datetime | None = None) -> Member:
    path = factors_path(settings)
    if not _exists(path):
        raise FileNotFoundError(f"user_factors: no table at {path}")
    version, at = _pick(_versions(path), None, as_of)
    cid, x, nev = _read_vectors(
        path, "embedding",
        lambda df: (df["model_version"] == version).to_numpy() & _at(df["as_of"], at),
    )
    return Member("factors", cid, l2_normalise(x), version, at, nev)


def load_item_member(settings, as_of: datetime | None = None, recent: int = 20) -> Member:
    """Mean of the item vectors of the user's last `recent` distinct skus (from user_sequences.sku_raw)."""
    from ubp.reader import iter_batches
    from ubp.registry import current_version

    ipath, spath = settings.table_path("item_vectors"), settings.table_path("user_sequences")
    for p in (ipath, spath):
        if not _exists(p):
            raise FileNotFoundError(f"no table at {p}")
    pairs = _versions(ipath)
    cur = current_version(settings, "item")
    version = cur if cur is not None and any(v == cur for v, _ in pairs) else pairs[-1][0]
    skus, vecs = [], []
    seen: set[str] = set()
    for batch in iter_batches(ipath, batch_size=65536):
        df = batch.to_pandas()
        df = df[df["model_version"] == version]
        if "space_id" in df.columns:
            seen.update(df["space_id"].unique().tolist())
        skus.append(df["sku"].to_numpy(np.int64))
        vecs.append(np.stack(df["vector"].to_numpy()).astype(np.float32) if len(df) else None)
    if len(seen) > 1:
        from ubp.spaces import require_same_space

        require_same_space("ensemble item member", *sorted(seen))
    sku = np.concatenate(skus)
    table = np.concatenate([v for v in vecs if v is not None])
    order = np.argsort(sku)
    sku, table = sku[order], table[order]
    ids, rows, nev, seq_as_of = [], [], [], None
    for batch in iter_batches(spath, columns=["client_id", "as_of", "n_events", "sku_raw"], batch_size=8192):
        df = batch.to_pandas()  # one row per user (the silver table's contract)
        if as_of is not None:
            df = df[_at(df["as_of"], as_of)]
        for cid, at, n, seq in zip(df["client_id"], df["as_of"], df["n_events"], df["sku_raw"], strict=True):
            seq = np.asarray(seq, dtype=np.int64)
            seq = seq[seq >= 0][::-1]  # newest first
            _, first = np.unique(seq, return_index=True)
            seq = seq[np.sort(first)][:recent]
            pos = np.clip(np.searchsorted(sku, seq), 0, len(sku) - 1)
            hit = pos[sku[pos] == seq] if len(seq) else pos[:0]
            if len(hit) == 0:
                continue
            ids.append(int(cid))
            rows.append(table[hit].mean(axis=0))
            nev.append(int(n))
            seq_as_of = _to_utc(at)
    if not ids:
        return Member("items", np.zeros(0, np.int64), np.zeros((0, table.shape[1]), np.float32), version)
    cid = np.asarray(ids, dtype=np.int64)
    order = np.argsort(cid)
    return Member("items", cid[order], l2_normalise(np.stack(rows)[order]), f"{version}-recent{recent}",
                  seq_as_of, np.asarray(nev, dtype=np.int64)[order])


LOADERS = {
    "gru": lambda s, as_of, **kw: load_profile_member(s, "user_profiles", "gru", as_of=as_of),
    "aggregates": lambda s, as_of, **kw: load_aggregates_member(s, as_of, **kw),
    "factors": lambda s, as_of, **kw: load_factors_member(s, as_of),
    "items": lambda s, as_of, **kw: load_item_member(s, as_of),
}


def load_members(settings, as_of: datetime | None = None, names: tuple[str, ...] = MEMBERS,
                 fit_rows: int = 100_000) -> list[Member]:
    """Every available member at `as_of` (None: each member's latest); missing ones skipped with a warning.
    Besides `MEMBERS`, a name `gru_<member>` loads that GRU-AE member's profiles."""
    out = []
    for name in names:
        try:
            kw = {"fit_rows": fit_rows} if name == "aggregates" else {}
            if name.startswith("gru_"):
                member = load_profile_member(settings, "user_member_profiles", name, as_of=as_of)
            else:
                member = LOADERS[name](settings, as_of, **kw)
        except (FileNotFoundError, LookupError) as exc:
            log.warning("ensemble member %s skipped: %s", name, exc)
            continue
        if len(member.client_ids) == 0:
            log.warning("ensemble member %s skipped: no users", name)
            continue
        log.info("member %s: %d users x %d columns (%s)", name, len(member.client_ids), member.values.shape[1],
                 member.version)
        out.append(member)
    return out
