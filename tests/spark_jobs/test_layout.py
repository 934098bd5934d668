"""Gold tables are written in Feast's entity-key byte order (spark_jobs/layout.py): whole key ranges per file, sorted."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq


def test_gold_layout_files_hold_sorted_key_ranges(spark, tmp_path):
    from ubp.spark_jobs.layout import in_feast_key_order

    from ubp.publish import encode_entity_keys
    from ubp.reader import _open

    rng = np.random.default_rng(3)
    ids = np.unique(np.concatenate([rng.integers(-(2**62), 2**62, 3000), np.arange(2000), [-1, 0, 2**63 - 1]]))
    df = spark.createDataFrame([(int(i), float(i % 7)) for i in ids], "client_id bigint, x double")
    path = tmp_path / "t"
    in_feast_key_order(df, "client_id", partitions=4).write.format("delta").save(str(path))

    files = _open(path).file_uris()
    assert len(files) > 1
    seen, slices = [], {}
    for f in files:
        keys = pq.read_table(f, columns=["client_id"]).column(0).to_numpy()
        seen.append(keys)
        ek = encode_entity_keys(keys, "client_id")
        assert ek == sorted(ek), f"{f}: rows not in Feast's key byte order"
        for s in set(((keys & 255) * 4 // 256).tolist()):  # a slice of the lowest byte lives in one file only
            assert slices.setdefault(s, f) == f
    assert sorted(np.concatenate(seen).tolist()) == ids.tolist()  # same rows, nothing lost or duplicated
