"""Approximate nearest-neighbour index over item vectors (FAISS HNSW, cosine), versioned with the item model.

Why: `similar-items` used to read the whole catalog through Feast and score it exactly on every call; at catalog
size (1.2M items) that is about a minute per query. An HNSW graph answers one in under a millisecond of CPU at
recall@10 0.97 (`benchmarks/item_search.py`, docs/benchmarks.md).

Layout: `<lakehouse>/_index/item_vectors/<item model version>/` holds
  - `index.faiss`   the graph and the normalised vectors (FAISS's own format, `faiss.write_index`; no pickle),
  - `skus.npy`, `is_cold.npy`  row -> sku / coldness (`np.save`, read with `allow_pickle=False`),
  - `manifest.json` model version, count, dim, metric, library + version, build params and seconds, and the
    `item_vectors` Delta version it was built from (the staleness check compares it with what was published).
A directory is written under a temporary name and renamed into place, so a reader never sees half an index.
Cosine = inner product of L2-normalised vectors (`METRIC_INNER_PRODUCT`): scores are cosines, best first.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ubp.errors import UbpError

INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
SKUS_FILE = "skus.npy"
COLD_FILE = "is_cold.npy"
METRIC = "cosine"
KEEP_VERSIONS = 2  # the index just built and the one before it (a rollback re-publish can reuse it)


@dataclass(frozen=True)
class IndexParams:
    """HNSW parameters: `m` links per node, `ef_construction` build beam, `ef_search` query beam (>= k is used).

    Defaults tuned at 1.2M clustered 64-d vectors on 2 cores (docs/benchmarks.md#item-search-ann-index): recall@10
    0.97 at well under 1 ms per query; M=32 / ef_construction=128 gains little recall for 2.3x the build time.
    `ef_search` only affects queries: raise it for more recall (192: 0.977, 256: 0.982 at 1.2M)."""

    m: int = 16
    ef_construction: int = 64
    ef_search: int = 128


def index_root(lakehouse: Path) -> Path:
    """Where the item-vector indexes live (next to `_feast`: the index serves what was published)."""
    return Path(lakehouse) / "_index" / "item_vectors"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Row L2-normalised float32 copy (zero rows stay zero), so inner product = cosine."""
    v = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v /= np.maximum(norms, 1e-12)
    return v


def build_hnsw(vectors: np.ndarray, params: IndexParams = IndexParams(), threads: int | None = None) -> Any:
    """A FAISS HNSW index (inner product) over the normalised `vectors`; row i gets id i."""
    import faiss

    if vectors.ndim != 2 or not len(vectors):
        raise UbpError(f"cannot index {vectors.shape} item vectors: need a non-empty (n, dim) matrix")
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    index = faiss.IndexHNSWFlat(int(vectors.shape[1]), int(params.m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(params.ef_construction)
    index.hnsw.efSearch = int(params.ef_search)
    index.add(normalise(vectors))
    return index


def search(index: Any, queries: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosines) of the k nearest rows per query, best first; -1 rows where the graph found fewer."""
    import faiss

    q = normalise(np.atleast_2d(queries))
    k = min(int(k), index.ntotal)
    scores, rows = index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=max(int(ef_search), k)))
    return rows, scores


def write_index(
    root: Path, model_version: str, skus: np.ndarray, vectors: np.ndarray, is_cold: np.ndarray,
    source: dict[str, Any], params: IndexParams = IndexParams(), threads: int | None = None,
) -> dict[str, Any]:
    """Build and store the index of one item model version (replacing an older build of the same version);
    returns the manifest. `source` records what it was built from (table path, Delta version)."""
    import faiss

    if not (len(skus) == len(vectors) == len(is_cold)):
        raise UbpError(f"item index: {len(skus)} skus, {len(vectors)} vectors, {len(is_cold)} cold flags")
    _check_version_name(model_version)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index = build_hnsw(vectors, params, threads)
    seconds = time.perf_counter() - t0
    tmp = root / f".{model_version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    faiss.write_index(index, str(tmp / INDEX_FILE))
    np.save(tmp / SKUS_FILE, np.asarray(skus, dtype=np.int64), allow_pickle=False)
    np.save(tmp / COLD_FILE, np.asarray(is_cold, dtype=bool), allow_pickle=False)
    manifest = {
        "model_version": model_version, "count": int(len(skus)), "dim": int(vectors.shape[1]),
        "cold": int(np.count_nonzero(is_cold)), "metric": METRIC, "library": "faiss-cpu",
        "library_version": faiss.__version__, "index_type": "IndexHNSWFlat", "params": asdict(params),
        "build_seconds": round(seconds, 3), "bytes": (tmp / INDEX_FILE).stat().st_size,
        "built_at": datetime.now(UTC).isoformat(), "source": source,
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
    final = root / model_version
    old = root / f".{model_version}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    _prune(root, keep=KEEP_VERSIONS)
    return manifest


def _check_version_name(version: str) -> None:
    if not version or "/" in version or version.startswith("."):
        raise UbpError(f"item model version {version!r} cannot name an index directory")


def _prune(root: Path, keep: int) -> None:
    """Drop all but the `keep` most recently built indexes: each is about the size of the vectors again."""
    built = sorted((d for d in root.iterdir() if d.is_dir() and (d / MANIFEST_FILE).exists()),
                   key=lambda d: (d / MANIFEST_FILE).stat().st_mtime, reverse=True)
    for d in built[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def manifests(root: Path) -> dict[str, dict[str, Any]]:
    """Model version -> manifest of every complete index under `root` (none: {})."""
    if not root.is_dir():
        return {}
    out = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_FILE).exists():
            out[d.name] = json.loads((d / MANIFEST_FILE).read_text())
    return out


@dataclass
class ItemIndex:
    """A loaded index: the graph, row -> sku / coldness, and its manifest."""

    index: Any
    skus: np.ndarray
    is_cold: np.ndarray
    manifest: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> ItemIndex:
        import faiss

        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        if manifest.get("model_version") != directory.name:
            raise UbpError(f"item index {directory} holds model {manifest.get('model_version')!r}, not "
                           f"{directory.name!r}: rebuild it with `ubp publish --view item_vector`")
        index = faiss.read_index(str(directory / INDEX_FILE))
        skus = np.load(directory / SKUS_FILE, allow_pickle=False)
        cold = np.load(directory / COLD_FILE, allow_pickle=False)
        if not (index.ntotal == len(skus) == len(cold) == manifest["count"]):
            raise UbpError(f"item index {directory} is inconsistent ({index.ntotal} vectors, {len(skus)} skus, "
                           f"manifest {manifest['count']}): rebuild it with `ubp publish --view item_vector`")
        return cls(index, skus, cold, manifest)

    def neighbours(self, query: np.ndarray, k: int, exclude_sku: int | None = None,
                   ef_search: int | None = None) -> list[dict[str, Any]]:
        """The k nearest items to `query` (sku, cosine, is_cold), best first, `exclude_sku` left out."""
        extra = 1 if exclude_sku is not None else 0
        ef = int(ef_search or self.manifest["params"]["ef_search"])
        rows, scores = search(self.index, query, k + extra, ef)
        out = []
        for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True):
            if r < 0 or (exclude_sku is not None and int(self.skus[r]) == int(exclude_sku)):
                continue
            out.append({"sku": int(self.skus[r]), "score": float(s), "is_cold": bool(self.is_cold[r])})
        return out[:k]
