"""Physical row order of the gold tables that `ubp publish` streams into the online store.

Feast's SQLite store keys each row by the serialised entity key, whose last 8 bytes are the int64 id in
little-endian order; its B-trees sort by those bytes. A table written in id order (or in no order) sends every
streamed batch of the publish to keys spread over the whole B-tree, and SQLite's inserts land in the middle of it.
Written in that byte order instead, each file holds whole ranges of the key space, sorted, so every batch the
publisher streams is a contiguous key range and the inserts are (nearly) appends (the gain is measured by
`benchmarks/publish.py --layout id`, docs/benchmarks.md). Redis does not care; readers of the table see the same rows.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def key_byte_columns(key: str) -> list[Column]:
    """The id's little-endian bytes, most significant for Feast's key order first (lowest byte of the int)."""
    k = F.col(key)
    return [F.shiftrightunsigned(k, 8 * i).bitwiseAND(F.lit(255)) for i in range(8)]


def in_feast_key_order(df: DataFrame, key: str, partitions: int | None = None) -> DataFrame:
    """`df` with whole ranges of Feast's key order per partition (a range = ids whose lowest byte falls in one
    1/partitions slice of 0..255), sorted by that order inside each partition.

    One hash shuffle on the range number, no sampling job: `repartitionByRange`/`orderBy` would evaluate `df` twice
    (once to sample bounds), and upstream of our gold writes is model inference. Partitions may hold several ranges
    (hash collisions); each is still sorted, so its batches stay contiguous in key order."""
    n = partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions") or "4")
    low_byte = F.col(key).bitwiseAND(F.lit(255))
    slice_ = F.floor(low_byte * F.lit(n) / F.lit(256)).cast("int")
    return df.repartition(n, slice_).sortWithinPartitions(*key_byte_columns(key))
