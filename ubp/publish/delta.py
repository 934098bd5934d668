"""Reading a gold Delta table for the publish: through its log, so only one snapshot's files and no deleted rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa


def delta_version(path: Path | str) -> int:
    from ubp.reader import table_version

    return table_version(path)


def scan_delta(
    path: Path | str,
    columns: list[str],
    *,
    version: int | None = None,
    filter: Any = None,
    batch_size: int = 65_536,
    files: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of one Delta snapshot (log-aware: only the files of that version; deleted rows are absent).

    `ubp.reader.iter_batches` does the reading (it also handles deletion vectors via delta-rs' own scan)."""
    from ubp.reader import iter_batches

    yield from iter_batches(str(path), version=version, columns=columns, batch_size=batch_size, filter=filter,
                            files=files)
