"""Item search at catalog size: the FAISS HNSW index of `ubp/item_index.py` against exact cosine search.

Synthetic item vectors shaped like the real ones (dim 64 = the item model's d_model; a Gaussian mixture of
clusters of Zipf-like sizes with a decaying per-axis spectrum, like PCA'd content embeddings, not uniform noise).
Measured, with the code `ubp publish` / `ubp similar-items` run (`ubp.item_index.write_index`, `ItemIndex.load`,
`ItemIndex.neighbours`):
  - index build: seconds (`--threads`, default 2), peak RSS of this process before / after the build;
  - index size on disk (index.faiss + skus + cold flags + manifest) and load seconds;
  - recall@10 against exact search (normalised matrix product) on `--queries` random catalog items, each query
    leaving the item itself out as `similar-items` does;
  - per-query latency p50 / p99, one query at a time, 1 FAISS thread, for each `--ef` (search beam): wall clock
    (what a caller waits, including time the scheduler gives to other processes) and the thread's CPU time (the
    search's own cost, unaffected by other load on the machine).

Run:  flock /tmp/ubp-bench.lock nice -n 10 .venv/bin/python benchmarks/item_search.py [--items 1200000]
      [--dim 64] [--m 16] [--ef-construction 64] [--ef 64,128,192] [--queries 1000] [--out result.json]
Prints one JSON object (also to --out) and a markdown row per ef.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ubp.item_index import IndexParams, ItemIndex, normalise, write_index  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def clustered_vectors(n: int, dim: int, seed: int = 0, per_cluster: int = 500, chunk: int = 200_000) -> np.ndarray:
    """`n` float32 vectors from a Gaussian mixture: n / per_cluster centres, Zipf-like cluster sizes, per-axis
    scales decaying like a PCA spectrum, within-cluster spread 0.5-1.0 times the between-cluster spread (neighbourhoods overlap, as in real embeddings)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n // per_cluster)
    spectrum = (1.0 / np.sqrt(1.0 + np.arange(dim) / 8.0)).astype(np.float32)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32) * spectrum
    sizes = 1.0 / (1.0 + np.arange(n_clusters)) ** 0.7
    assign_p = rng.permutation(sizes / sizes.sum())
    spread = rng.uniform(0.5, 1.0, n_clusters).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        c = rng.choice(n_clusters, size=m, p=assign_p)
        noise = rng.standard_normal((m, dim), dtype=np.float32) * spectrum
        out[start:start + m] = centres[c] + noise * spread[c, None]
    return out


def exact_top(unit: np.ndarray, rows: np.ndarray, k: int, block: int = 50) -> np.ndarray:
    """Exact top-k rows by cosine for each query row, the query row itself left out."""
    out = np.empty((len(rows), k), dtype=np.int64)
    for i in range(0, len(rows), block):
        q = rows[i:i + block]
        scores = unit[q] @ unit.T  # (block, n)
        scores[np.arange(len(q)), q] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[i:i + len(q)] = np.take_along_axis(part, order, axis=1)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--m", type=int, default=IndexParams.m)
    ap.add_argument("--ef-construction", type=int, default=IndexParams.ef_construction)
    ap.add_argument("--ef", default="64,128,192", help="search beams to measure, comma-separated")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="FAISS threads for the build (queries use 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import faiss

    t0 = time.perf_counter()
    vecs = clustered_vectors(args.items, args.dim, args.seed)
    gen_s = time.perf_counter() - t0
    skus = np.arange(10_000_000, 10_000_000 + args.items, dtype=np.int64)
    cold = np.zeros(args.items, dtype=bool)
    cold[::5] = True  # a fifth cold, as a marker only: the index treats every item alike
    rss_before = peak_rss_gb()
    params = IndexParams(m=args.m, ef_construction=args.ef_construction)  # ef_search: each --ef is measured
    with tempfile.TemporaryDirectory(prefix="ubp-item-search-") as tmp:
        root = Path(tmp)
        manifest = write_index(root, "bench-v1", skus, vecs, cold, {"synthetic": True, "seed": args.seed},
                               params, threads=args.threads)
        rss_build = peak_rss_gb()
        size = sum(f.stat().st_size for f in (root / "bench-v1").iterdir())
        t1 = time.perf_counter()
        idx = ItemIndex.load(root / "bench-v1")
        load_s = time.perf_counter() - t1
        rng = np.random.default_rng(args.seed + 1)
        qrows = rng.choice(args.items, size=args.queries, replace=False)
        t2 = time.perf_counter()
        unit = normalise(vecs)
        del vecs
        truth = exact_top(unit, qrows, args.k)
        exact_s = (time.perf_counter() - t2) / args.queries
        faiss.omp_set_num_threads(1)
        per_ef = []
        for ef in (int(e) for e in args.ef.split(",")):
            lat, cpu, hits = np.empty(args.queries), np.empty(args.queries), 0
            for j, r in enumerate(qrows):
                q = unit[r]
                s, c = time.perf_counter(), time.thread_time()
                got = idx.neighbours(q, args.k, exclude_sku=int(skus[r]), ef_search=ef)
                lat[j], cpu[j] = time.perf_counter() - s, time.thread_time() - c
                hits += len({g["sku"] for g in got} & set(skus[truth[j]].tolist()))
            per_ef.append({"ef_search": ef, "recall@10": round(hits / (args.k * args.queries), 4),
                           "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
                           "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
                           "mean_ms": round(float(lat.mean()) * 1e3, 3),
                           "cpu_p50_ms": round(float(np.percentile(cpu, 50)) * 1e3, 3),
                           "cpu_p99_ms": round(float(np.percentile(cpu, 99)) * 1e3, 3)})
            print(json.dumps(per_ef[-1]), flush=True)
    res = {
        "items": args.items, "dim": args.dim, "params": manifest["params"], "library": manifest["library"],
        "library_version": manifest["library_version"], "build_threads": args.threads,
        "generate_s": round(gen_s, 2), "build_s": manifest["build_seconds"],
        "peak_rss_gb_before_build": round(rss_before, 3), "peak_rss_gb_after_build": round(rss_build, 3),
        "index_bytes_on_disk": size, "load_s": round(load_s, 3), "exact_s_per_query_batched": round(exact_s, 5),
        "queries": args.queries, "search": per_ef, "machine": platform.machine(),
        "date": datetime.now(UTC).date().isoformat(),
    }
    print(json.dumps(res, indent=2))
    for s in per_ef:
        print(f"| {args.items:,} x {args.dim}, M={res['params']['m']}, efC={res['params']['ef_construction']}, "
              f"ef={s['ef_search']} | build {res['build_s']} s, peak RSS {rss_build:.2f} GB, "
              f"{size / 1e6:.0f} MB | recall@10 {s['recall@10']} | p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms "
              f"(CPU {s['cpu_p50_ms']} / {s['cpu_p99_ms']} ms) |")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
