"""Item vectors for the item-search tests: clustered vectors like real embeddings, exact cosine top-k, and gold
`item_vectors` written as the item_vectors stage writes them (with deltalake: no Spark)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from ubp.config import Settings

DIM = 64
AS_OF = datetime(2024, 2, 1, tzinfo=UTC)


def clustered(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Gaussian-mixture vectors (overlapping clusters), like real embeddings rather than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32)
    which = rng.integers(0, len(centres), n)
    return centres[which] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)


def exact_top(vecs: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = unit[rows] @ unit.T
    scores[np.arange(len(rows)), rows] = -np.inf  # the item itself is left out, as similar_items does
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def write_item_vectors(settings: Settings, skus: np.ndarray, vecs: np.ndarray, model_version: str,
                       mode: str = "overwrite", created: datetime = AS_OF) -> None:
    """Gold item_vectors as the item_vectors stage writes them: `created` is the model's creation time (publish's
    incremental diff sees a new model's rows as changed through it)."""
    from deltalake import write_deltalake

    from ubp.tables import ITEM_VECTORS

    n = len(skus)
    table = pa.table(
        {
            "sku": pa.array(skus, pa.int64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.astype(np.float32).ravel()), vecs.shape[1])
            .cast(pa.list_(pa.float32())),
            "is_cold": pa.array(np.arange(n) % 4 == 0),
            "model_version": pa.array([model_version] * n),
            "space_id": pa.array(["item_vector_v1"] * n),
            "encoder": pa.array(["minilm"] * n),
            "as_of": pa.array([AS_OF] * n, pa.timestamp("us", tz="UTC")),
            "created_at": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=ITEM_VECTORS.arrow_schema(),
    )
    write_deltalake(str(settings.table_path("item_vectors")), table, mode=mode)
