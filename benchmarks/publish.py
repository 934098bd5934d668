"""Publish throughput into Feast's online stores (SQLite, Redis), side by side, and online read latency.

For each (users, dim): a `user_profiles` Delta table (one as-of, `dim` float32 per user) is published into an empty
online store by
  - ours:      `ubp.publish.publish_view` (Delta read through the log + diff + vectorised encoding + batched write)
  - raw:       the same bytes written with a bare `executemany` (SQLite) / redis-py pipeline of HSETs (Redis),
               bytes prepared beforehand (the floor for the store itself)
  - feast_w2o: Feast `write_to_online_store` (the rows already in a pandas frame)
  - feast_mat: Feast `materialize` (Spark offline store over Delta; includes the Spark job)
Rows/s counts users (entities); each user is 4 features (embedding, model_version, as_of, n_events), i.e. 4 SQLite
rows or 1 Redis hash. Then `get_online_features(user_profile_v1)` p50/p99 for 1, 100, 1000 entities.

Run:  flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/publish.py [--sizes 100000,1000000] [--dims 128,256]
      [--feast-max 100000] [--no-materialize] [--stores sqlite,redis] [--repeat 3] [--layout feast|id]
Redis: UBP_REDIS_URL (db 12 is used and flushed) or a private redis-server on a free port.
Prints one JSON line per cell while it runs, then ready-to-paste markdown tables (also in --out as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ubp.config import Settings  # noqa: E402
from ubp.tables import USER_PROFILES  # noqa: E402

AS_OF = datetime(2024, 2, 1, tzinfo=UTC)


def make_table(settings: Settings, users: int, dim: int, chunk: int = 100_000, layout: str = "feast") -> None:
    """`users` profiles (ids 0..users-1) in the layout our gold writers give the table (spark_jobs/layout.py):
    files of sorted, contiguous ranges of Feast's entity-key byte order; `layout="id"`: in id order instead (a table
    written by some other tool)."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(0)
    path = str(settings.table_path("user_profiles"))
    schema = USER_PROFILES.arrow_schema()
    ids = np.arange(users, dtype=np.int64)
    if layout == "feast":
        ids = ids[np.argsort(ids.astype("<i8").view(">u8"), kind="stable")]  # little-endian bytes = Feast's order
    for start in range(0, users, chunk):
        n = min(chunk, users - start)
        vec = rng.standard_normal((n, dim), dtype=np.float32)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim).cast(pa.list_(pa.float32()))
        batch = pa.table(
            {
                "client_id": pa.array(ids[start : start + n]),
                "embedding": emb,
                "model_version": pa.array(["gru-bench"] * n),
                "as_of": pa.array([AS_OF] * n, pa.timestamp("us", tz="UTC")),
                "n_events": pa.array(rng.integers(1, 5000, n, dtype=np.int64)),
                "created_at": pa.array([AS_OF] * n, pa.timestamp("us", tz="UTC")),
            },
            schema=schema,
        )
        write_deltalake(path, batch, mode="overwrite" if start == 0 else "append")


def start_redis() -> tuple[str, subprocess.Popen | None]:
    url = os.environ.get("UBP_REDIS_URL")
    if url:
        from ubp.feast_store import to_feast_redis

        return to_feast_redis(url).split(",")[0] + ",db=12", None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", str(port),
         "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return f"127.0.0.1:{port},db=12", proc


def clear(store, view: str) -> None:
    """Empty the online data of feature view `view` (a slot view, e.g. `user_profile__a`)."""
    cfg = store.config.online_store
    if cfg.type == "sqlite":
        import sqlite3

        con = sqlite3.connect(cfg.path, isolation_level=None)
        ddl = [sql for (sql,) in con.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC", (f"ubp_{view}",))]
        con.execute(f'DROP TABLE "ubp_{view}"')  # much faster than DELETE of millions of rows; same DDL back
        con.execute("VACUUM")
        for sql in ddl:  # table first ("table" > "index" in ORDER BY type DESC), then Feast's entity_key index
            con.execute(sql)
        con.close()
    else:
        from ubp.publish import redis_client

        redis_client(cfg.connection_string).flushdb()


def raw_write(store, fv) -> float:
    """The same bytes our path writes, prepared first; time only the bare store write."""
    import sqlite3
    from itertools import chain

    from ubp.publish import (
        ViewLayout,
        encode_column,
        encode_entity_keys,
        redis_client,
        redis_ts,
        scan_delta,
        sqlite_ts,
    )

    view = ViewLayout.of(fv)
    batches = list(scan_delta(view.path, view.columns))
    cfg = store.config.online_store
    if cfg.type == "sqlite":
        rows = []  # entity by entity in table order, features in view order: what Feast's writer does
        for b in batches:
            keys = b.column("client_id").to_numpy()
            ek = encode_entity_keys(keys, "client_id")
            ts = sqlite_ts(b.column("as_of").cast(pa.int64()).to_numpy())
            cr = sqlite_ts(b.column("created_at").cast(pa.int64()).to_numpy())
            per_feature = []
            for fname, vt in view.features:
                vals, texts = encode_column(b.column(fname), vt)
                per_feature.append(list(zip(ek, [fname] * len(ek), vals, texts, ts, cr, strict=True)))
            rows.extend(chain.from_iterable(zip(*per_feature, strict=True)))
        con = sqlite3.connect(cfg.path)
        sql = (f'INSERT INTO "ubp_{fv.name}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value,"
               " value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts;")
        t0 = time.perf_counter()
        with con:
            con.executemany(sql, rows)
        dt = time.perf_counter() - t0
        con.close()
        return dt
    from feast.infra.online_stores.helpers import _mmh3

    fields = [_mmh3(f"{fv.name}:{f}") for f, _ in view.features]
    hashes = []
    for b in batches:
        ek = encode_entity_keys(b.column("client_id").to_numpy(), "client_id", b"ubp")
        ts = redis_ts(b.column("as_of").cast(pa.int64()).to_numpy())
        cols = [encode_column(b.column(f), vt)[0] for f, vt in view.features]
        for i, k in enumerate(ek):
            m = {f"_ts:{fv.name}".encode(): ts[i]}
            m.update({f: c[i] for f, c in zip(fields, cols, strict=True)})
            hashes.append((k, m))
    client = redis_client(cfg.connection_string)
    t0 = time.perf_counter()
    for i in range(0, len(hashes), 50_000):
        with client.pipeline(transaction=False) as pipe:
            for k, m in hashes[i : i + 50_000]:
                pipe.hset(k, mapping=m)
            pipe.execute()
    return time.perf_counter() - t0


def read_latency(store, users: int, reps: dict[int, int]) -> dict:
    rng = np.random.default_rng(1)
    svc = store.get_feature_service("user_profile_v1")
    out = {}
    for n, r in reps.items():
        lat = []
        for _ in range(r):
            rows = [{"client_id": int(c)} for c in rng.integers(0, users, n)]
            t0 = time.perf_counter()
            store.get_online_features(features=svc, entity_rows=rows).to_dict()
            lat.append(time.perf_counter() - t0)
        out[n] = {"p50_ms": round(1000 * float(np.percentile(lat, 50)), 2),
                  "p99_ms": round(1000 * float(np.percentile(lat, 99)), 2), "reps": r}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dims", default="128,256")
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--feast-max", type=int, default=100_000, help="largest size run through Feast's own paths")
    ap.add_argument("--no-materialize", action="store_true")
    ap.add_argument("--materialize-dims", default="128", help="dims run through Feast materialize (Spark job)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of our path per cell (median reported)")
    ap.add_argument("--layout", default="feast", choices=["feast", "id"],
                    help="row order of the table: our gold writers' (Feast key order) or plain id order")
    ap.add_argument("--out", default="reports/bench_publish.json")
    args = ap.parse_args()

    from ubp import feast_store
    from ubp.feast_slots import served_view
    from ubp.publish import ViewLayout, publish_view, scan_delta

    redis_url, redis_proc = start_redis()
    os.environ["UBP_REDIS_URL"] = redis_url
    results: list[dict] = []
    latency: dict = {}
    root = Path(tempfile.mkdtemp(prefix="ubp-bench-publish-"))
    try:
        for users in [int(s) for s in args.sizes.split(",")]:
            for dim in [int(d) for d in args.dims.split(",")]:
                settings = Settings(lakehouse=root / f"lh-{users}-{dim}")
                t0 = time.perf_counter()
                make_table(settings, users, dim, layout=args.layout)
                os.sync()  # the table's pages on disk first: their writeback would land in the first timed run
                print(f"table {users}x{dim}: {time.perf_counter() - t0:.1f}s", flush=True)
                for kind in args.stores.split(","):
                    store = feast_store.apply(settings, kind)
                    name = served_view(store, "user_profile")  # the served slot (ubp/feast_slots.py)
                    fv = store.get_feature_view(name)
                    row = {"users": users, "dim": dim, "store": kind, "layout": args.layout}
                    runs = []
                    for _ in range(args.repeat):  # the first is what one `ubp publish` process sees
                        clear(store, name)
                        res = publish_view(store, fv, settings.feast_dir / "published", full=True, record=False)
                        assert res.rows_written == users
                        runs.append(round(res.seconds, 3))
                    row["ours_s"] = float(np.median(runs))
                    row["ours_runs"] = runs
                    clear(store, name)
                    row["raw_s"] = raw_write(store, fv)
                    if users <= args.feast_max:
                        import pandas as pd

                        view = ViewLayout.of(fv)
                        df = pa.Table.from_batches(list(scan_delta(view.path, view.columns))).to_pandas()
                        clear(store, name)
                        t0 = time.perf_counter()
                        store.write_to_online_store(name, df)
                        row["feast_w2o_s"] = time.perf_counter() - t0
                        del df, pd
                        if not args.no_materialize and str(dim) in args.materialize_dims.split(","):
                            clear(store, name)
                            t0 = time.perf_counter()
                            store.materialize(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC),
                                              feature_views=[name])
                            row["feast_mat_s"] = time.perf_counter() - t0
                    if dim == 128 and users == min(int(s) for s in args.sizes.split(",")):
                        # our result in the store for the read benchmark
                        clear(store, name)
                        publish_view(store, fv, settings.feast_dir / "published", full=True, record=False)
                        latency[kind] = read_latency(store, users, {1: 200, 100: 100, 1000: 30})
                        print(json.dumps({"read_latency": kind, "users": users, **latency[kind]}), flush=True)
                    for k in [c for c in list(row) if c.endswith("_s")]:
                        row[k.replace("_s", "_rows_per_s")] = round(users / row[k])
                        row[k] = round(row[k], 3)
                    print(json.dumps(row), flush=True)
                    results.append(row)
                    write_report(args.out, results, latency)  # after every row: a killed run keeps its numbers
                shutil.rmtree(settings.lakehouse, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if redis_proc is not None:
            redis_proc.terminate()
    write_report(args.out, results, latency)
    print(markdown(results, latency))


def _rate(row: dict, key: str) -> str:
    v = row.get(f"{key}_rows_per_s")
    return f"{v:,}" if v else "-"


def markdown(results: list[dict], latency: dict) -> str:
    """Ready-to-paste tables: throughput in users/s (1 user = 4 Feast feature rows) and read latency."""
    lines = [
        "| users | dim | store | ours (users/s) | ours (feature rows/s) | raw write (users/s) | Feast w2o (users/s) "
        "| Feast mat. (users/s) | ours / raw | ours / Feast w2o | ours / Feast mat. |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ours = r.get("ours_rows_per_s") or 0

        def ratio(key: str, r: dict = r, ours: int = ours) -> str:
            other = r.get(f"{key}_rows_per_s")
            return f"{ours / other:.1f}x" if other else "-"

        users = f"{r['users'] // 1000}k" if r["users"] < 1_000_000 else f"{r['users'] / 1e6:g}M"
        lines.append(
            f"| {users} | {r['dim']} | {'SQLite' if r['store'] == 'sqlite' else 'Redis'} | {ours:,} | {4 * ours:,} "
            f"| {_rate(r, 'raw')} | {_rate(r, 'feast_w2o')} | {_rate(r, 'feast_mat')} | {ratio('raw')} "
            f"| {ratio('feast_w2o')} | {ratio('feast_mat')} |"
        )
    if latency:
        kinds = [k for k in ("sqlite", "redis") if k in latency]
        lines += ["", "| entities per call | " + " | ".join(
            f"{'SQLite' if k == 'sqlite' else 'Redis'} p50 / p99 (ms)" for k in kinds) + " | calls |",
                  "|---:|" + "---:|" * len(kinds) + "---:|"]
        for n in sorted(next(iter(latency.values()))):
            cells = " | ".join(f"{latency[k][n]['p50_ms']} / {latency[k][n]['p99_ms']}" for k in kinds)
            lines.append(f"| {n} | {cells} | {next(iter(latency.values()))[n]['reps']} |")
    return "\n".join(lines)


def write_report(out: str, results: list[dict], latency: dict) -> None:
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "load_avg": os.getloadavg(),
        "results": results,
        "online_read_latency": latency,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
