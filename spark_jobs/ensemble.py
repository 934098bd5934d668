"""Ensemble profile: load each member's user vectors, transform each block, concatenate, fill, cast.

As in the seed solution (RecSys Challenge 2025, 2nd place), by the recipe in `ubp/ensemble_recipe.toml`: statistics
go through a uniform quantile transform only (no L2, no PCA), small members are L2-normalised per row, large ones
centred and reduced with PCA, each block scaled by its weight; users a member does not cover get that member's mean
row and a `has_<member>` indicator column; the result is float16 with at most 2048 columns.

Members (each skipped with a warning when its table is missing):
- `gru`: gold `user_profiles` (the served GRU-AE member's current version, latest as-of); `gru_<member>`: another
  user-model member's rows of gold `user_member_profiles` (its own current version, e.g. `gru_week_all`, or a
  next-event transformer's, `gru_next_sku`);
- `aggregates`: gold `user_aggregates` through a quantile transform;
- `factors`: the ALS member (`ubp.tables.USER_FACTORS`);
- `stats`: the seed's statistics beyond the aggregates (gold `user_stats`, `spark_jobs/stats.py`), quantile only;
- `text`: mean MiniLM embedding of the texts of the user's recent items (gold `user_text`,
  `spark_jobs/text_profile.py`), PCA;
- `items`: mean of the item vectors (gold `item_vectors`) of the user's most recent skus (`user_sequences.sku_raw`).

Two builds of the same rows: `combine` holds the members in memory (evaluation-sized populations, `ubp evaluate`);
`build_streamed` (the stage) lets Spark read and join the members, fits each transform on a hashed sample of at
most `fit_rows` users in the driver, and builds every row per Arrow batch on the executors with the same
`assemble`, so no process holds users x columns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ubp.log import get_logger

log = get_logger(__name__)

MAX_COLUMNS = 2048
FLOAT16_MAX = 65504.0
RECIPE_FILE = Path(__file__).resolve().parents[1] / "ubp" / "ensemble_recipe.toml"
TRANSFORMS = ("quantile", "row_norm", "pca", "none")


@dataclass(frozen=True)
class MemberSpec:
    """How one member enters the ensemble (see ubp/ensemble_recipe.toml)."""

    transform: str = "row_norm"
    weight: float = 1.0
    pca_dim: int = 128
    enabled: bool = True


@dataclass(frozen=True)
class Recipe:
    members: dict[str, MemberSpec]
    max_columns: int = MAX_COLUMNS
    indicators: bool = True

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(n for n, m in self.members.items() if m.enabled)

    def spec(self, name: str) -> MemberSpec:
        """A member's spec; one not in the recipe (e.g. `gru_small` in an evaluation) is row-normalised."""
        return self.members.get(name, MemberSpec())

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"max_columns": self.max_columns, "indicators": self.indicators,
                "members": {n: asdict(m) for n, m in self.members.items()}}


def load_recipe(path: str | Path | None = None) -> Recipe:
    """The merge recipe from a TOML file (default: the one shipped in ubp/); a one-line error for a bad one."""
    import tomllib

    from ubp.errors import UbpError

    path = Path(path or RECIPE_FILE)
    try:
        raw = tomllib.loads(path.read_text())
        members = {}
        for name, spec in raw.get("members", {}).items():
            members[name] = MemberSpec(**spec)
            if members[name].transform not in TRANSFORMS:
                raise ValueError(f"member {name}: transform must be one of {TRANSFORMS}")
        return Recipe(members, int(raw.get("max_columns", MAX_COLUMNS)), bool(raw.get("indicators", True)))
    except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise UbpError(f"bad ensemble recipe {path}: {' '.join(str(exc).split())}") from exc


MEMBERS: tuple[str, ...] = load_recipe().enabled  # the default members, in recipe order


@dataclass
class Member:
    """One member's users and vectors as loaded (the recipe transforms them), rows aligned with client_ids (sorted,
    unique)."""

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


@dataclass
class BlockTransform:
    """A member's fitted transform (recipe `transform`), stored with the ensemble version and applied in row
    chunks: "quantile" keeps per-column quantiles (`a` [q, d]) and their references (`b` [q]); "pca" the mean
    (`b` [d]) and components (`a` [k, d]); weight scales the block."""

    kind: str
    weight: float = 1.0
    a: np.ndarray | None = None
    b: np.ndarray | None = None

    def apply(self, x: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        return np.concatenate([self._apply(x[i:i + chunk]) for i in range(0, len(x), chunk)]) if len(x) else \
            np.zeros((0, self.width(x.shape[1])), np.float32)

    def width(self, d: int) -> int:
        return int(self.a.shape[0]) if self.kind == "pca" else d

    def _apply(self, x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(x, dtype=np.float32))
        if self.kind == "quantile":
            q, ref = self.a, self.b
            out = np.empty_like(x)
            for j in range(x.shape[1]):  # sklearn's uniform output: mean of the forward and backward interpolation
                out[:, j] = 0.5 * (np.interp(x[:, j], q[:, j], ref) - np.interp(-x[:, j], -q[::-1, j], -ref[::-1]))
            x = out - 0.5
        elif self.kind == "pca":
            x = l2_normalise((x - self.b) @ self.a.T)
        elif self.kind == "row_norm":
            x = l2_normalise(x)
        return (x * self.weight).astype(np.float32)

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": np.ascontiguousarray(getattr(self, k), dtype=np.float32)  # safetensors: C order
                for k in ("a", "b") if getattr(self, k) is not None}


def fit_block(x: np.ndarray, spec: MemberSpec, fit_rows: int = 100_000, seed: int = 0) -> BlockTransform:
    """Fit one member's transform on a sample of its rows."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    idx = _sample_rows(len(x), fit_rows, seed)
    if spec.transform == "quantile":
        from sklearn.preprocessing import QuantileTransformer

        qt = QuantileTransformer(n_quantiles=max(2, min(1000, len(idx))), output_distribution="uniform",
                                 subsample=len(idx), random_state=seed).fit(x[idx])
        return BlockTransform("quantile", spec.weight, qt.quantiles_.astype(np.float32),
                              qt.references_.astype(np.float32))
    if spec.transform == "pca" and x.shape[1] > spec.pca_dim:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(spec.pca_dim, len(idx)), random_state=seed).fit(x[idx])
        return BlockTransform("pca", spec.weight, pca.components_.astype(np.float32), pca.mean_.astype(np.float32))
    return BlockTransform("row_norm" if spec.transform in ("pca", "row_norm") else "none", spec.weight)


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


def fit_member(x: np.ndarray, spec: MemberSpec, fit_rows: int = 100_000, seed: int = 0
               ) -> tuple[BlockTransform, np.ndarray]:
    """A member's fitted transform and its fill row (the mean transformed row), both from the same sample of at
    most `fit_rows` rows: what the streamed build fits in the driver before it applies them batch by batch."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    sample = x[_sample_rows(len(x), fit_rows, seed)]
    transform = fit_block(sample, spec, fit_rows=len(sample) + 1, seed=seed)
    d = transform.width(x.shape[1])
    mean = transform.apply(sample).mean(axis=0) if len(sample) else np.zeros(d, np.float32)
    return transform, mean.astype(np.float32)


def assemble(n: int, parts: list[tuple[np.ndarray, np.ndarray]], transforms: list[BlockTransform],
             means: list[np.ndarray], flags: list[bool], max_columns: int = MAX_COLUMNS) -> np.ndarray:
    """Ensemble rows of `n` users (float16): per member, `parts[i]` = (present [n] bool, raw values of the present
    users [p, d]) -> its transformed block, absent users get `means[i]`; then a has_<member> column (1 = covered)
    for each member with `flags[i]`. The same function builds every row, in memory or per Arrow batch."""
    blocks = []
    for (present, values), transform, mean in zip(parts, transforms, means, strict=True):
        block = np.empty((n, len(mean)), dtype=np.float32)  # [n, width]
        if len(values):
            block[present] = transform.apply(values)
        block[~present] = mean
        blocks.append(block)
    blocks += [present.astype(np.float32)[:, None] for (present, _), flag in zip(parts, flags, strict=True) if flag]
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32)  # [n, columns]
    if x.shape[1] > max_columns:
        raise ValueError(f"ensemble has {x.shape[1]} columns, more than {max_columns}: set a PCA width per member")
    if not np.isfinite(x).all():
        raise ValueError("ensemble has NaN/inf values")
    return np.clip(x, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def layout_of(names: list[str], widths: list[int], versions: list[str], filled: list[int], n: int,
              transforms: list[BlockTransform], flags: list[bool]) -> dict:
    """Each member's column range, version, filled / covered users, transform and weight, and where its has_<member>
    column is (members with a flag, after every block)."""
    layout, start = {}, 0
    for name, width, version, fill, t in zip(names, widths, versions, filled, transforms, strict=True):
        layout[name] = {"start": start, "width": width, "version": version, "filled": fill, "covered": n - fill,
                        "transform": t.kind, "weight": t.weight}
        start += width
    for name, flag in zip(names, flags, strict=True):
        if flag:
            layout[name]["indicator_column"] = start
            start += 1
    return layout


def combine(
    members: list[Member],
    client_ids: np.ndarray | None = None,
    pca: dict[str, int] | None = None,
    recipe: Recipe | None = None,
    fit_rows: int = 100_000,
    seed: int = 0,
    fitted: dict[str, BlockTransform] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Concatenate members held in memory into one float16 matrix, each block through its recipe transform.

    `client_ids` defaults to the union of the members' users. `pca[name]` overrides a member's transform with
    PCA to that width. Users a member lacks get its mean row (and, with `recipe.indicators`, a `has_<member>`
    column at the end, 1 = covered). `fitted` (a dict) receives each member's fitted transform. Returns
    (client_ids, float16 matrix, layout): each member's column range, version, filled users and transform.
    The stage builds the same rows streamed (`build_streamed`); this is for evaluation-sized populations.
    """
    recipe = recipe or load_recipe()
    if not members:
        raise ValueError("no ensemble members")
    if client_ids is None:
        client_ids = np.unique(np.concatenate([m.client_ids for m in members]))
    client_ids = np.asarray(client_ids, dtype=np.int64)
    transforms, means, parts = [], [], []
    for m in members:
        transform, mean = fit_member(m.values, _spec(recipe, m.name, pca), fit_rows=fit_rows, seed=seed)
        if fitted is not None:
            fitted[m.name] = transform
        pos = np.clip(np.searchsorted(m.client_ids, client_ids), 0, max(len(m.client_ids) - 1, 0))
        present = (m.client_ids[pos] == client_ids) if len(m.client_ids) else np.zeros(len(client_ids), bool)
        transforms.append(transform)
        means.append(mean)
        parts.append((present, m.values[pos[present]]))
    filled = [int((~present).sum()) for present, _ in parts]
    flags = [bool(f) and recipe.indicators for f in filled]
    x16 = assemble(len(client_ids), parts, transforms, means, flags, recipe.max_columns)
    layout = layout_of([m.name for m in members], [len(mu) for mu in means], [m.version for m in members], filled,
                       len(client_ids), transforms, flags)
    return client_ids, x16, layout


def _spec(recipe: Recipe, name: str, pca: dict[str, int] | None) -> MemberSpec:
    from dataclasses import replace

    spec = recipe.spec(name)
    return replace(spec, transform="pca", pca_dim=int(pca[name])) if pca and name in pca else spec


# ------------------------------------------------------------------------------------------------------------
# streamed build (the stage): Spark reads and joins the members, the driver fits each member's transform on a
# hashed sample, and every row is built per Arrow batch on the executors by `assemble` (nothing users x columns
# is held in one process)
# ------------------------------------------------------------------------------------------------------------
SAMPLE_BUCKETS = 1_000_000


@dataclass
class MemberFrame:
    """One member as a Spark DataFrame (client_id bigint, vec array<float>, n_events bigint), one row per user."""

    name: str
    version: str
    as_of: datetime | None
    df: Any
    rows: int
    dim: int


def hash_sample(df: Any, rows: int, total: int) -> Any:
    """A stable sample of about `rows` of the `total` rows, by a hash of client_id (the same users for every
    member); all of them when `rows >= total`."""
    from pyspark.sql import functions as F

    fraction = rows / max(total, 1)
    if fraction >= 1.0:
        return df
    bucket = F.pmod(F.xxhash64(F.col("client_id")), F.lit(SAMPLE_BUCKETS))
    return df.filter(bucket < F.lit(int(round(fraction * SAMPLE_BUCKETS))))


def member_frame(spark: Any, settings, name: str, as_of: datetime | None = None) -> MemberFrame:
    """Member `name` at `as_of` as a DataFrame: the selected rows (`select_member`), the newest per user. The
    opt-in `items` member is computed in the driver (it holds the item table) and handed over through Arrow."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from ubp.spark_jobs.vectors import float_lists

    if name == "items":
        m = load_item_member(settings, as_of)
        n, d = m.values.shape
        table = pa.table({"client_id": m.client_ids, "vec": float_lists(m.values),
                          "n_events": m.n_events if m.n_events is not None else np.zeros(n, np.int64)})
        df = spark.createDataFrame(table.to_pandas(), "client_id bigint, vec array<float>, n_events bigint")
        return MemberFrame(name, m.version, m.as_of, df, n, d)
    sel = select_member(settings, name, as_of)
    at = sel.at.astimezone(UTC).replace(tzinfo=None)  # the session time zone is UTC
    raw = (spark.read.format("delta").load(str(sel.path))
           .filter((F.col(sel.version_col) == sel.version) & (F.col("as_of") <= F.lit(at))))
    if "space_id" in raw.columns:  # one member = one vector space; never concatenate across spaces
        spaces = sorted(r[0] for r in raw.select("space_id").distinct().collect())
        if len(spaces) > 1:
            from ubp.spaces import require_same_space

            require_same_space(f"ensemble member from {sel.path.name}", *spaces)
    newest = F.max_by(F.struct(F.col(sel.vec_col).cast("array<float>").alias("vec"),
                               F.col("n_events").cast("bigint").alias("n_events")), F.col("as_of"))
    df = raw.groupBy("client_id").agg(newest.alias("r")).select("client_id", "r.vec", "r.n_events")
    rows = df.count()
    dim = int(df.select(F.size("vec")).first()[0]) if rows else 0
    return MemberFrame(name, sel.label, sel.at, df, rows, dim)


@dataclass
class StreamedBuild:
    """A fitted ensemble over joined member frames: `layout`, `transforms` (per member), and `rows()` to build
    every user's row on the executors."""

    frames: list[MemberFrame]
    joined: Any  # client_id, v0..vk (null = the member lacks the user), n_events
    users: int
    transforms: list[BlockTransform]
    means: list[np.ndarray]
    flags: list[bool]
    max_columns: int
    layout: dict

    @property
    def columns(self) -> int:
        return sum(len(m) for m in self.means) + sum(self.flags)

    def _row_fn(self, rotation: np.ndarray | None):
        import pyarrow as pa
        from ubp.spark_jobs.vectors import float_lists, list_rows

        dims = [f.dim for f in self.frames]
        transforms, means, flags, max_columns = self.transforms, self.means, self.flags, self.max_columns

        def rows(batches):
            for b in batches:
                parts = [list_rows(b.column(f"v{i}"), d) for i, d in enumerate(dims)]
                x16 = assemble(b.num_rows, parts, transforms, means, flags, max_columns)  # [n, columns]
                if rotation is not None:
                    x16 = (x16.astype(np.float32) @ rotation).astype(np.float16)
                yield pa.RecordBatch.from_arrays([b.column("client_id"), float_lists(x16), b.column("n_events")],
                                                 ["client_id", "embedding", "n_events"])

        return rows

    def rows(self, rotation: np.ndarray | None = None) -> Any:
        """DataFrame (client_id, embedding array<float> of float16 values, n_events), built per Arrow batch."""
        return self.joined.mapInArrow(self._row_fn(rotation),
                                      "client_id bigint, embedding array<float>, n_events bigint")

    def sample(self, max_users: int) -> tuple[np.ndarray, np.ndarray]:
        """(client_ids sorted, float16 rows) of a hashed sample of about `max_users` users, built in the driver by
        the same function (what a new build is aligned on)."""
        import pyarrow as pa
        from ubp.spark_jobs.vectors import list_rows

        t = hash_sample(self.joined, max_users, self.users).toArrow()
        if t.num_rows == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.columns), np.float16)
        out = pa.Table.from_batches(list(self._row_fn(None)(t.combine_chunks().to_batches())))
        ids = out.column("client_id").to_numpy()
        _, x = list_rows(out.column("embedding"), self.columns)
        order = np.argsort(ids)
        return ids[order], x[order].astype(np.float16)


def build_streamed(frames: list[MemberFrame], recipe: Recipe | None = None, pca: dict[str, int] | None = None,
                   fit_rows: int = 100_000, seed: int = 0) -> StreamedBuild:
    """Fit every member's transform and fill row on a hashed sample of at most ~`fit_rows` of its users (the
    driver holds only that sample), join the members on client_id (full outer: the union of their users) and
    plan the rows. Same rows as `combine` when every member has at most `fit_rows` users."""
    from pyspark.sql import functions as F
    from ubp.spark_jobs.vectors import list_rows

    recipe = recipe or load_recipe()
    if not frames:
        raise ValueError("no ensemble members")
    transforms, means = [], []
    for f in frames:
        t = hash_sample(f.df, fit_rows, f.rows).select("client_id", "vec").toArrow()
        order = np.argsort(t.column("client_id").to_numpy())  # sorted by user, as `combine` sees a member
        _, values = list_rows(t.column("vec"), f.dim)
        transform, mean = fit_member(values[order], _spec(recipe, f.name, pca), fit_rows=fit_rows, seed=seed)
        transforms.append(transform)
        means.append(mean)
        log.info("member %s: %d users x %d columns (%s), %s fitted on %d", f.name, f.rows, f.dim, f.version,
                 transform.kind, len(order))
    joined = frames[0].df.select("client_id", F.col("vec").alias("v0"), F.col("n_events").alias("n0"))
    for i, f in enumerate(frames[1:], 1):
        joined = joined.join(f.df.select("client_id", F.col("vec").alias(f"v{i}"), F.col("n_events").alias(f"n{i}")),
                             "client_id", "full_outer")
    k = len(frames)
    # n_events: the first member that has the user (GRU, then aggregates, ...)
    joined = joined.select("client_id", *[f"v{i}" for i in range(k)],
                           F.coalesce(*[F.col(f"n{i}") for i in range(k)], F.lit(0).cast("bigint")).alias("n_events"))
    users = joined.count()
    filled = [users - f.rows for f in frames]
    flags = [bool(n) and recipe.indicators for n in filled]
    layout = layout_of([f.name for f in frames], [len(m) for m in means], [f.version for f in frames], filled, users,
                       transforms, flags)
    build = StreamedBuild(frames, joined, users, transforms, means, flags, recipe.max_columns, layout)
    if build.columns > recipe.max_columns:
        raise ValueError(f"ensemble has {build.columns} columns, more than {recipe.max_columns}: set a PCA width "
                         "per member")
    return build


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
    """Registry kind behind a user-model ensemble member name: `gru` -> the served member, `gru_<member>` -> that
    one (a next-event transformer member such as `gru_next_sku` too)."""
    from ubp.registry import USER_KIND, user_kind

    return USER_KIND if name == "gru" else user_kind(name.removeprefix("gru_"))


@dataclass(frozen=True)
class Selection:
    """Where a member's rows are and which of them to read point-in-time: rows of `path` with
    `version_col == version` and `as_of <= at`, the newest per user, vectors in `vec_col`; `label` is the member's
    version as the ensemble records it."""

    name: str
    path: Path
    vec_col: str
    version_col: str
    version: str
    at: datetime
    label: str


def select_profile_member(settings, table: str = "user_profiles", name: str = "gru",
                          model_version: str | None = None, as_of: datetime | None = None) -> Selection:
    """A profile table (`user_profiles`, `user_member_profiles` or `user_profiles_ensemble`) as a member. For
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
    return Selection(name, path, "embedding", "model_version", version, at, version)


def _select_features(settings, table: str, name: str, as_of: datetime | None = None) -> Selection:
    """A feature table (`user_aggregates`, `user_stats`: client_id, as_of, n_events, features,
    feature_names_version) as a member: the latest build at or before `as_of`."""
    path = settings.table_path(table)
    if not _exists(path):
        raise FileNotFoundError(f"{table}: no table at {path}")
    version, at = _pick(feature_versions(path), None, as_of)
    return Selection(name, path, "features", "feature_names_version", version, at, f"{name}-{version}")


def feature_versions(path: Path) -> list[tuple[str, datetime]]:
    """Distinct (feature_names_version, as_of) pairs in a feature table, by as_of."""
    from ubp.reader import iter_batches

    pairs: set[tuple[str, datetime]] = set()
    for batch in iter_batches(path, columns=["feature_names_version", "as_of"], batch_size=65536):
        t = batch.to_pandas().drop_duplicates()
        pairs.update((str(v), _to_utc(a)) for v, a in zip(t["feature_names_version"], t["as_of"], strict=True))
    return sorted(pairs, key=lambda p: (p[1], p[0]))


def stats_path(settings) -> Path:
    return settings.table_path("user_stats")


def factors_path(settings) -> Path:
    return settings.table_path("user_factors")


def text_path(settings) -> Path:
    return settings.table_path("user_text")


def _select_built(settings, table: str, name: str, as_of: datetime | None = None) -> Selection:
    """A member table the ensemble stage builds (`user_factors`, `user_text`: client_id, embedding, model_version,
    as_of, n_events): the latest build at or before `as_of`."""
    path = settings.table_path(table)
    if not _exists(path):
        raise FileNotFoundError(f"{table}: no table at {path}")
    version, at = _pick(_versions(path), None, as_of)
    return Selection(name, path, "embedding", "model_version", version, at, version)


def select_member(settings, name: str, as_of: datetime | None = None) -> Selection:
    """The rows member `name` contributes at `as_of` (every member but `items`, which is computed)."""
    if name.startswith("gru_"):
        return select_profile_member(settings, "user_member_profiles", name, as_of=as_of)
    if name == "gru":
        return select_profile_member(settings, "user_profiles", "gru", as_of=as_of)
    if name in ("aggregates", "stats"):
        return _select_features(settings, f"user_{name}", name, as_of)
    if name == "factors":
        return _select_built(settings, "user_factors", "factors", as_of)
    if name == "text":
        return _select_built(settings, "user_text", "text", as_of)
    raise KeyError(name)


def read_member(sel: Selection) -> Member:
    """A selected member's rows in memory (sorted by client_id)."""
    cid, x, nev = _read_vectors(
        sel.path, sel.vec_col,
        lambda df: (df[sel.version_col] == sel.version).to_numpy() & _at(df["as_of"], sel.at),
    )
    return Member(sel.name, cid, x, sel.label, sel.at, nev)  # the recipe transforms it


def load_profile_member(settings, table: str = "user_profiles", name: str = "gru", model_version: str | None = None,
                        as_of: datetime | None = None) -> Member:
    """`select_profile_member`, read into memory."""
    return read_member(select_profile_member(settings, table, name, model_version, as_of))


def load_aggregates_member(settings, as_of: datetime | None = None) -> Member:
    return read_member(_select_features(settings, "user_aggregates", "aggregates", as_of))


def load_stats_member(settings, as_of: datetime | None = None) -> Member:
    return read_member(_select_features(settings, "user_stats", "stats", as_of))


def load_factors_member(settings, as_of: datetime | None = None) -> Member:
    return read_member(_select_built(settings, "user_factors", "factors", as_of))


def load_text_member(settings, as_of: datetime | None = None) -> Member:
    return read_member(_select_built(settings, "user_text", "text", as_of))


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
    return Member("items", cid[order], np.stack(rows)[order], f"{version}-recent{recent}",
                  seq_as_of, np.asarray(nev, dtype=np.int64)[order])


def _available(names: tuple[str, ...], load: Any, rows: Any) -> list:
    """`load(name)` for each name; a member whose table is missing, has no rows for the as-of (`LookupError`) or has
    no users (`rows(member) == 0`) is skipped with a warning."""
    out = []
    for name in names:
        try:
            member = load(name)
        except (FileNotFoundError, LookupError) as exc:
            log.warning("ensemble member %s skipped: %s", name, exc)
            continue
        if rows(member) == 0:
            log.warning("ensemble member %s skipped: no users", name)
            continue
        out.append(member)
    return out


def load_members(settings, as_of: datetime | None = None, names: tuple[str, ...] = MEMBERS) -> list[Member]:
    """Every available member at `as_of` (None: each member's latest), in memory; missing ones skipped with a
    warning. Besides `MEMBERS`, a name `gru_<member>` loads that GRU-AE member's profiles."""
    out = _available(names, lambda name: load_item_member(settings, as_of) if name == "items" else
                     read_member(select_member(settings, name, as_of)), lambda m: len(m.client_ids))
    for m in out:
        log.info("member %s: %d users x %d columns (%s)", m.name, len(m.client_ids), m.values.shape[1], m.version)
    return out


def member_frames(spark: Any, settings, as_of: datetime | None = None, names: tuple[str, ...] = MEMBERS
                  ) -> list[MemberFrame]:
    """`load_members` as Spark DataFrames (`member_frame`), for the streamed build."""
    return _available(names, lambda name: member_frame(spark, settings, name, as_of), lambda f: f.rows)
