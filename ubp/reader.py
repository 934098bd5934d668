"""Log-aware Delta readers for PyTorch and other single-process consumers (no Spark, no torch).

Why not a directory glob: a Delta table's folder holds every parquet file ever written, including files that a
DELETE, MERGE or overwrite removed from the log. Reading the folder resurrects deleted rows. Everything here reads
only the files the Delta log lists for one table version (via the `deltalake` package), and streams Arrow record
batches so memory stays bounded by the batch size, not the table size.

Tables with deletion vectors or column mapping cannot be read as a pyarrow dataset; for those we fall back to
`DeltaTable.scan()` (delta-rs' DataFusion engine), which applies deletion vectors and also streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ubp.errors import UbpError
from ubp.tables import FIRST_TOKEN_ID

if TYPE_CHECKING:
    import pyarrow.compute as pc

    from ubp.config import Settings

# Reader features that pyarrow datasets over the raw files cannot honour.
_SCAN_ONLY_FEATURES = {"deletionVectors", "columnMapping"}


def require_table(path: str | Path, what: str, command: str) -> None:
    """A one-line error naming the command that makes a missing Delta table."""
    if not (Path(path) / "_delta_log").is_dir():
        raise UbpError(f"no {what} table at {path}: run `ubp {command}` first")


def _open(path: str | Path, version: int | None = None):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = str(path)
    try:
        return DeltaTable(path, version=version)
    except TableNotFoundError as exc:
        raise UbpError(f"no Delta table at {path}: build it first") from exc
    except Exception as exc:  # deltalake raises a plain exception for a missing version
        if version is not None and "version" in str(exc).lower():
            raise UbpError(f"Delta table {path} has no version {version}: {exc}") from exc
        raise


def table_version(path: str | Path) -> int:
    """The latest committed version of the Delta table at `path` (pin it to read a consistent snapshot)."""
    return int(_open(path).version())


def table_properties(path: str | Path, version: int | None = None) -> dict[str, str]:
    """The table's configuration (TBLPROPERTIES) at `version`; stages record build info here (e.g. ubp.as_of)."""
    return dict(_open(path, version).metadata().configuration or {})


def count_rows(path: str | Path, version: int | None = None) -> int:
    """Row count of one table version, deleted rows excluded (reads only the smallest column)."""
    first = _open(path, version).schema().fields[0].name
    return sum(b.num_rows for b in iter_batches(path, version=version, columns=[first], batch_size=65536))


def _readable_as_dataset(dt: Any) -> bool:
    return not set(dt.protocol().reader_features or ()) & _SCAN_ONLY_FEATURES


def iter_file_batches(
    path: str | Path, version: int | None = None, columns: Sequence[str] | None = None, batch_size: int = 65536
) -> Iterator[tuple[str | None, pa.RecordBatch]]:
    """(data file, batch) for the rows of one table version, file by file (file = None for tables read through
    delta-rs' scan, see the module doc). Pass chosen files back to `iter_batches(files=...)` to read in that order."""
    dt = _open(path, version)
    cols = list(columns) if columns is not None else None
    if not _readable_as_dataset(dt):
        for batch in _iter_scan(dt, cols, batch_size, None):
            yield None, batch
        return
    dataset = dt.to_pyarrow_dataset()
    for fragment in dataset.get_fragments():
        for batch in _stream_fragment(fragment, dataset.schema, cols, batch_size, None):
            yield fragment.path, batch


def iter_batches(
    path: str | Path,
    version: int | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 4096,
    filter: pc.Expression | None = None,
    files: Sequence[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of one Delta table version as Arrow record batches.

    `version=None` reads the latest version; pass `table_version(path)` once and reuse it to get a consistent
    snapshot across several passes (epochs). Only the data files listed in the Delta log for that version are
    read. `filter` is a pyarrow compute expression (e.g. `pc.field("n_events") > 5`); partition filters prune files.
    `files`: read exactly these data files of the version, in this order (from `iter_file_batches`); ignored for
    tables read through delta-rs' scan. Memory is bounded by the batch, not by Parquet's row groups: files are read
    one at a time and decoded page by page (`_stream_fragment`).
    """
    dt = _open(path, version)
    cols = list(columns) if columns is not None else None
    if not _readable_as_dataset(dt):
        yield from _iter_scan(dt, cols, batch_size, filter)
        return
    dataset = dt.to_pyarrow_dataset()
    if files is not None:
        by_path = {f.path: f for f in dataset.get_fragments()}
        missing = [f for f in files if f not in by_path]
        if missing:
            raise UbpError(f"{path} version {dt.version()} has no data file {missing[0]}")
        fragments = [by_path[f] for f in files]
    else:
        fragments = list(dataset.get_fragments(filter=filter))  # partition filters prune files
    for fragment in fragments:
        yield from _stream_fragment(fragment, dataset.schema, cols, batch_size, filter)


def _columns_to_read(names: Sequence[str], want: list[str], filter: pc.Expression | None) -> list[str]:
    """`want` plus the columns `filter` reads (it may name some the caller did not ask for; the result is projected
    afterwards): every table column whose name appears in the expression's text, a superset, which is harmless."""
    if filter is None:
        return want
    import re

    text = str(filter)
    return [n for n in names if n in want or re.search(rf"\b{re.escape(n)}\b", text)]


def _stream_fragment(fragment: Any, schema: pa.Schema, cols: list[str] | None, batch_size: int,
                     filter: pc.Expression | None) -> Iterator[pa.RecordBatch]:
    """The rows of one data file (`cols` of the table's `schema`, `filter` applied), `batch_size` at a time.

    Not the dataset scanner: it decodes a whole Parquet row group before it slices batches, and Spark writes row
    groups of up to 128 MB, so one 25k-row batch of the 1M-user ensemble (row groups of 145k rows x 738 floats)
    held 2.2 GB; `ParquetFile.iter_batches` decodes page by page (0.75 GB for the same scan). Row groups whose
    statistics rule the filter out are skipped; partition columns and columns a file lacks (added to the table
    later) are filled in, and types are cast to the table's, as the scanner would."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    want = list(cols) if cols is not None else list(schema.names)
    need = _columns_to_read(schema.names, want, filter)
    groups = None
    if filter is not None:
        try:
            groups = [rg.id for rg in fragment.subset(filter=filter, schema=schema).row_groups]
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
            groups = None  # statistics pyarrow cannot compare (e.g. a timestamp's unit): read every row group
        if groups == []:
            return
    parts = ds.get_partition_keys(fragment.partition_expression)
    out_schema = pa.schema([schema.field(n) for n in need])
    with fragment.open() as fh:
        pf = pq.ParquetFile(fh, pre_buffer=False)
        in_file = [n for n in need if n in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=in_file):
            n = batch.num_rows
            arrays = []
            for f in out_schema:
                if f.name in in_file:
                    a = batch.column(f.name)
                    arrays.append(a if a.type == f.type else a.cast(f.type))
                elif f.name in parts:
                    arrays.append(pa.nulls(n, f.type).fill_null(pa.scalar(parts[f.name]).cast(f.type)))
                else:
                    arrays.append(pa.nulls(n, f.type))
            out = pa.RecordBatch.from_arrays(arrays, schema=out_schema)
            if filter is not None:
                out = out.filter(filter).select(want)
            if out.num_rows:
                yield out


def _iter_scan(dt: Any, cols: list[str] | None, batch_size: int, filter: pc.Expression | None):
    """Deletion-vector aware path: delta-rs' engine streams batches; we apply the filter and re-chunk."""
    need = cols if cols is None else _columns_to_read([f.name for f in dt.schema().fields], cols, filter)
    reader = dt.scan(columns=need)
    for raw in reader:
        batch = pa.record_batch(raw)  # arro3 batch -> pyarrow via the Arrow C data interface
        if filter is not None:
            batch = batch.filter(filter)
        if need != cols:
            batch = batch.select(cols)
        for start in range(0, batch.num_rows, batch_size):
            yield batch.slice(start, batch_size)


# ------------------------------------------------------------------------------------------------------------
# vocabularies
# ------------------------------------------------------------------------------------------------------------
def version_vectors(path: str | Path, version: str, key: str, column: str, keys: Iterable[int] | None = None,
                    limit: int | None = None) -> dict[int, Any]:
    """One model version's vectors in a gold table (rows with `model_version == version`), by key, the latest as-of
    per key: the rows of `keys` only, else of the first `limit` keys read (None: all). {} when there is no table.
    What a new model version is aligned to (`ubp/spaces.py`)."""
    import numpy as np
    import pyarrow.compute as pc

    if not (Path(path) / "_delta_log").is_dir():
        return {}
    flt = pc.field("model_version") == version
    if keys is not None:
        flt = flt & pc.field(key).isin(pa.array(sorted(keys), pa.int64()))
    out: dict[int, tuple[Any, Any]] = {}
    for rb in iter_batches(path, columns=[key, column, "as_of"], batch_size=65536, filter=flt):
        for k, v, at in zip(rb.column(key).to_pylist(), rb.column(column).to_pylist(), rb.column("as_of").to_pylist(),
                            strict=True):
            if k in out:
                if at > out[k][0]:
                    out[k] = (at, np.asarray(v, np.float32))
            elif limit is None or len(out) < limit:
                out[k] = (at, np.asarray(v, np.float32))
    return {k: v for k, (_, v) in out.items()}


def _vocab_path(settings_or_path: Settings | str | Path) -> Path:
    from ubp.config import Settings

    if isinstance(settings_or_path, Settings):
        return settings_or_path.table_path("vocabularies")
    return Path(settings_or_path)


def read_vocab(settings_or_path: Settings | str | Path, version: str) -> dict[str, dict[int, int]]:
    """The vocabulary `version` as `{field: {raw_value: token_id}}`.

    Fields are `ubp.tables.VOCAB_FIELDS` plus the time fields `day` (raw = days since 1970-01-01) and `week`
    (raw = week index since the vocabulary's first day). Values not in a field's mapping are OOV_ID.
    """
    import pyarrow.compute as pc

    path = _vocab_path(settings_or_path)
    out: dict[str, dict[int, int]] = {}
    for batch in iter_batches(
        path, columns=["field", "raw_value", "token_id"], batch_size=65536, filter=pc.field("version") == version
    ):
        fields = batch.column(0).to_pylist()
        raws = batch.column(1).to_pylist()
        toks = batch.column(2).to_pylist()
        for f, r, t in zip(fields, raws, toks, strict=True):
            out.setdefault(f, {})[int(r)] = int(t)
    if not out:
        raise UbpError(f"vocabulary version {version!r} not found in {path}")
    return out


def vocab_sizes(settings_or_path: Settings | str | Path, version: str) -> dict[str, int]:
    """Embedding-table size per field (max token id + 1; at least FIRST_TOKEN_ID) for vocabulary `version`."""
    import pyarrow.compute as pc

    path = _vocab_path(settings_or_path)
    sizes: dict[str, int] = {}
    for batch in iter_batches(
        path, columns=["field", "token_id"], batch_size=65536, filter=pc.field("version") == version
    ):
        table = pa.Table.from_batches([batch]).group_by("field").aggregate([("token_id", "max")])
        for f, m in zip(table.column("field").to_pylist(), table.column("token_id_max").to_pylist(), strict=True):
            sizes[f] = max(sizes.get(f, FIRST_TOKEN_ID), int(m) + 1)
    if not sizes:
        raise UbpError(f"vocabulary version {version!r} not found in {path}")
    return sizes


def check_vocab_version(expected: str, actual: str) -> None:
    """Refuse to run a model on sequences tokenised with a different vocabulary (token ids would be garbage)."""
    if expected != actual:
        raise UbpError(
            f"model trained on vocabulary {expected}, table uses {actual}: retrain the model on this table "
            f"or rebuild the sequences with vocabulary {expected}"
        )


def sequences_vocab_version(settings_or_path: Settings | str | Path, version: int | None = None) -> str:
    """The vocabulary version the `user_sequences` table (at Delta `version`) was tokenised with."""
    from ubp.config import Settings

    path = (
        settings_or_path.table_path("user_sequences")
        if isinstance(settings_or_path, Settings)
        else Path(settings_or_path)
    )
    # the rows are authoritative (the table property is set in the commit after the data)
    for batch in iter_batches(path, version=version, columns=["vocab_version"], batch_size=1):
        return str(batch.column(0)[0].as_py())
    props = table_properties(path, version)
    if "ubp.vocab_version" in props:
        return props["ubp.vocab_version"]
    raise UbpError(f"{path} is empty: no vocabulary version recorded")
