"""Bronze events -> silver `user_sequences`: one chronological token sequence per user, all event types merged.

How it stays fast and out of core (no global sort, no window over all events, nothing collected but file names):
1. `event_rows`: the prepared events (raw values, see `spark_jobs.vocab.prepare_events`) are shuffled as rows by
   user and sorted by user within partitions: one radix sort on the id; Spark's sorter spills.
2. `sequence_rows` / `sequence_files`: `mapInArrow` hands each task's user-grouped rows to a Python worker as Arrow
   batches; `spark_jobs.sequence_rows` tokenises, orders each user's events, keeps the newest `max_len` and builds
   the list columns with numpy, a chunk of complete users at a time (only one chunk and one user in memory), and
   `sequence_files` writes them with Arrow's Parquet writer into the table's directory. The stage commits the
   files to Delta in one commit (`ubp.stages.sequences`).

Not all-SQL (`collect_list` of a per-event struct, `sort_array`, per-field extraction, Spark's Delta writer):
that spends its reduce stage in per-element work, interpreted struct comparisons and parquet-mr writing a group per
list element.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from ubp.spark_jobs.sequence_rows import (
    EVENT_COLUMNS,
    FILES_SCHEMA,
    SequenceSpec,
    stream_user_rows,
    write_files,
)

from ubp.tables import USER_SEQUENCES

# Run the build under this SQL conf (see `with_sql_conf`): larger Arrow batches to the workers (fewer round trips;
# a chunk is built from ~256k events anyway).
BUILD_CONF: dict[str, str] = {"spark.sql.execution.arrow.maxRecordsPerBatch": "65536"}


def event_rows(prepared: DataFrame) -> DataFrame:
    """Prepared events -> the worker's input (`EVENT_COLUMNS`), every user's events contiguous in one partition."""
    return (prepared.select(*EVENT_COLUMNS).repartition("client_id")
            .sortWithinPartitions("client_id"))  # one key: Spark radix-sorts the ids, no row comparisons


def sequence_rows(prepared: DataFrame, spec: SequenceSpec) -> DataFrame:
    """Prepared events -> one row per user in the `user_sequences` contract (newest `spec.max_len` events)."""

    def build(batches):
        for table in stream_user_rows(batches, spec):
            yield from table.to_batches()

    return event_rows(prepared).mapInArrow(build, schema=USER_SEQUENCES.spark_schema())


def sequence_files(prepared: DataFrame, spec: SequenceSpec, table_dir: str) -> DataFrame:
    """Prepared events -> Parquet files of `user_sequences` rows written into `table_dir` (uncommitted), one row per
    file: (path relative to the table, size, modification time, rows, Delta statistics). Executed by an action."""

    def write(batches):
        return write_files(batches, spec, table_dir)

    from pyspark.sql.pandas.types import from_arrow_schema

    return event_rows(prepared).mapInArrow(write, schema=from_arrow_schema(FILES_SCHEMA))


def spec_for(vocab, as_of: datetime, max_len: int) -> SequenceSpec:
    """The workers' view of a `spark_jobs.vocab.Vocab`."""
    return SequenceSpec.from_maps(vocab.maps, as_of, max_len, vocab.version)


def changed_users(events: DataFrame, as_of: datetime, prev_as_of: datetime, ingested_after: datetime | None) -> DataFrame:
    """Users with events in [prev_as_of, as_of), or late arrivals (ingested after the last build) before as_of."""
    new = (F.col("timestamp") >= F.lit(prev_as_of))
    if ingested_after is not None:
        new = new | (F.col("ingested_at") > F.lit(ingested_after))
    return events.where((F.col("timestamp") < F.lit(as_of)) & new).select("client_id").distinct()
