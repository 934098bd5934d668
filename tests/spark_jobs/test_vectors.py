"""numpy <-> Arrow list<float> vector columns (`spark_jobs/vectors.py`): round trip, nulls, sliced and chunked input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ubp.spark_jobs.vectors import float_lists, list_rows


def test_round_trip_with_nulls_slices_and_chunks():
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    lists = float_lists(x)
    assert lists.type == pa.list_(pa.float32()) and lists.to_pylist()[1] == [3.0, 4.0, 5.0]
    present, values = list_rows(lists, 3)
    assert present.all() and values.dtype == np.float32 and np.array_equal(values, x)
    with_null = pa.array([[1.0, 2.0], None, [5.0, 6.0]], pa.list_(pa.float32()))
    present, values = list_rows(with_null.slice(1), 2)  # a slice: offsets do not start at 0
    assert present.tolist() == [False, True] and values.tolist() == [[5.0, 6.0]]
    present, values = list_rows(pa.chunked_array([lists.slice(0, 2), lists.slice(2)]), 3)
    assert np.array_equal(values, x)
    assert list_rows(float_lists(np.zeros((0, 3))), 3)[1].shape == (0, 3)
