"""Stages `ensemble` (gold user_profiles_ensemble), its factorisation member `factorize` (gold user_factors), its
statistics member `compute_stats` (gold user_stats) and its text member `compute_text` (gold user_text).

The ensemble combines every available member (GRU profiles, aggregates, factors, statistics, item-vector and text
pooling, as the recipe enables them) at one as-of;
`evaluate` builds it in its own namespace through the same function.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger

log = get_logger(__name__)


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _spark_ts(ts: datetime) -> datetime:
    """Spark literals want naive UTC datetimes (the session time zone is UTC)."""
    return _utc(ts).replace(tzinfo=None)


def _read_bronze(settings: Settings):
    from ubp.spark_jobs.session import get_spark

    spark = get_spark(settings)
    for name in ("events", "products"):
        if not (settings.table_path(name) / "_delta_log").is_dir():
            raise UbpError(f"no bronze {name} table at {settings.table_path(name)}: run `ubp ingest` first")
    events = spark.read.format("delta").load(str(settings.table_path("events")))
    products = spark.read.format("delta").load(str(settings.table_path("products")))
    return spark, events, products


# ------------------------------------------------------------------------------------------------------------
# factorisation member
# ------------------------------------------------------------------------------------------------------------
def factorize(settings: Settings, as_of: datetime | None = None, method: str = "svd", rank: int = 64,
              max_iter: int = 10) -> dict:
    """Factorisation member (user x category, user x url) at `as_of` (None: the latest event) -> `user_factors`.

    method "svd" (truncated SVD in the driver, default) or "als" (Spark MLlib implicit ALS, distributed).
    Idempotent: if the table already holds this (parameters, as_of) version, nothing is recomputed.
    """
    from pyspark.sql import functions as F

    from ubp.spark_jobs.ensemble import _exists, _versions, factors_path
    from ubp.spark_jobs.factorization import ALSConfig, model_version, user_factors

    if method not in ("svd", "als"):
        raise UbpError(f"unknown factorisation method {method!r}: use svd or als")
    spark, events, products = _read_bronze(settings)
    if as_of is None:
        last = events.agg(F.max("timestamp")).first()[0]
        if last is None:
            raise UbpError("the events table is empty")
        as_of = last
    as_of = _utc(as_of)
    config = ALSConfig(method=method, rank=rank, max_iter=max_iter)
    version = model_version(config, as_of)
    path = factors_path(settings)
    if _exists(path) and any(v == version for v, _ in _versions(path)):
        n = spark.read.format("delta").load(str(path)).filter(F.col("model_version") == version).count()
        log.info("factorize: %s already built (%d users)", version, n)
        return {"stage": "factorize", "rows": {"user_factors": n}, "version": version, "as_of": as_of.isoformat(),
                "skipped": True}
    t0 = time.time()
    at = _spark_ts(as_of)
    if method == "als":
        ckpt = settings.cache_dir / "als_checkpoints"
        ckpt.mkdir(parents=True, exist_ok=True)
        spark.sparkContext.setCheckpointDir(str(ckpt))
    df = user_factors(events, products, at, config).withColumn("model_version", F.lit(version))
    df = df.withColumn("created_at", F.current_timestamp())
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(str(path))
    n = spark.read.format("delta").load(str(path)).count()
    log.info("factorize (%s): %d users, %s, %.1fs", method, n, version, time.time() - t0)
    return {"stage": "factorize", "rows": {"user_factors": n}, "version": version, "as_of": as_of.isoformat(),
            "seconds": round(time.time() - t0, 1)}


# ------------------------------------------------------------------------------------------------------------
# statistics member
# ------------------------------------------------------------------------------------------------------------
def compute_stats(settings: Settings, as_of: datetime | None = None) -> dict:
    """Statistics member at `as_of` (None: the latest event + 1 s, as `aggregates`) -> gold `user_stats`.

    Same events and as-of rule as the aggregates stage (pinned bronze read, only events strictly before as-of);
    written by Spark, nothing per user collected. Idempotent: a table already holding this (statistic names, as_of)
    build is left alone."""
    from ubp.reader import count_rows
    from ubp.spark_jobs.ensemble import _exists, feature_versions, stats_path
    from ubp.spark_jobs.session import get_spark
    from ubp.spark_jobs.stats import build_stats, feature_names, feature_names_version, window_start
    from ubp.spark_jobs.vocab import prepare_events, select_events
    from ubp.stages.sequences import _bronze, _ensure, resolve_as_of

    t0 = time.time()
    spark = get_spark(settings)
    events, products, events_version = _bronze(spark, settings)
    as_of, _, all_before = resolve_as_of(events, as_of, settings.table_path("events"), events_version)
    path = stats_path(settings)
    if _exists(path) and (feature_names_version(), as_of) in feature_versions(path):
        n = count_rows(path)
        log.info("user_stats: already built for %s (%d users)", as_of.isoformat(), n)
        return {"stage": "compute_stats", "rows": {"user_stats": n}, "as_of": as_of.isoformat(), "skipped": True}
    first = window_start(select_events(events, as_of, all_before))
    rows = build_stats(prepare_events(events, products, as_of, all_before), as_of, first)
    _ensure(spark, "user_stats", path)
    rows.write.format("delta").mode("overwrite").option("overwriteSchema", "false").save(str(path))
    n = count_rows(path)
    log.info("user_stats: %d users x %d statistics, as of %s (%.1fs)", n, len(feature_names()), as_of.isoformat(),
             time.time() - t0)
    return {"stage": "compute_stats", "rows": {"user_stats": n}, "as_of": as_of.isoformat(),
            "n_features": len(feature_names()), "feature_names_version": feature_names_version(),
            "seconds": round(time.time() - t0, 1)}


# ------------------------------------------------------------------------------------------------------------
# text member
# ------------------------------------------------------------------------------------------------------------
def _skip_text(reason: str, as_of: datetime | None) -> dict:
    log.warning("text member skipped: %s", reason)
    return {"stage": "compute_text", "rows": {"user_text": 0}, "as_of": as_of and as_of.isoformat(),
            "skipped": True, "reason": reason}


def _sequences_as_of(path: Path, seqs) -> datetime | None:
    """The as-of of the user_sequences build: its table property (an incremental build keeps unchanged users' rows
    at the build they last changed in), else the newest row's."""
    from pyspark.sql import functions as F

    from ubp.reader import table_properties
    from ubp.stages.sequences import PROP_AS_OF

    prop = table_properties(path).get(PROP_AS_OF)
    return _utc(datetime.fromisoformat(prop) if prop else seqs.agg(F.max("as_of")).first()[0])


def _build_rows(spark, path: Path, version: str, at: datetime) -> int:
    """Rows of one (version, as-of) build of a member table: a version can hold several as-ofs."""
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(str(path))
    return df.where((F.col("model_version") == version) & (F.col("as_of") == F.lit(at))).count()


def compute_text(settings: Settings, as_of: datetime | None = None, recent: int | None = None) -> dict:
    """Text member -> gold `user_text`: per user, the mean item_content text embedding of the `recent` most recent
    distinct skus in silver `user_sequences` (`spark_jobs/text_profile.py`; Spark end to end, nothing per user in
    the driver).

    The rows take the as-of of the user_sequences build, which must not be after `as_of` (None: that build's).
    Idempotent: a table already holding this (version, as-of) build is left alone; a new version for the same
    as-of (another encoder or changed item content) replaces that as-of's rows. Without `item_content` or
    `user_sequences`, or without any text item, the member is skipped with a warning. `recent` None:
    `text_profile.RECENT`."""
    from pyspark.sql import functions as F

    from ubp.spark_jobs.ensemble import _exists, _versions, text_path
    from ubp.spark_jobs.session import get_spark
    from ubp.spark_jobs.text_profile import RECENT, SOURCES, content_fingerprint, text_version, user_text
    from ubp.stages.sequences import _ensure, _read_pinned

    t0 = time.time()
    recent = RECENT if recent is None else recent
    as_of = _utc(as_of)
    content_path, seq_path = settings.table_path("item_content"), settings.table_path("user_sequences")
    for name, p, command in (("item_content", content_path, "item-content"),
                             ("user_sequences", seq_path, "sequences")):
        if not _exists(p):
            return _skip_text(f"no {name} table at {p} (run `ubp {command}`)", as_of)
    spark = get_spark(settings)
    seqs, _ = _read_pinned(spark, seq_path, "user_sequences")
    content, _ = _read_pinned(spark, content_path, "item_content")
    built = _sequences_as_of(seq_path, seqs)
    if built is None:
        return _skip_text("user_sequences is empty", as_of)
    if as_of is not None and built > as_of:
        return _skip_text(f"user_sequences is built at {built.isoformat()}, after the as-of {as_of.isoformat()}: "
                          f"rebuild it with `ubp sequences --as-of {as_of.isoformat()}`", as_of)
    fingerprint = content_fingerprint(content, SOURCES)
    if fingerprint["items"] == 0:
        return _skip_text("item_content has no text items (a catalog without product text)", built)
    version = text_version(fingerprint, recent, SOURCES)
    path = text_path(settings)
    at = _spark_ts(built)
    if _exists(path) and (version, built) in _versions(path):
        n = _build_rows(spark, path, version, at)
        log.info("user_text: %s already built for %s (%d rows)", version, built.isoformat(), n)
        return {"stage": "compute_text", "rows": {"user_text": n}, "as_of": built.isoformat(), "version": version,
                "skipped": True}
    rows = user_text(seqs.where(F.col("as_of") <= F.lit(at)), content, at, version, recent, SOURCES)
    _ensure(spark, "user_text", path)
    ts = at.strftime("%Y-%m-%d %H:%M:%S.%f")
    (rows.write.format("delta").mode("overwrite").option("replaceWhere", f"as_of = timestamp'{ts}'")
     .save(str(path)))
    n = _build_rows(spark, path, version, at)
    log.info("user_text: %d users, %s (%d text items), as of %s (%.1fs)", n, version, fingerprint["items"],
             built.isoformat(), time.time() - t0)
    return {"stage": "compute_text", "rows": {"user_text": n}, "as_of": built.isoformat(), "version": version,
            "text_items": fingerprint["items"], "encoders": fingerprint["encoders"], "recent": recent,
            "seconds": round(time.time() - t0, 1)}


# ------------------------------------------------------------------------------------------------------------
# ensemble
# ------------------------------------------------------------------------------------------------------------
def _default_as_of(settings: Settings) -> datetime | None:
    """The as-of of the served GRU profiles (current model), else of the aggregates."""
    from ubp.registry import current_version
    from ubp.spark_jobs.ensemble import _exists, _versions

    path = settings.table_path("user_profiles")
    if _exists(path):
        pairs = _versions(path)
        cur = current_version(settings, "user")
        mine = [p for p in pairs if p[0] == cur] or pairs
        if mine:
            return mine[-1][1]
    path = settings.table_path("user_aggregates")
    if _exists(path):
        from ubp.spark_jobs.ensemble import load_aggregates_member

        return load_aggregates_member(settings).as_of
    return None


def write_ensemble(settings: Settings, rows, version: str, as_of: datetime, space_id: str = "") -> int:
    """Write the ensemble rows (a DataFrame: client_id, embedding, n_events) for one as-of, replacing that as-of's
    rows only, and return the version's row count."""
    from pyspark.sql import functions as F

    from ubp.spark_jobs.layout import in_feast_key_order
    from ubp.tables import USER_PROFILES_ENSEMBLE

    values = {"model_version": F.lit(version), "space_id": F.lit(space_id), "as_of": F.lit(_spark_ts(as_of)),
              "created_at": F.current_timestamp()}
    schema = USER_PROFILES_ENSEMBLE.spark_schema()
    df = rows.select(*[(F.col(f.name) if f.name in rows.columns else values[f.name]).cast(f.dataType).alias(f.name)
                       for f in schema.fields])
    path = settings.table_path("user_profiles_ensemble")
    writer = (in_feast_key_order(df, "client_id").write.format("delta").mode("overwrite")  # publish: key ranges
              .option("mergeSchema", "true"))
    if (path / "_delta_log").is_dir():
        ts = _spark_ts(as_of).strftime("%Y-%m-%d %H:%M:%S.%f")
        writer = writer.option("replaceWhere", f"as_of = timestamp'{ts}'")
    writer.save(str(path))
    return rows.sparkSession.read.format("delta").load(str(path)).filter(F.col("model_version") == version).count()


def _save_transforms(settings: Settings, version: str, fitted: dict, layout: dict, params: dict) -> Path:
    """The ensemble version's fitted member transforms (safetensors) and recipe + layout (JSON), under
    `<models>/ensemble/<version>/`: what it takes to apply the same transforms to new rows."""
    from safetensors.numpy import save_file

    out = settings.models_dir / "ensemble" / version
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v for name, t in fitted.items() for k, v in t.tensors(name).items()}
    if tensors:
        save_file(tensors, str(out / "transforms.safetensors"))
    meta = {"version": version, "params": params, "layout": layout,
            "transforms": {n: {"kind": t.kind, "weight": t.weight} for n, t in fitted.items()}}
    (out / "ensemble.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def align_ensemble(settings: Settings, ids, x16, version: str):
    """Fit the rotation of a new ensemble build onto the space of the last one (orthogonal Procrustes on the
    sampled users `ids` / rows `x16` that the last build also has: ids hashed into a fit half and a held-out half
    that measures the error) and assign its space (`ubp/spaces.py`). Returns (rotation or None, space). A build
    whose columns differ from the last one's, or that aligns badly, founds a new space (no rotation)."""
    import numpy as np

    from ubp import reader, spaces
    from ubp.models.latent import align

    family = spaces.ENSEMBLE_FAMILY
    dim = int(x16.shape[1])
    prev = spaces.last_version(settings, family)
    if prev is None or prev == version or spaces.space_of(settings, family, version):
        return None, spaces.assign(settings, family, version, dim=dim)
    ids = np.asarray(ids, dtype=np.int64)
    old = reader.version_vectors(settings.table_path("user_profiles_ensemble"), prev, "client_id", "embedding",
                                 keys=ids.tolist())
    common = np.array(sorted(old), dtype=np.int64)
    if len(common) < 4 or len(old[int(common[0])]) != dim:
        return None, spaces.assign(settings, family, version, dim=dim)
    new_x = x16[np.searchsorted(ids, common)].astype(np.float32)
    old_x = np.stack([old[int(c)] for c in common])
    rotation, err = align(new_x, old_x, common)
    space = spaces.assign(settings, family, version, dim=dim, aligned_to=prev, alignment_error=err)
    return (rotation if space["aligned_to"] == prev else None), {**space, "users": int(len(common))}


def ensemble(
    settings: Settings,
    as_of: datetime | None = None,
    members: tuple[str, ...] | None = None,
    pca: dict[str, int] | None = None,
    factors: bool = True,
    factor_method: str = "svd",
    stats: bool = True,
    text: bool = True,
    fit_rows: int = 100_000,
    recipe: str | Path | None = None,
) -> dict:
    """Build gold `user_profiles_ensemble` from every available member at `as_of`, by the merge recipe
    (`ubp/ensemble_recipe.toml`, or the file `recipe`).

    as_of None: the as-of of the current GRU profiles (else the aggregates'). The factorisation, statistics and
    text members are computed for that as-of when missing (and in the member list). Members whose table is absent
    or has no rows for the as-of are skipped (warning).
    """
    from ubp.spark_jobs.ensemble import build_streamed, ensemble_version, load_recipe, member_frames
    from ubp.spark_jobs.session import get_spark

    t0 = time.time()
    as_of = _utc(as_of) or _default_as_of(settings)
    if as_of is None:
        raise UbpError("no user_profiles or user_aggregates table yet: run `ubp embed-users` / `ubp aggregates`")
    plan = load_recipe(recipe)
    names = tuple(members or plan.enabled)
    factor_info = None
    if factors and "factors" in names:
        factor_info = factorize(settings, as_of=as_of, method=factor_method)
    stats_info = compute_stats(settings, as_of=as_of) if stats and "stats" in names else None
    text_info = compute_text(settings, as_of=as_of) if text and "text" in names else None
    frames = member_frames(get_spark(settings), settings, as_of=as_of, names=names)
    if not frames:
        raise UbpError(f"no ensemble member has rows for as_of {as_of.isoformat()}")
    params = {"pca": pca or {}, "as_of": as_of.isoformat(), "recipe": plan.to_dict()}
    try:
        build = build_streamed(frames, recipe=plan, pca=pca, fit_rows=fit_rows)
    except ValueError as exc:
        raise UbpError(str(exc)) from exc
    layout = build.layout
    version = ensemble_version(frames, params)
    _save_transforms(settings, version, dict(zip(layout, build.transforms, strict=True)), layout, params)
    rotation, space = align_ensemble(settings, *build.sample(20_000), version)
    rows = write_ensemble(settings, build.rows(rotation), version, as_of, space["space_id"])
    out = {
        "stage": "ensemble",
        "rows": {"user_profiles_ensemble": rows},
        "version": version,
        "as_of": as_of.isoformat(),
        "columns": build.columns,
        "space": space,
        "members": layout,
        "skipped_members": [n for n in names if n not in layout],
        "seconds": round(time.time() - t0, 1),
    }
    if factor_info:
        out["rows"]["user_factors"] = factor_info["rows"]["user_factors"]
    if stats_info:
        out["rows"]["user_stats"] = stats_info["rows"]["user_stats"]
    if text_info:
        out["rows"]["user_text"] = text_info["rows"]["user_text"]
    log.info("ensemble %s: %d users x %d columns, members %s", version, rows, build.columns, list(layout))
    return out
