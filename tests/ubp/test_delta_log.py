"""Delta log helpers (`ubp/delta_log.py`) that decide the DAGs' asset events: only commits that change data count."""

from __future__ import annotations


def test_asset_events_only_for_changed_tables(tmp_path):
    """`ubp.delta_log.data_changed`: commits that add or remove data count; a metadata-only commit or a compaction
    (dataChange false) does not; no table, no change."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from ubp.delta_log import data_changed, latest_version

    path = tmp_path / "t"
    assert latest_version(path) is None and not data_changed(path, None)
    write_deltalake(str(path), pa.table({"x": [1, 2]}))
    assert latest_version(path) == 0 and data_changed(path, None) and not data_changed(path, 0)
    write_deltalake(str(path), pa.table({"x": [3]}), mode="append")
    assert data_changed(path, 0) and not data_changed(path, 1)
    dt = DeltaTable(str(path))
    dt.optimize.compact()  # rewrites files, dataChange false
    dt.alter.set_table_properties({"delta.appendOnly": "false"})  # metadata only
    assert latest_version(path) == 3 and not data_changed(path, 1)
    dt.delete("x = 3")
    assert data_changed(path, 3)
