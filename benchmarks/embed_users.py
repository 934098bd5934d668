"""Benchmark: users/s of `embed-users` through Spark (mapInPandas, local[2], model loaded once per worker) vs the
in-process encode over the same Delta table (target ratio >= 0.5), and peak RSS of the streaming in-process encode
+ challenge export as the number of users grows (should stay flat: both stream).

Run: flock /tmp/ubp-bench.lock .venv/bin/python benchmarks/embed_users.py [--users 20000 --mem-users 20000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def make_model(settings, preset: str = "small") -> tuple[str, Path]:
    """A randomly initialised model version in the registry (throughput does not depend on training)."""
    import torch

    from models.common import save_weights
    from models.gru_ae import GRUAEConfig, GRUAutoencoder
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


def in_process(path: Path, model_dir: Path, threads: int) -> tuple[int, float]:
    import torch

    from models.infer_user import encode_batches, load_model
    from ubp.reader import iter_batches

    torch.set_num_threads(threads)
    model, _ = load_model(model_dir, device="cpu")
    t0 = time.perf_counter()
    n = sum(len(c) for c, _, _ in encode_batches(model, iter_batches(path, batch_size=4096)))
    return n, time.perf_counter() - t0


def mem_probe(lakehouse: str, users: int) -> None:
    """Child process: encode every user of an existing table in-process (streaming), write the profiles in
    batches, export them; print peak RSS (the parent wrote the table, so its memory is not counted here)."""
    import numpy as np

    from ubp import registry
    from ubp.config import Settings

    settings = Settings(lakehouse=lakehouse)
    path = settings.table_path("user_sequences")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model_dir = registry.version_dir(settings, "user", registry.require_current(settings, "user"))
    n, sec = in_process(path, model_dir, 1)
    enc_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # export path: write a profile table from the streamed encodings, then export it
    import pyarrow as pa
    from deltalake import write_deltalake

    from models.infer_user import encode_batches, load_model
    from ubp.export import export_challenge
    from ubp.reader import iter_batches
    from ubp.tables import USER_PROFILES

    model, _ = load_model(model_dir, device="cpu")
    dest = settings.table_path("user_profiles")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for cids, ns, z in encode_batches(model, iter_batches(path, batch_size=8192)):
        m = len(cids)
        write_deltalake(str(dest), pa.Table.from_pydict({
            "client_id": cids, "embedding": list(z), "model_version": ["bench"] * m,
            "as_of": pa.array([0] * m, pa.int64()).cast(pa.timestamp("us", tz="UTC")), "n_events": ns,
            "created_at": pa.array([0] * m, pa.int64()).cast(pa.timestamp("us", tz="UTC"))},
            schema=USER_PROFILES.arrow_schema()), mode="append")
    before_export = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = export_challenge(settings, Path(lakehouse) / "export")
    emb = np.load(Path(lakehouse) / "export" / "embeddings.npy", mmap_mode="r")
    print(json.dumps({"users": users, "encoded": n, "encode_s": sec, "rss_after_imports_mb": base / 1024,
                      "peak_rss_encode_mb": enc_peak / 1024, "peak_rss_before_export_mb": before_export / 1024,
                      "peak_rss_after_export_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "export_rows": info["rows"]["client_ids"], "export_shape": list(emb.shape)}))


def spark_vs_in_process(users: int) -> dict:
    from user_model_fixtures import write_bench_lakehouse

    from spark_jobs.session import get_spark
    from ubp.config import Settings
    from ubp.stages.user_model import embed_users

    tmp = Path(tempfile.mkdtemp(prefix="ubp-bench-embed-"))
    settings = Settings(lakehouse=tmp, spark_conf=(("spark.sql.shuffle.partitions", "2"),))
    path = write_bench_lakehouse(settings, users, chunk=10_000)  # several files -> several Spark tasks
    version, model_dir = make_model(settings)
    res: dict = {}
    n, sec = in_process(path, model_dir, 1)
    res["in_process_1thread_users_s"] = n / sec
    print(f"in-process encode (1 thread): {n / sec:8.0f} users/s ({sec:.1f}s)", flush=True)
    get_spark(settings)  # session start is not part of the job
    for run, engine in (("cold", "pandas"), ("warm", "pandas"), ("warm", "arrow")):
        t0 = time.perf_counter()
        out = embed_users(settings, engine=engine)
        s = time.perf_counter() - t0
        res[f"spark_{engine}_{run}_users_s"] = out["rows"]["user_profiles"] / s
        print(f"spark embed-users {engine} ({run}): {out['rows']['user_profiles'] / s:8.0f} users/s ({s:.1f}s)",
              flush=True)
    best_in = res["in_process_1thread_users_s"]  # 2 threads ran 9x slower on the shared box (spin-waits)
    for engine in ("pandas", "arrow"):
        res[f"ratio_spark_{engine}_warm_over_in_process"] = res[f"spark_{engine}_warm_users_s"] / best_in
        print(f"ratio spark {engine} (warm) / best in-process: "
              f"{res[f'ratio_spark_{engine}_warm_over_in_process']:.2f}", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--mem-users", default="20000,100000")
    p.add_argument("--mem-probe", nargs=2, metavar=("LAKEHOUSE", "USERS"), help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    p.add_argument("--skip-spark", action="store_true", help="only the memory probes")
    a = p.parse_args()
    if a.mem_probe:
        mem_probe(a.mem_probe[0], int(a.mem_probe[1]))
        return
    from user_model_fixtures import write_bench_lakehouse

    from ubp.config import Settings

    res: dict = {"users": a.users, "preset": "small (random init)"}
    if not a.skip_spark:
        res.update(spark_vs_in_process(a.users))
    res["memory"] = []
    for users in [int(x) for x in a.mem_users.split(",") if x]:
        with tempfile.TemporaryDirectory(prefix="ubp-bench-mem-") as d:
            write_bench_lakehouse(Settings(lakehouse=d), users, chunk=20_000)
            make_model(Settings(lakehouse=d))
            out = subprocess.run([sys.executable, __file__, "--mem-probe", d, str(users)], capture_output=True,
                                 text=True, cwd=REPO)
            if out.returncode != 0:
                print(out.stderr[-2000:])
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            res["memory"].append(rec)
            print(f"{users} users: peak RSS encode {rec['peak_rss_encode_mb']:.0f} MB, after export "
                  f"{rec['peak_rss_after_export_mb']:.0f} MB (after imports {rec['rss_after_imports_mb']:.0f} MB)",
                  flush=True)
    res["machine"] = f"{platform.node()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
