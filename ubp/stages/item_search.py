"""The item-vector ANN index: built by `ubp publish` from the gold `item_vectors` it published, read by
`similar-items` (`ubp.stages.publish.similar_items`). The index itself (FAISS HNSW, layout, manifest) is
`ubp/item_index.py`; this module ties it to the lakehouse: which table version, which model version, when to rebuild.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.item_index import IndexParams, ItemIndex, index_root, manifests, write_index
from ubp.log import get_logger

log = get_logger(__name__)

REBUILD_HINT = "run `ubp publish --view item_vector` to rebuild it, or use exact search (--exact / exact=True)"
_loaded: dict[tuple[str, float], ItemIndex] = {}  # one loaded index per process: the CLI and API reuse it


def served_item_vectors(path: str | Path, delta_version: int | None = None,
                        space_id: str | None = None) -> dict[str, Any]:
    """Per sku the row Feast serves (latest as_of, then created_at) of gold `item_vectors` at `delta_version`:
    skus, vectors (n, dim) float32, is_cold, and the distinct model versions in the table (the stage writes one
    row per sku, all from one model). `space_id`: the rows of that vector space only (the table holds every item
    space, `ubp/spaces.py`)."""
    import numpy as np
    import pyarrow.compute as pc

    from ubp.reader import iter_batches, table_version

    version = table_version(path) if delta_version is None else int(delta_version)
    skus, vecs, cold, ts, created, mvs = [], [], [], [], [], set()
    cols = ["sku", "vector", "is_cold", "model_version", "as_of", "created_at"]
    flt = pc.field("space_id") == space_id if space_id else None
    for b in iter_batches(path, version=version, columns=cols, batch_size=65536, filter=flt):
        lists = b.column("vector")
        lengths = np.unique(lists.value_lengths().to_numpy(zero_copy_only=False))
        if len(lengths) != 1:
            raise UbpError(f"{path} v{version}: item vectors of different lengths {lengths.tolist()}")
        flat = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        vecs.append(flat.reshape(b.num_rows, int(lengths[0])))
        skus.append(b.column("sku").to_numpy().astype(np.int64))
        cold.append(b.column("is_cold").to_numpy(zero_copy_only=False).astype(bool))
        mvs.update(pc.unique(b.column("model_version")).to_pylist())
        ts.append(b.column("as_of").cast("int64").to_numpy())
        created.append(b.column("created_at").cast("int64").to_numpy())
    if not skus:
        raise UbpError(f"{path} v{version} holds no item vectors: run `ubp item-vectors`")
    dims = {v.shape[1] for v in vecs}
    if len(dims) != 1:
        raise UbpError(f"{path} v{version}: item vectors of different lengths {sorted(dims)}")
    k, t, c = np.concatenate(skus), np.concatenate(ts), np.concatenate(created)
    order = np.lexsort((c, t, k))
    k = k[order]
    last = np.ones(len(k), dtype=bool)
    last[:-1] = k[1:] != k[:-1]
    keep = order[last]
    return {"skus": k[last], "vectors": np.concatenate(vecs)[keep], "is_cold": np.concatenate(cold)[keep],
            "model_versions": sorted(mvs), "delta_version": version}


def build_item_index(
    settings: Settings, path: str | Path | None = None, delta_version: int | None = None,
    params: IndexParams = IndexParams(), force: bool = False, threads: int | None = None, space_id: str | None = None,
) -> dict[str, Any]:
    """Build the index of the served item vectors at `delta_version` (None: latest; `space_id`: of that vector
    space only) unless an index of that table version with these params exists. Returns a summary; `skipped` says
    why nothing was built."""
    from ubp.reader import table_version

    t0 = time.perf_counter()
    path = str(path or settings.table_path("item_vectors"))
    if not (Path(path) / "_delta_log").is_dir():
        raise UbpError(f"no item_vectors table at {path}: run `ubp item-vectors` first")
    version = table_version(path) if delta_version is None else int(delta_version)
    root = index_root(settings.lakehouse)
    for mv, man in manifests(root).items():
        src = man.get("source", {})
        if (not force and src.get("path") == path and src.get("delta_version") == version
                and src.get("space_id") == space_id and man.get("params") == _params_dict(params)):
            return {"model_version": mv, "count": man["count"], "dir": str(root / mv), "skipped": "up to date",
                    "seconds": round(time.perf_counter() - t0, 3)}
    served = served_item_vectors(path, version, space_id)
    if len(served["model_versions"]) != 1:
        reason = (f"the served item vectors mix model versions {served['model_versions']}: "
                  "rerun `ubp item-vectors`, then `ubp publish`")
        log.warning("item index not built: %s", reason)
        return {"skipped": reason, "seconds": round(time.perf_counter() - t0, 3)}
    mv = served["model_versions"][0]
    manifest = write_index(root, mv, served["skus"], served["vectors"], served["is_cold"],
                           {"table": "item_vectors", "path": path, "delta_version": version, "space_id": space_id},
                           params, threads)
    log.info("item index %s: %d items (%d cold), dim %d, built in %.1f s", mv, manifest["count"],
             manifest["cold"], manifest["dim"], manifest["build_seconds"])
    return {"model_version": mv, "count": manifest["count"], "dim": manifest["dim"], "dir": str(root / mv),
            "build_seconds": manifest["build_seconds"], "bytes": manifest["bytes"],
            "seconds": round(time.perf_counter() - t0, 3)}


def _params_dict(params: IndexParams) -> dict[str, int]:
    from dataclasses import asdict

    return asdict(params)


def has_index(settings: Settings) -> bool:
    """Whether any item-vector index was built in this lakehouse (none: similar-items searches exactly)."""
    return bool(manifests(index_root(settings.lakehouse)))


def load_index(settings: Settings, model_version: str, published_delta_version: int,
               space_id: str | None = None) -> ItemIndex:
    """The index of `model_version`, refused unless it was built from the item_vectors version that is published
    and (given `space_id`, the query's space) from that vector space: a stale index would answer in another vector
    space or miss items."""
    root = index_root(settings.lakehouse)
    found = manifests(root)
    man = found.get(model_version)
    if man is None:
        raise UbpError(f"no item-vector index for item model {model_version} (the published vectors' version; "
                       f"indexes under {root}: {', '.join(found) or 'none'}): {REBUILD_HINT}")
    built_from = man.get("source", {}).get("delta_version")
    if built_from != published_delta_version:
        raise UbpError(f"the item-vector index for model {model_version} is stale: built from item_vectors "
                       f"v{built_from}, the online store serves v{published_delta_version}: {REBUILD_HINT}")
    if space_id is not None:
        from ubp.spaces import require_same_space

        require_same_space(f"similar items of a {space_id} query", space_id, man.get("source", {}).get("space_id"))
    directory = root / model_version
    key = (str(directory), (directory / "manifest.json").stat().st_mtime)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = ItemIndex.load(directory)
    return _loaded[key]
