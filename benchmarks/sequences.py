"""Benchmark: `ubp sequences` (Spark + Delta) vs the same sequence build in DuckDB, at 2M and 10M demo events.

For each size: generate demo raw data once (cached), write it to bronze Delta directly with pyarrow + deltalake
(streamed per raw part; the Spark ingest is benchmarked separately), then run each engine in its own subprocess and
record wall time, events/s and the peak RSS of the subprocess tree (driver + JVM for Spark). Spark runs as `ubp` does
after `make bootstrap`, i.e. with the driver's class-data-sharing archive (ubp/jvm_cds.py); `--no-cds-too` adds a
run without it. Both engines do the
same work: as-of scan, vocabulary (top-K counts), tokenisation, one merged chronological sequence per user,
newest 126 kept, written out (Delta for Spark, Parquet for DuckDB). The outputs are compared (row count, total
events, and exact token arrays for a sample of users). Run it under the lock:

    flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/sequences.py --events 2000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVENTS_PER_USER = 66.0  # demo data at --days 60 (measured: 132,871 events for 2,000 users)
DAYS = 60
MAX_LEN = 126


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------
def make_bronze(n_events: int, workdir: Path) -> tuple[Path, int]:
    """Demo raw data for ~n_events, written as bronze `events`/`products` Delta tables. Cached."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    from ubp.config import Settings
    from ubp.demo_data import generate_demo_data
    from ubp.reader import count_rows
    from ubp.tables import EVENTS, PRODUCTS, RAW_EVENT_COLUMNS

    raw = workdir / f"raw_{n_events}"
    lake = workdir / f"lake_{n_events}"
    settings = Settings(lakehouse=lake)
    done = lake / ".bronze_done"
    if done.exists():
        return lake, int(done.read_text())
    if not (raw / "_truth").exists():
        users = max(1, round(n_events / EVENTS_PER_USER))
        print(f"generating demo data: {users:,} users x {DAYS} days -> {raw}", flush=True)
        generate_demo_data(raw, users=users, days=DAYS, seed=11, timestamp_form="timestamp", chunk_users=20_000)
    ev_schema = EVENTS.arrow_schema()
    ev_path = str(settings.table_path("events"))
    now = pa.scalar(int(time.time() * 1e6), pa.timestamp("us", tz="UTC"))

    def batches():
        next_id = 0
        for event_type, cols in RAW_EVENT_COLUMNS.items():
            for part in sorted((raw / event_type).glob("*.parquet")):
                t = pq.read_table(part)
                n = t.num_rows
                query = pa.nulls(n, pa.list_(pa.int32()))
                if "query" in cols:
                    stripped = pc.utf8_trim(t["query"], "[]")
                    query = pc.cast(pc.split_pattern_regex(stripped, r"\s+"), pa.list_(pa.int32()))
                ts = t["timestamp"].cast(pa.timestamp("us", tz="UTC"))
                table = pa.table(
                    {
                        "event_id": pa.array(range(next_id, next_id + n), pa.int64()),
                        "event_type": pa.array([event_type] * n, pa.string()),
                        "client_id": t["client_id"],
                        "timestamp": ts,
                        "sku": t["sku"] if "sku" in cols else pa.nulls(n, pa.int64()),
                        "url": t["url"] if "url" in cols else pa.nulls(n, pa.int64()),
                        "query": query,
                        "source_file": pa.array([f"{event_type}/{part.name}"] * n, pa.string()),
                        "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                        "event_date": pc.cast(ts, pa.date32()),
                    },
                    schema=ev_schema,
                )
                next_id += n
                yield from table.to_batches(max_chunksize=100_000)

    # one streamed write: one file per event_date partition (as a compacted bronze table would be)
    reader = pa.RecordBatchReader.from_batches(ev_schema, batches())
    write_deltalake(ev_path, reader, mode="overwrite", partition_by=["event_date"])
    prod = pq.read_table(raw / "product_properties.parquet")
    n = prod.num_rows
    names = pc.cast(pc.split_pattern_regex(pc.utf8_trim(prod["name"], "[]"), r"\s+"), pa.list_(pa.int32()))
    products = pa.table(
        {"sku": prod["sku"], "category": prod["category"], "price": prod["price"].cast(pa.int32()), "name": names,
         "source_file": pa.array(["product_properties.parquet"] * n), "ingested_at": pa.array([now] * n,
                                                                                          pa.timestamp("us", tz="UTC"))},
        schema=PRODUCTS.arrow_schema(),
    )
    write_deltalake(str(settings.table_path("products")), products, mode="overwrite")
    total = count_rows(ev_path)
    done.write_text(str(total))
    return lake, total


# ------------------------------------------------------------------------------------------------------------
# workers (run in a subprocess so their peak memory and start-up are measured on their own)
# ------------------------------------------------------------------------------------------------------------
def worker_spark(lake: Path) -> dict:
    t0 = time.perf_counter()
    from ubp.spark_jobs.session import get_spark

    from ubp.config import Settings
    from ubp.stages.sequences import sequences

    settings = Settings(lakehouse=lake)
    get_spark(settings)
    jvm = time.perf_counter() - t0
    res = sequences(settings, max_len=MAX_LEN, refresh_vocab=True)
    from ubp.jvm_cds import java_options

    return {"jvm_start_s": round(jvm, 2), "stage_s": res["seconds"], "timings": res["timings"],
            "cds_archive": bool(java_options()),
            "users": res["rows"]["user_sequences"], "out": res["table"]}


DUCK_SQL = """
CREATE TEMP TABLE bounds AS SELECT date_trunc('second', max(timestamp)) + INTERVAL 1 SECOND AS as_of FROM events;
CREATE TEMP VIEW ev AS
SELECT e.client_id,
       CASE e.event_type WHEN 'add_to_cart' THEN 0 WHEN 'remove_from_cart' THEN 1 WHEN 'product_buy' THEN 2
                         WHEN 'page_visit' THEN 3 WHEN 'search_query' THEN 4 END AS etype,
       epoch_us(e.timestamp) AS ts_us, (epoch_us(e.timestamp) // 86400000000)::INT AS eday,
       e.sku, e.url, e.query,
       CASE WHEN e.event_type IN ('add_to_cart','remove_from_cart','product_buy') THEN p.category END AS category,
       CASE WHEN e.event_type IN ('add_to_cart','remove_from_cart','product_buy') THEN p.price END AS price
FROM events e LEFT JOIN products p USING (sku)
WHERE e.timestamp < (SELECT as_of FROM bounds);
CREATE TEMP TABLE counts AS
SELECT 'sku' AS field, sku AS raw, count(*) AS freq FROM ev WHERE etype <= 2 AND sku IS NOT NULL GROUP BY ALL
UNION ALL SELECT 'category', category, count(*) FROM ev WHERE category IS NOT NULL GROUP BY ALL
UNION ALL SELECT 'price', price, count(*) FROM ev WHERE price IS NOT NULL GROUP BY ALL
UNION ALL SELECT 'url', url, count(*) FROM ev WHERE etype = 3 AND url IS NOT NULL GROUP BY ALL
UNION ALL SELECT 'query', q, count(*) FROM (SELECT unnest(query) AS q FROM ev WHERE etype = 4) GROUP BY ALL
UNION ALL SELECT 'day', eday, count(*) FROM ev GROUP BY ALL;
CREATE TEMP TABLE vocab AS
SELECT field, raw, (row_number() OVER (PARTITION BY field ORDER BY freq DESC, raw ASC) + 3)::INT AS tok
FROM counts WHERE field <> 'day'
QUALIFY row_number() OVER (PARTITION BY field ORDER BY freq DESC, raw ASC) <= CASE field WHEN 'sku' THEN 5000
  WHEN 'url' THEN 5000 ELSE 2147483647 END;
CREATE TEMP TABLE dayb AS SELECT min(raw)::INT AS d0, max(raw)::INT AS d1 FROM counts WHERE field = 'day';
CREATE TEMP VIEW tok AS
SELECT ev.client_id, ev.ts_us, ev.etype,
       CASE WHEN ev.etype <= 2 THEN coalesce(ev.sku, -1) ELSE -1 END AS sku_raw, coalesce(ev.url, -1) AS url_raw,
       -- the contract's sparse query codes: 16 per search event (PAD when it has no query), none for the others
       CASE WHEN ev.etype = 4 THEN coalesce(list_transform(ev.query, lambda x: coalesce(qm[x::BIGINT], 3)),
                                           [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0])
            ELSE []::INT[] END AS q_t,
       ev.etype + 4 AS et_t,
       CASE WHEN ev.etype <= 2 THEN coalesce(vs.tok, 3) ELSE 0 END AS sku_t,
       CASE WHEN ev.etype <= 2 THEN coalesce(vc.tok, 3) ELSE 0 END AS cat_t,
       CASE WHEN ev.etype <= 2 THEN coalesce(vp.tok, 3) ELSE 0 END AS price_t,
       CASE WHEN ev.etype = 3 THEN coalesce(vu.tok, 3) ELSE 0 END AS url_t,
       CASE WHEN ev.eday BETWEEN d0 AND d1 THEN ev.eday - d0 + 4 ELSE 3 END AS day_t,
       CASE WHEN ev.eday BETWEEN d0 AND d1 THEN (ev.eday - d0) // 7 + 4 ELSE 3 END AS week_t
FROM ev CROSS JOIN dayb
CROSS JOIN (SELECT map(list(raw), list(tok)) AS qm FROM vocab WHERE field = 'query') qmap
LEFT JOIN (SELECT raw, tok FROM vocab WHERE field = 'sku') vs ON vs.raw = ev.sku
LEFT JOIN (SELECT raw, tok FROM vocab WHERE field = 'url') vu ON vu.raw = ev.url
LEFT JOIN (SELECT raw, tok FROM vocab WHERE field = 'category') vc ON vc.raw = ev.category
LEFT JOIN (SELECT raw, tok FROM vocab WHERE field = 'price') vp ON vp.raw = ev.price;
COPY (
  WITH g AS (
    -- top-`max_len` newest events per user with a bounded heap per group (`max_by(arg, key, n)`): no per-user
    -- full list is materialised, so memory stays bounded (the `list()` + `list_sort` form ran out of memory at 10M)
    SELECT client_id, count(*) AS n_events, min(ts_us) AS first_us, max(ts_us) AS last_us,
           list_reverse(max_by(
             {'ts_us': ts_us, 'q_t': q_t, 'et_t': et_t, 'sku_t': sku_t, 'cat_t': cat_t, 'price_t': price_t,
              'url_t': url_t, 'day_t': day_t, 'week_t': week_t, 'sku_raw': sku_raw},
             {'ts_us': ts_us, 'etype': etype, 'sku_raw': sku_raw, 'url_raw': url_raw, 'q_t': q_t}, {max_len})) AS s
    FROM tok GROUP BY client_id
  )
  SELECT client_id, n_events, make_timestamp(first_us) AS first_ts, make_timestamp(last_us) AS last_ts,
         len(s) AS seq_len,
         list_transform(s, lambda e: e.et_t) AS event_type, list_transform(s, lambda e: e.sku_t) AS sku,
         list_transform(s, lambda e: e.cat_t) AS category, list_transform(s, lambda e: e.price_t) AS price,
         list_transform(s, lambda e: e.url_t) AS url,
         flatten(list_transform(s, lambda e: e.q_t)) AS query,
         list_transform(s, lambda e: e.day_t) AS day, list_transform(s, lambda e: e.week_t) AS week,
         list_transform(s, lambda e: e.sku_raw) AS sku_raw, list_transform(s, lambda e: e.ts_us // 1000000) AS ts
  FROM g
) TO '{out}' (FORMAT parquet);
"""


def worker_duckdb(lake: Path, threads: int) -> dict:
    t0 = time.perf_counter()
    import duckdb
    from deltalake import DeltaTable

    from ubp.config import Settings

    settings = Settings(lakehouse=lake)
    out = lake / "duckdb_user_sequences.parquet"
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    # max_by keeps every user's top-N heap in memory (it does not spill): 4 GB failed at 10M events, 12 GB fits
    con.execute(f"SET memory_limit = '{os.environ.get('UBP_BENCH_DUCKDB_MEMORY', '12GB')}'")
    con.execute(f"SET temp_directory = '{lake / '_duckdb_tmp'}'")
    # DuckDB's native Parquet reader over exactly the files the Delta log lists (never a directory glob)
    for name in ("events", "products"):
        files = DeltaTable(str(settings.table_path(name))).file_uris()
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({files!r}, hive_partitioning = false)")
    con.execute(DUCK_SQL.replace("{max_len}", str(MAX_LEN)).replace("{out}", str(out)))
    users = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()[0]
    return {"stage_s": round(time.perf_counter() - t0, 2), "users": users, "out": str(out)}


# ------------------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------------------
def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, float, float]:
    """Run a worker subprocess; return (its JSON result, wall seconds, peak RSS GiB of its process tree).

    The result also gets `peak_rss_gib_by_role`: the Python driver process alone and its children (the JVM and the
    Python workers it forks; forked workers share pages, so the sum overstates)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    peak, peak_py, peak_jvm = 0, 0, 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak, peak_py, peak_jvm
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                py = p.memory_info().rss
                jvm = sum(c.memory_info().rss for c in p.children(recursive=True))
                peak, peak_py, peak_jvm = max(peak, py + jvm), max(peak_py, py), max(peak_jvm, jvm)
            except psutil.Error:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gib_by_role"] = {"python": round(peak_py / 2**30, 2), "children": round(peak_jvm / 2**30, 2)}
    return result, wall, peak / 2**30


def compare(spark_out: str, duck_out: str, sample: int = 300) -> dict:
    """Row counts, total events and exact arrays for a sample of users must agree between the two engines."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ubp.reader import iter_batches

    cols = ["client_id", "n_events", "seq_len", "event_type", "sku", "category", "price", "url", "query", "day",
            "week", "sku_raw", "ts"]
    duck = pq.read_table(duck_out, columns=cols)
    ids = sorted(duck["client_id"].to_pylist())[:: max(1, duck.num_rows // sample)]
    want = {r["client_id"]: r for r in duck.filter(pc.is_in(duck["client_id"], value_set=__import__(
        "pyarrow").array(ids))).to_pylist()}
    n_rows, n_events, same, checked = 0, 0, 0, 0
    for b in iter_batches(spark_out, columns=cols, batch_size=65536):
        n_rows += b.num_rows
        n_events += pc.sum(b["n_events"]).as_py()
        sub = b.filter(pc.is_in(b["client_id"], value_set=__import__("pyarrow").array(ids)))
        for r in sub.to_pylist():
            checked += 1
            same += int(r == want.get(r["client_id"]))
    return {"rows_equal": n_rows == duck.num_rows, "events_equal": n_events == pc.sum(duck["n_events"]).as_py(),
            "sample_users": checked, "sample_identical": same}


def vacuum_scratch(table: Path) -> None:
    """Every run overwrites the benchmark's user_sequences table, and Delta keeps the replaced files until a VACUUM:
    drop them (retention 0 is fine for this scratch table; nothing reads its old versions), or repeated runs fill
    the disk (~200 MB per run at 10M events)."""
    from deltalake import DeltaTable

    DeltaTable(str(table)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)


def reset_outputs(lake: Path) -> None:
    """Drop the Spark stage's output tables, so every invocation measures the same thing: the first run creates
    them, the later ones rebuild over a table with a short log, as a daily rebuild does. Kept across invocations,
    the output's Delta log grew by a version per run (300+ after a day of benchmarking, every overwrite's removed
    files kept as tombstones for 7 days), so results depended on how often the benchmark had run before (loading
    that snapshot: ~2.7 s of Spark jobs in a fresh JVM). DuckDB's output is a plain file, rewritten each run."""
    import shutil

    from ubp.config import Settings

    settings = Settings(lakehouse=lake)
    for name in ("user_sequences", "vocabularies"):
        shutil.rmtree(settings.table_path(name), ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, nargs="+", default=[2_000_000, 10_000_000])
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("UBP_BENCH_DIR", "/tmp/ubp-bench/sequences")))
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (Spark runs local[2]).")
    ap.add_argument("--repeat", type=int, default=1,
                    help="Runs per engine (alternating); walls and ratios are medians, every run is listed.")
    ap.add_argument("--no-cds-too", action="store_true",
                    help="Also run Spark once more without the driver's CDS archive (UBP_CDS=0), for the comparison.")
    ap.add_argument("--prepare-only", action="store_true", help="Only generate the data (outside the lock).")
    ap.add_argument("--worker", choices=["spark", "duckdb"], help=argparse.SUPPRESS)
    ap.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "spark":
        print(json.dumps(worker_spark(args.lake)))
        return
    if args.worker == "duckdb":
        print(json.dumps(worker_duckdb(args.lake, args.threads)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.events:
        t0 = time.perf_counter()
        lake, total = make_bronze(n, args.workdir)
        print(f"bronze ready: {total:,} events ({time.perf_counter() - t0:.0f}s)", flush=True)
        if args.prepare_only:
            continue
        reset_outputs(lake)
        duck_walls, spark_walls = [], []
        for _ in range(args.repeat):  # alternate the engines so drift in the machine hits both alike
            duck, duck_wall, duck_mem = run_measured(["--worker", "duckdb", "--lake", str(lake),
                                                      "--threads", str(args.threads)])
            spark, spark_wall, spark_mem = run_measured(["--worker", "spark", "--lake", str(lake)])
            duck_walls.append(round(duck_wall, 1))
            spark_walls.append(round(spark_wall, 1))
        duck_wall, spark_wall = statistics.median(duck_walls), statistics.median(spark_walls)
        check = compare(spark["out"], duck["out"])
        vacuum_scratch(Path(spark["out"]))
        row = {"events": total, "users": spark["users"], "spark_wall_s": round(spark_wall, 1),
               "spark_jvm_start_s": spark["jvm_start_s"], "spark_stage_s": spark["stage_s"],
               "spark_phases_s": spark["timings"], "spark_events_per_s": round(total / spark_wall),
               "spark_peak_rss_gib": round(spark_mem, 2),
               "spark_driver_python_rss_gib": spark["peak_rss_gib_by_role"]["python"],
               "spark_jvm_rss_gib": spark["peak_rss_gib_by_role"]["children"], "duckdb_wall_s": round(duck_wall, 1),
               "duckdb_events_per_s": round(total / duck_wall), "duckdb_peak_rss_gib": round(duck_mem, 2),
               "ratio_wall": round(spark_wall / duck_wall, 2),
               "ratio_excl_jvm_start": round((spark_wall - spark["jvm_start_s"]) / duck_wall, 2),
               "spark_cds_archive": spark["cds_archive"], "runs": args.repeat, "spark_walls_s": spark_walls,
               "duckdb_walls_s": duck_walls,
               "users_equal": spark["users"] == duck["users"], **check}
        if args.no_cds_too:
            plain, plain_wall, _ = run_measured(["--worker", "spark", "--lake", str(lake)], env={"UBP_CDS": "0"})
            row |= {"spark_no_cds_wall_s": round(plain_wall, 1), "spark_no_cds_jvm_start_s": plain["jvm_start_s"],
                    "ratio_wall_no_cds": round(plain_wall / duck_wall, 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| events | users | Spark wall s | of which JVM start s | Spark ev/s | Spark peak RSS GiB (Python driver / "
          "JVM + workers) | DuckDB wall s | DuckDB ev/s | DuckDB peak RSS GiB | ratio | ratio w/o JVM start |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['events']:,} | {r['users']:,} | {r['spark_wall_s']} | {r['spark_jvm_start_s']} | "
              f"{r['spark_events_per_s']:,} | {r['spark_peak_rss_gib']} ({r['spark_driver_python_rss_gib']} / "
              f"{r['spark_jvm_rss_gib']}) | {r['duckdb_wall_s']} | "
              f"{r['duckdb_events_per_s']:,} | {r['duckdb_peak_rss_gib']} | {r['ratio_wall']} | "
              f"{r['ratio_excl_jvm_start']} |")


if __name__ == "__main__":
    main()
