"""Vector columns between numpy and Arrow (`list<float>`), for the Spark jobs' Arrow UDFs and driver-built frames."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def float_lists(x: np.ndarray) -> pa.ListArray:
    """Rows of `x` [n, d] as n Arrow lists of d float32 values (one buffer, no Python float per value)."""
    n, d = x.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)),
                                    pa.array(np.ascontiguousarray(x, dtype=np.float32).ravel(), pa.float32()))


def list_rows(col: pa.Array | pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A nullable list column of `dim` numbers per row -> (present [n] bool, float32 values of the present rows
    [p, dim])."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    present = col.is_valid().to_numpy(zero_copy_only=False)
    flat = col.drop_null().flatten().to_numpy(zero_copy_only=False)
    return present, np.asarray(flat, dtype=np.float32).reshape(-1, dim)
