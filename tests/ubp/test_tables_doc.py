"""The generated tables reference (`ubp/tables_doc.py` -> docs/tables.md): up to date with the contracts, and every
delta-rs / polars / DuckDB snippet in it runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sql_fixtures import write_sql_lakehouse

from ubp.config import Settings


@pytest.fixture(scope="module")
def lakehouse(spark, tmp_path_factory) -> Path:
    """A tiny lakehouse: events with two versions (2 rows, then 3), products with one."""
    return write_sql_lakehouse(spark, tmp_path_factory.mktemp("sql") / "lakehouse")


def test_tables_doc_is_up_to_date():
    from ubp.tables import TABLES
    from ubp.tables_doc import DEFAULT_PATH, render

    text = render()
    assert DEFAULT_PATH.read_text() == text, "docs/tables.md is stale: run `ubp tables-doc`"
    for name, table in TABLES.items():
        assert f"## {name}\n" in text
        for col in table.columns:
            assert f"| `{col.name}` | `{col.type}` |" in text


def test_tables_doc_readers_run(spark, lakehouse, monkeypatch, capsys):
    """Every delta-rs / polars / DuckDB snippet of docs/tables.md runs as written and reads all the rows."""
    from ubp.tables_doc import READERS, render

    text = render()
    expected = spark.read.format("delta").load(str(Settings(lakehouse=lakehouse).table_path("events"))).count()
    assert expected == 3
    monkeypatch.chdir(lakehouse.parent)  # the snippets say "lakehouse/..."
    assert {name.split()[0] for name, _, _ in READERS} == {"delta-rs", "polars", "DuckDB"}
    for name, code, rows in READERS:
        assert f"```python\n{code}\n```" in text, name
        ns: dict = {}
        exec(compile(code, f"<docs/tables.md: {name}>", "exec"), ns)
        assert eval(rows, ns) == expected, name
    assert "rows at version 0" in capsys.readouterr().out  # the snippets print what they read
