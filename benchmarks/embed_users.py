"""Benchmark: `embed-users` through Spark (local[2], mapInArrow / mapInPandas, model loaded once per Python worker)
vs the in-process encode of the same Delta table (users/s, target ratio >= 0.5 on 2 cores), and peak memory as the
number of users grows (should stay flat: every path streams).

Tables are synthesised directly with pyarrow + deltalake in the `user_sequences` contract schema (lengths from a
shifted power law: mean ~60 events, capped at 126 = 128 tokens with BOS/EOS) and cached under `--cache`, with a
randomly initialised `small` model (throughput does not depend on training). Every measurement runs in its own
child process, so the peak RSS of each is its own:
  - in-process: stream the table with `ubp.reader.iter_batches` and `encode` batch by batch: 1 torch thread over
    the whole first size, 2 threads as a rate over its first 10k users (`--inproc-all-sizes`: also the larger ones);
  - Spark: `ubp.stages.embed_users.embed_users` (writes gold `user_profiles`, fresh table) after a warm-up that starts
    the Python workers and loads the model; a sampler reads VmHWM/VmRSS of the driver, the JVM and the Python
    workers (pyspark daemon + forked workers) from /proc every 0.2 s, and the CPU seconds of each role.
    mapInArrow and mapInPandas at the first size, mapInArrow at the larger ones.
Prints a ready-to-paste markdown table (and `--json` writes the raw records).

Run (quiet machine, tables already cached; estimated 6-8 min from CPU-seconds measured under load):
    flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/embed_users.py --sizes 100000,400000
Smoke: nice -n 10 .venv/bin/python benchmarks/embed_users.py --sizes 3000,6000 --cache /tmp/ubp-bench/embed-smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(REPO))

MAX_EVENTS = 126  # max_len 128 minus BOS/EOS


def bench_lengths(n: int, seed: int):
    """Shifted power-law lengths: many short users, a long tail capped at 126 (~30% capped), mean ~60."""
    import numpy as np

    u = np.random.default_rng(seed).random(n)
    return np.clip(np.floor(30 * u ** (-1 / 0.8)) - 29, 1, MAX_EVENTS).astype(np.int64)


def make_model(settings, preset: str = "small") -> tuple[str, Path]:
    """A randomly initialised model version in the registry (throughput does not depend on training)."""
    import torch
    from ubp.models.common import save_weights
    from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder

    from ubp import reader, registry

    sizes = reader.vocab_sizes(settings.table_path("vocabularies"), "v-test")
    cfg = GRUAEConfig.preset(preset, sizes)
    torch.manual_seed(0)
    version, vdir = registry.new_version(settings, "user", tag="bench")
    save_weights(GRUAutoencoder(cfg), vdir / "weights.safetensors")
    (vdir / "config.json").write_text(json.dumps(cfg.to_dict()))
    (vdir / "model.json").write_text(json.dumps({"kind": "user", "version": version, "vocab_version": "v-test"}))
    registry.promote(settings, "user", version, reason="benchmark")
    return version, vdir


def ensure_table(cache: Path, users: int, chunk: int = 25_000) -> Path:
    """The cached lakehouse for `users` users (written once, in chunks of `chunk` users: bounded memory, one
    Delta file per chunk -> several Spark input splits)."""
    import numpy as np
    from deltalake import write_deltalake
    from user_model_fixtures import make_sequences_fast, write_bench_lakehouse

    from ubp.config import Settings

    d = cache / f"u{users}"
    if (d / "READY.json").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    settings = Settings(lakehouse=d)
    write_bench_lakehouse(settings, 1)  # vocabularies + the table's first commit
    path = settings.table_path("user_sequences")
    events = 0
    for i, start in enumerate(range(0, users, chunk)):
        lens = bench_lengths(min(chunk, users - start), seed=1000 + i)
        events += int(lens.sum())
        t = make_sequences_fast(len(lens), seed=i, first_client=start, lengths=lens)
        write_deltalake(str(path), t, mode="overwrite" if i == 0 else "append")
        print(f"  table u{users}: {start + len(lens):,} users written", flush=True)
    make_model(settings)
    (d / "READY.json").write_text(json.dumps({"users": users, "events": events,
                                              "mean_len": events / users, "max_len": int(np.int64(MAX_EVENTS))}))
    return d


# ------------------------------------------------------------------------------------------------------------------
# memory sampling
# ------------------------------------------------------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeSampler:
    """Peak RSS per role in this process tree: the driver (this process), the JVM, its Python workers."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_kb = {"driver": 0, "jvm": 0, "worker_max": 0, "workers_sum": 0}
        self.n_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        self.peak_kb["driver"] = max(self.peak_kb["driver"], _status_kb(me.pid, "VmHWM"))
        workers_now = 0
        seen = 0
        for p in me.children(recursive=True):
            try:
                name = p.name()
                if name == "java":
                    self.peak_kb["jvm"] = max(self.peak_kb["jvm"], _status_kb(p.pid, "VmHWM"))
                elif name.startswith("python") and any(a.name() == "java" for a in p.parents()):
                    self.peak_kb["worker_max"] = max(self.peak_kb["worker_max"], _status_kb(p.pid, "VmHWM"))
                    workers_now += _status_kb(p.pid, "VmRSS")
                    seen += 1
            except psutil.Error:
                continue
        self.peak_kb["workers_sum"] = max(self.peak_kb["workers_sum"], workers_now)
        self.n_workers = max(self.n_workers, seen)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @staticmethod
    def cpu_seconds() -> dict[str, float]:
        """user+system CPU seconds of this process (driver), the JVM and the Python workers (live ones)."""
        import psutil

        total = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                role = ("driver" if p.pid == me.pid else "jvm" if p.name() == "java"
                        else "workers" if any(a.name() == "java" for a in p.parents()) else "driver")
                total[role] += t.user + t.system
            except psutil.Error:
                continue
        return total

    def mb(self) -> dict[str, float]:
        return {f"peak_rss_{k}_mb": round(v / 1024, 1) for k, v in self.peak_kb.items()}


# ------------------------------------------------------------------------------------------------------------------
# probes (each in its own child process)
# ------------------------------------------------------------------------------------------------------------------
def probe_in_process(lakehouse: str, threads: int, max_users: int | None = None) -> dict:
    import resource

    import torch
    from ubp.models.infer_user import encode_batches, load_model
    from ubp.models.user_data import columns_for

    from ubp import registry
    from ubp.config import Settings
    from ubp.reader import iter_batches

    torch.set_num_threads(threads)
    settings = Settings(lakehouse=lakehouse)
    model_dir = registry.version_dir(settings, "user", registry.require_current(settings, "user"))
    model, _ = load_model(model_dir, device="cpu")
    cols = columns_for(model.config.input_fields)
    base = _status_kb(os.getpid(), "VmHWM")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    n = 0
    for cids, _, _ in encode_batches(model, iter_batches(settings.table_path("user_sequences"), columns=cols,
                                                         batch_size=4096)):
        n += len(cids)
        if max_users and n >= max_users:
            break
    sec = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    label = f"in-process encode, {threads} thread{'s' if threads > 1 else ''}"
    if max_users:
        label += f" (rate over the first {n:,} users)"
    return {"path": label, "users": n,
            "seconds": round(sec, 2), "users_s": n / sec, "cpu_s": round(cpu, 2), "peak_rss_driver_mb": _status_kb(os.getpid(), "VmHWM")
            / 1024, "rss_after_model_load_mb": base / 1024}


def probe_spark(lakehouse: str, engine: str, arrow_batch: int | None) -> dict:
    from ubp.spark_jobs import embed_users as E
    from ubp.spark_jobs.session import get_spark

    from ubp import registry
    from ubp.config import Settings
    from ubp.stages.embed_users import embed_users

    conf = [("spark.sql.shuffle.partitions", "2")]
    if arrow_batch:
        conf.append(("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch)))
    settings = Settings(lakehouse=lakehouse, spark_conf=tuple(conf))
    shutil.rmtree(settings.table_path("user_profiles"), ignore_errors=True)  # every run writes a fresh table
    version = registry.require_current(settings, "user")
    model_dir = registry.version_dir(settings, "user", version)
    spark = get_spark(settings)
    t0 = time.perf_counter()  # warm-up: start both Python workers, import torch, load the model in each
    import datetime as dt

    warm = spark.read.format("delta").load(str(settings.table_path("user_sequences"))).limit(2000).repartition(2)
    E.profiles(warm, model_dir, version, dt.datetime.now(dt.UTC), engine=engine).write.format("noop") \
        .mode("overwrite").save()
    warm_s = time.perf_counter() - t0
    with TreeSampler() as sampler:
        cpu0 = sampler.cpu_seconds()
        t0 = time.perf_counter()
        out = embed_users(settings, engine=engine)
        sec = time.perf_counter() - t0
        cpu1 = sampler.cpu_seconds()
        cpu = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1}
    n = out["rows"]["user_profiles"]
    label = f"Spark `embed-users` ({'mapInArrow' if engine == 'arrow' else 'mapInPandas'})"
    if arrow_batch:
        label += f", maxRecordsPerBatch {arrow_batch}"
    spark.stop()
    return {"path": label, "users": n, "seconds": round(sec, 2), "users_s": n / sec, "cpu_s": round(sum(cpu.values()), 2),
            "cpu_s_by_role": cpu, "warmup_s": round(warm_s, 1),
            "python_workers": sampler.n_workers, **sampler.mb()}


def run_probe(args: list[str], timeout: float) -> dict | None:
    env = {**os.environ, "UBP_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, "--probe", *args], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=timeout)
    if out.returncode != 0:
        print(f"probe {args} failed:\n{out.stderr[-3000:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(records: list[dict]) -> str:
    def mb(r: dict, k: str) -> str:
        v = r.get(k)
        return f"{v:,.0f}" if v else "-"

    lines = ["| users | path | users/s | ratio to best in-process (same or first size) | peak RSS driver MB | "
             "peak RSS JVM MB | peak RSS per Python worker MB (sum of workers) | CPU-s driver / JVM / workers |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in records:
        ratio = f"**{r['ratio']:.2f}**" if r.get("ratio") is not None else "-"
        roles = r.get("cpu_s_by_role")
        cpu = " / ".join(f"{roles[k]:.0f}" for k in ("driver", "jvm", "workers")) if roles else f"{r['cpu_s']:.0f}"
        worker = f"{mb(r, 'peak_rss_worker_max_mb')} ({mb(r, 'peak_rss_workers_sum_mb')})" \
            if r.get("peak_rss_worker_max_mb") else "-"
        lines.append(f"| {r['users_total']:,} | {r['path']} | {r['users_s']:,.0f} | {ratio} | {mb(r, 'peak_rss_driver_mb')}"
                     f" | {mb(r, 'peak_rss_jvm_mb')} | {worker} | {cpu} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,400000", help="user counts (comma-separated)")
    p.add_argument("--cache", default="/tmp/ubp-bench/embed", help="where the synthetic lakehouses are cached")
    p.add_argument("--engines", default="arrow,pandas", help="Spark engines at the first size (arrow only after)")
    p.add_argument("--threads", default="1,2",
                   help="in-process torch threads at the first size (1 after); '' = Spark only (e.g. a 1M memory run)")
    p.add_argument("--inproc-all-sizes", action="store_true",
                   help="also run the in-process baseline (1 thread) at the larger sizes (memory; costs time)")
    p.add_argument("--rate-users", type=int, default=10000,
                   help="the extra in-process thread counts encode only this many users (a rate, not memory)")
    p.add_argument("--arrow-batch", type=int, default=None, help="spark.sql.execution.arrow.maxRecordsPerBatch")
    p.add_argument("--timeout", type=float, default=1800, help="per probe, seconds")
    p.add_argument("--json", default=None)
    p.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.probe:
        kind, lakehouse, opt = a.probe[0], a.probe[1], a.probe[2]
        rec = (probe_in_process(lakehouse, int(opt), int(a.probe[3]) if len(a.probe) > 3 else None)
               if kind == "inproc"
               else probe_spark(lakehouse, opt, int(a.probe[3]) if len(a.probe) > 3 else None))
        print(json.dumps(rec))
        return
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in a.sizes.split(",") if x]
    records: list[dict] = []
    t_start = time.perf_counter()
    for i, users in enumerate(sizes):
        lh = ensure_table(cache, users)
        ready = json.loads((lh / "READY.json").read_text())
        print(f"{users:,} users, mean length {ready['mean_len']:.1f} events", flush=True)
        here: list[dict] = []
        threads = [int(x) for x in a.threads.split(",") if x] if i == 0 else [1] if a.inproc_all_sizes else []
        for j, t in enumerate(threads):
            rec = run_probe(["inproc", str(lh), str(t), *([str(a.rate_users)] if j else [])], a.timeout)
            if rec:
                here.append(rec)
                print(f"  {rec['path']}: {rec['users_s']:,.0f} users/s over {rec['users']:,} users, peak RSS "
                      f"{rec['peak_rss_driver_mb']:,.0f} MB, {rec['users'] / max(rec['cpu_s'], 1e-9):,.0f} users per "
                      f"CPU-second", flush=True)
        best = max((r["users_s"] for r in here), default=None)
        best = best or max((r["users_s"] for r in records if r["path"].startswith("in-process")), default=None)
        for engine in (a.engines.split(",") if i == 0 else a.engines.split(",")[:1]):
            extra = [str(a.arrow_batch)] if a.arrow_batch else []
            rec = run_probe(["spark", str(lh), engine, *extra], a.timeout)
            if rec:
                rec["ratio"] = rec["users_s"] / best if best else None
                here.append(rec)
                ratio = f"{rec['ratio']:.2f}" if rec["ratio"] is not None else "-"
                print(f"  {rec['path']}: {rec['users_s']:,.0f} users/s (ratio {ratio}), driver "
                      f"{rec['peak_rss_driver_mb']:,.0f} MB, JVM {rec['peak_rss_jvm_mb']:,.0f} MB, worker "
                      f"{rec['peak_rss_worker_max_mb']:,.0f} MB (sum {rec['peak_rss_workers_sum_mb']:,.0f}), "
                      f"{rec['cpu_s']:.0f} CPU-s {rec['cpu_s_by_role']} in {rec['seconds']:.0f} s, warm-up "
                      f"{rec['warmup_s']:.0f} s",
                      flush=True)
        for r in here:
            r["users_total"], r["mean_len"] = users, ready["mean_len"]
        records.extend(here)
    load = os.getloadavg()
    print(f"\nMachine: {platform.node()}, {os.cpu_count()} cpus, load average at the end {load[0]:.1f}; "
          f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; total {time.perf_counter() - t_start:.0f} s\n")
    print(markdown(records))
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
