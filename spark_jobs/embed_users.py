"""Distributed batch inference: silver `user_sequences` -> gold `user_profiles` (or `user_member_profiles`) with a
trained user model (any member: GRU-AE or next-event transformer, built by its config).

`profiles(df, model_dir, model_version, created_at)` is a pure DataFrame -> DataFrame function: `mapInArrow`
(default; `engine="pandas"`: `mapInPandas`, kept because a test checks both give the same rows) hands each Python
worker an iterator of batches; the worker loads the model ONCE (module-level cache keyed
by the model version) and encodes every batch it gets. Users with no events produce no row. `run` pins the table
version, checks the vocabulary, and writes with Delta `replaceWhere` on (model_version, as_of), so re-running
for the same model and as-of replaces exactly those rows and nothing else (idempotent).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame

from ubp.config import Settings
from ubp.log import get_logger
from ubp.tables import USER_PROFILES

log = get_logger("ubp.embed_users")

# (model_dir, model_version) -> model; lives as long as the Python worker (spark.python.worker.reuse=true)
_MODEL_CACHE: dict[tuple[str, str], object] = {}
MODEL_LOADS = {"count": 0}  # how many times this process loaded a model (checked by tests)


def _model(model_dir: str, version: str, load_log: str | None = None):
    key = (model_dir, version)
    if key not in _MODEL_CACHE:
        if load_log:  # test hook UBP_MODEL_LOAD_LOG (ubp/hooks.py): one line per model load (pid)
            with open(load_log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        import torch
        from ubp.models.infer_user import load_model

        torch.set_num_threads(int(os.environ.get("UBP_WORKER_TORCH_THREADS", "1")))
        model, _ = load_model(model_dir, device="cpu")
        _MODEL_CACHE.clear()  # one model per worker at a time
        _MODEL_CACHE[key] = model
        MODEL_LOADS["count"] += 1
    return _MODEL_CACHE[key]


def _encode_frames(frames: Iterator[pd.DataFrame], model_dir: str, version: str, created_at: dt.datetime,
                   batch_size: int, load_log: str | None = None, space_id: str = "") -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    from ubp.models.infer_user import encode_arrow

    model = _model(model_dir, version, load_log)
    cols = [c.name for c in USER_PROFILES.columns]
    for pdf in frames:
        if pdf.empty:
            continue
        rb = pa.RecordBatch.from_pandas(pdf, preserve_index=False)
        chunk, z = encode_arrow(model, rb, batch_size)
        if not len(chunk):
            continue
        as_of = pdf["as_of"].to_numpy()
        # chunk rows keep the input order minus the empty users; map as_of by position through client ids
        pos = pd.Index(pdf["client_id"].to_numpy()).get_indexer(chunk.client_id)
        out = pd.DataFrame({
            "client_id": chunk.client_id,
            "embedding": list(z),
            "model_version": version,
            "space_id": space_id,
            "as_of": as_of[pos],
            "n_events": chunk.n_events,
            "created_at": pd.Timestamp(created_at.astimezone(dt.UTC).replace(tzinfo=None)),
        })
        yield out[cols]


def _encode_arrow_batches(batches, model_dir: str, version: str, created_at: dt.datetime, batch_size: int,
                          load_log: str | None = None, space_id: str = ""):
    """Same as `_encode_frames` but Arrow in, Arrow out (no pandas round trip of the list columns)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from ubp.models.infer_user import encode_arrow
    from ubp.spark_jobs.vectors import float_lists

    model = _model(model_dir, version, load_log)
    schema = USER_PROFILES.arrow_schema()
    created = pa.scalar(created_at.astimezone(dt.UTC), pa.timestamp("us", tz="UTC"))
    for rb in batches:
        if rb.num_rows == 0:
            continue
        chunk, z = encode_arrow(model, rb, batch_size)
        if not len(chunk):
            continue
        ids = rb.column("client_id").to_numpy(zero_copy_only=False)
        sorter = np.argsort(ids)
        pos = pa.array(sorter[np.searchsorted(ids, chunk.client_id, sorter=sorter)])  # input row of each user
        n = len(z)
        yield pa.RecordBatch.from_arrays([
            pa.array(chunk.client_id, pa.int64()), float_lists(z), pa.array([version] * n, pa.string()),
            pa.array([space_id] * n, pa.string()),
            pc.take(rb.column("as_of"), pos).cast(pa.timestamp("us", tz="UTC")),
            pa.array(chunk.n_events, pa.int64()), pa.array([created] * n, pa.timestamp("us", tz="UTC")),
        ], schema=schema)


def profiles(df: DataFrame, model_dir: str | Path, model_version: str, created_at: dt.datetime,
             batch_size: int = 512, engine: str = "arrow", space_id: str | None = None) -> DataFrame:
    """`user_sequences` rows -> `user_profiles` rows (one per user with at least one event). `engine`: "arrow"
    (mapInArrow: skips the pandas round trip of the list columns) or "pandas" (mapInPandas). `space_id`: the
    vector space of the rows (None: the one in the version's model.json)."""
    from ubp.models.user_data import columns_for

    from ubp.hooks import current as current_hooks

    config_fields = _config_fields(model_dir)
    need = sorted(set(columns_for(config_fields)) | {"as_of"}, key=lambda c: list(df.columns).index(c))
    model_dir, version = str(model_dir), str(model_version)
    if space_id is None:
        space_id = _manifest_space(model_dir)
    load_log = current_hooks().model_load_log  # read in the driver; the closures carry it to the workers

    def fn(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _encode_frames(frames, model_dir, version, created_at, batch_size, load_log, space_id)

    def fn_arrow(batches):
        return _encode_arrow_batches(batches, model_dir, version, created_at, batch_size, load_log, space_id)

    if engine == "arrow":
        return df.select(*need).mapInArrow(fn_arrow, schema=USER_PROFILES.spark_schema())
    if engine != "pandas":
        raise ValueError(f"engine must be pandas or arrow, not {engine!r}")
    return df.select(*need).mapInPandas(fn, schema=USER_PROFILES.spark_schema())


def _manifest_space(model_dir: str | Path) -> str:
    import json

    path = Path(model_dir) / "model.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    return str((manifest.get("space") or {}).get("space_id") or "")


def _config_fields(model_dir: str | Path) -> list[str]:
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return list(cfg["input_fields"]) + list(cfg["target_fields"])


def run(settings: Settings, model_dir: str | Path, model_version: str, batch_size: int = 512, table: str = "user_profiles",
        engine: str = "arrow", space_id: str | None = None) -> dict:
    """Embed every user of the current `user_sequences` version into `user_profiles` (replaceWhere per
    (model_version, as_of)); every row carries `space_id` (None: the version's model.json)."""
    import json

    from ubp.spark_jobs.layout import in_feast_key_order
    from ubp.spark_jobs.session import get_spark

    from ubp import reader
    from ubp.errors import UbpError

    spark = get_spark(settings)
    src = settings.table_path("user_sequences")
    version = reader.table_version(src)
    manifest = json.loads((Path(model_dir) / "model.json").read_text())
    reader.check_vocab_version(manifest["vocab_version"], reader.sequences_vocab_version(src, version))
    as_ofs, n_users, n_empty = _scan_inputs(src, version)  # Arrow pass over 3 small columns, no Spark job
    if not as_ofs:
        raise UbpError(f"{src} is empty: run `ubp sequences` first")
    df = _spread(spark, spark.read.format("delta").option("versionAsOf", version).load(str(src)))
    created_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    out = profiles(df, model_dir, model_version, created_at, batch_size, engine, space_id)
    dest = settings.table_path(table)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stamps = ", ".join(f"timestamp'{a.strftime('%Y-%m-%d %H:%M:%S.%f')}'" for a in as_ofs)
    where = f"model_version = '{model_version}' AND as_of IN ({stamps})"
    writer = (in_feast_key_order(out, "client_id").write.format("delta")  # the publish streams key ranges
              .option("mergeSchema", "true"))  # tables written before `space_id` existed gain the column
    if _is_delta(spark, dest):
        writer.mode("overwrite").option("replaceWhere", where).save(str(dest))
    else:
        writer.mode("errorifexists").save(str(dest))
    written = _rows_written(dest)
    log.info("%s: %d rows for model %s (as_of %s); %d users without events skipped", table,
             written, model_version, [a.isoformat() for a in as_ofs], n_empty)
    return {"stage": "embed-users", "rows": {table: written, "user_sequences": n_users},
            "model_version": model_version, "space_id": space_id or _manifest_space(model_dir),
            "as_of": [a.isoformat() for a in as_ofs],
            "table_version": version, "users_without_events": n_empty}


def _spread(spark, df: DataFrame) -> DataFrame:
    """At least one task per core: a table stored in fewer files than cores (small tables, one big compacted
    file) would otherwise encode on one Python worker while the other cores idle. The extra round-robin shuffle
    moves sequences JVM-side only, which is cheap next to the encode; bigger tables keep their file splits."""
    try:
        n_parts, cores = df.rdd.getNumPartitions(), _cores(spark)
    except Exception:  # noqa: BLE001  (Spark Connect has no RDD API: leave the plan as it is)
        return df
    return df.repartition(cores) if n_parts < cores else df


def _cores(spark) -> int:
    """Task slots: N of local[N] (local = 1, local[*] = all CPUs), else the default parallelism (cluster cores)."""
    import re

    master = spark.sparkContext.master
    m = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master)
    if m:
        return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1) or 1)
    return int(spark.sparkContext.defaultParallelism)


def _scan_inputs(src: Path, version: int) -> tuple[list[dt.datetime], int, int]:
    """Distinct as_of values (UTC), user count and users without events of one table version."""
    import pyarrow.compute as pc

    from ubp.reader import iter_batches

    as_ofs: set = set()
    n_users = n_empty = 0
    for rb in iter_batches(src, version, columns=["as_of", "seq_len"], batch_size=65536):
        as_ofs.update(pc.unique(rb.column("as_of")).to_pylist())
        n_users += rb.num_rows
        n_empty += int(pc.sum(pc.equal(rb.column("seq_len"), 0)).as_py() or 0)
    return sorted(_utc(a) for a in as_ofs), n_users, n_empty


def _rows_written(dest: Path) -> int:
    """Rows the last commit wrote, from the Delta log's operation metrics (no re-read of the table)."""
    from deltalake import DeltaTable

    metrics = DeltaTable(str(dest)).history(1)[0].get("operationMetrics", {})
    return int(metrics.get("numOutputRows", 0))


def _utc(ts: dt.datetime) -> dt.datetime:
    """Spark returns naive datetimes in the session time zone (UTC in ubp)."""
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _is_delta(spark, path: Path) -> bool:
    from delta.tables import DeltaTable

    return path.exists() and DeltaTable.isDeltaTable(spark, str(path))
