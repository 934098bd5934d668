"""The log-aware reader: deleted rows stay deleted, versions pin snapshots, vocab helpers size embeddings."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from ubp import reader
from ubp.errors import UbpError


def _rows(path, **kw) -> list[int]:
    return sorted(v for b in reader.iter_batches(path, **kw) for v in b.column("id").to_pylist())


@pytest.mark.parametrize("deletion_vectors", [False, True])
def test_reader_respects_delta_log(spark, tmp_path, deletion_vectors):
    path = str(tmp_path / f"t_dv{int(deletion_vectors)}")
    df = spark.range(0, 50).selectExpr("id", "id % 5 AS part", "cast(id * 2 AS int) AS v").repartition(3)
    (df.write.format("delta").partitionBy("part")
     .option("delta.enableDeletionVectors", str(deletion_vectors).lower()).save(path))
    v0 = reader.table_version(path)
    spark.sql(f"DELETE FROM delta.`{path}` WHERE id IN (7, 42)")
    v1 = reader.table_version(path)
    assert v1 == v0 + 1
    assert _rows(path) == [i for i in range(50) if i not in (7, 42)]
    assert reader.count_rows(path) == 48
    # version pinning: the snapshot before the delete still has them
    assert _rows(path, version=v0) == list(range(50))
    with pytest.raises(UbpError, match="no version 99"):
        _rows(path, version=99)
    # an overwrite removes every old file from the log; a glob over the folder would double the rows
    spark.range(100, 103).selectExpr("id", "id % 5 AS part", "cast(id AS int) AS v").write.format(
        "delta").mode("overwrite").option("partitionOverwriteMode", "static").save(path)
    assert _rows(path) == [100, 101, 102]
    # projection, filter and batch size
    batches = list(reader.iter_batches(path, version=v1, columns=["id"], batch_size=4, filter=pc.field("v") > 80))
    assert all(b.num_rows <= 4 for b in batches)
    assert all(b.schema.names == ["id"] for b in batches)
    assert sorted(x for b in batches for x in b.column(0).to_pylist()) == [41, 43, 44, 45, 46, 47, 48, 49]


def test_reader_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(UbpError, match="no Delta table"):
        reader.table_version(tmp_path / "nope")


def test_vocab_helpers(spark, tmp_path):
    from ubp.tables import VOCABULARIES

    path = str(tmp_path / "vocab")
    rows = [
        ("a", "sku", 10, 4, 5), ("a", "sku", 11, 5, 3), ("a", "event_type", 0, 4, 9),
        ("b", "sku", 10, 4, 5),
    ]
    import datetime as dt

    ts = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    df = spark.createDataFrame([(v, f, r, t, n, ts) for v, f, r, t, n in rows], VOCABULARIES.spark_schema())
    df.write.format("delta").partitionBy("version").save(path)
    assert reader.read_vocab(path, "a") == {"sku": {10: 4, 11: 5}, "event_type": {0: 4}}
    assert reader.vocab_sizes(path, "a") == {"sku": 6, "event_type": 5}
    assert reader.vocab_sizes(path, "b") == {"sku": 5}
    with pytest.raises(UbpError, match="not found"):
        reader.vocab_sizes(path, "zzz")
    reader.check_vocab_version("a", "a")
    with pytest.raises(UbpError, match="model trained on vocabulary a, table uses b"):
        reader.check_vocab_version("a", "b")


def test_version_vectors_reads_one_model_versions_latest_rows(tmp_path):
    """What a new model version is aligned to: one version's rows, the latest as-of per key, some keys or a cap."""
    from datetime import UTC, datetime

    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    t1, t2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    rows = [(1, [1.0, 0.0], "v1", t1), (1, [2.0, 0.0], "v1", t2), (2, [3.0, 0.0], "v1", t1),
            (3, [4.0, 0.0], "v1", t1), (1, [9.0, 9.0], "v2", t2)]
    table = pa.table({"client_id": pa.array([r[0] for r in rows], pa.int64()),
                      "embedding": pa.array([r[1] for r in rows], pa.list_(pa.float32())),
                      "model_version": [r[2] for r in rows],
                      "as_of": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC"))})
    path = tmp_path / "profiles"
    write_deltalake(str(path), table)
    got = reader.version_vectors(path, "v1", "client_id", "embedding")
    assert sorted(got) == [1, 2, 3]
    np.testing.assert_array_equal(got[1], [2.0, 0.0])  # the newer as-of of v1, never v2's row
    assert sorted(reader.version_vectors(path, "v1", "client_id", "embedding", keys=[2, 3, 7])) == [2, 3]
    assert len(reader.version_vectors(path, "v1", "client_id", "embedding", limit=2)) == 2
    assert reader.version_vectors(tmp_path / "missing", "v1", "client_id", "embedding") == {}


def test_reader_streams_within_row_groups_like_the_scanner(tmp_path):
    """Batches come from inside a Parquet row group (the scanner decoded a whole one: 2.2 GB for one batch of the
    1M-user ensemble), with what the dataset scanner gives: partition values, nulls for a column added later, the
    table's types, the filter applied, and row groups the filter's statistics rule out skipped."""
    import pyarrow as pa
    from deltalake import DeltaTable, WriterProperties, write_deltalake

    path = str(tmp_path / "t")
    props = WriterProperties(max_row_group_size=100)
    first = pa.table({"id": pa.array(range(1000), pa.int64()), "part": ["a", "b"] * 500,
                      "v": pa.array([float(i) for i in range(1000)], pa.float32())})
    write_deltalake(path, first, partition_by=["part"], writer_properties=props)
    later = pa.table({"id": pa.array(range(1000, 1300), pa.int64()), "part": ["b"] * 300,
                      "v": pa.array([1.0] * 300, pa.float32()), "extra": pa.array(range(300), pa.int64())})
    write_deltalake(path, later, partition_by=["part"], mode="append", schema_mode="merge", writer_properties=props)

    def scanner(**kw) -> pa.Table:
        return DeltaTable(path).to_pyarrow_dataset().to_table(**kw).sort_by("id")

    def ours(**kw) -> pa.Table:
        batches = list(reader.iter_batches(path, batch_size=64, **kw))
        assert all(b.num_rows <= 64 for b in batches)
        return pa.Table.from_batches(batches).sort_by("id")

    assert ours().equals(scanner())
    assert ours().column("extra").null_count == 1000
    flt = (pc.field("part") == "b") & (pc.field("id") >= 950)
    assert ours(filter=flt, columns=["id", "extra"]).equals(scanner(filter=flt, columns=["id", "extra"]))
    assert ours(filter=flt, columns=["id"]).num_rows == 25 + 300
    frag = next(f for f in DeltaTable(path).to_pyarrow_dataset().get_fragments() if "part=b" in f.path
                and f.metadata.num_rows == 500)
    schema = DeltaTable(path).to_pyarrow_dataset().schema
    assert len(frag.subset(filter=flt, schema=schema).row_groups) < frag.metadata.num_row_groups  # stats prune
