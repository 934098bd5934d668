"""Settings and ingest options (`ubp/config.py`): where each table and folder lives (namespaces share bronze), the
UBP_LAKEHOUSE default, `--conf` parsing, and the ingest guards' validation and event-time window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ubp.config import IngestOptions, Settings, parse_conf


def test_paths_and_namespaces(tmp_path):
    s = Settings(lakehouse=tmp_path / "lh", master="local[1]", spark_conf=(("a", "b"),))
    assert s.root == s.lakehouse == (tmp_path / "lh").resolve()
    assert s.table_path("events") == s.lakehouse / "bronze" / "events"
    assert s.table_path("user_sequences") == s.lakehouse / "silver" / "user_sequences"
    assert s.table_path("user_profiles") == s.lakehouse / "gold" / "user_profiles"
    ev = s.with_namespace("eval-1")
    assert (ev.master, ev.spark_conf, ev.lakehouse) == (s.master, s.spark_conf, s.lakehouse)
    assert ev.root == s.lakehouse / "eval-1"
    assert ev.table_path("events") == s.table_path("events")  # bronze is shared
    assert ev.table_path("ingest_runs") == s.table_path("ingest_runs")  # ops tables too
    assert ev.table_path("user_profiles") == s.lakehouse / "eval-1" / "gold" / "user_profiles"
    assert (ev.models_dir, ev.cache_dir) == (ev.root / "_models", ev.root / "_cache")
    assert (ev.feast_dir, ev.logs_dir) == (s.lakehouse / "_feast", s.lakehouse / "_logs")  # one per lakehouse
    with pytest.raises(KeyError):
        s.table_path("no_such_table")


def test_lakehouse_is_absolute_and_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings(lakehouse=Path("rel")).lakehouse == tmp_path.resolve() / "rel"
    monkeypatch.setenv("UBP_LAKEHOUSE", str(tmp_path / "from-env"))
    assert Settings().lakehouse == (tmp_path / "from-env").resolve()
    monkeypatch.delenv("UBP_LAKEHOUSE")
    assert Settings().lakehouse == tmp_path.resolve() / "lakehouse"  # ./lakehouse


def test_parse_conf():
    assert parse_conf(None) == parse_conf([]) == ()
    assert parse_conf(["spark.a=1", " spark.b = x=y "]) == (("spark.a", "1"), ("spark.b", "x=y"))
    with pytest.raises(ValueError, match="--conf expects key=value, got 'spark.a'"):
        parse_conf(["spark.a"])


def test_ingest_options_window_and_validation():
    start = datetime(2025, 6, 1, 12, tzinfo=UTC)
    default = IngestOptions()
    assert default.window(start) == (datetime(2000, 1, 1, tzinfo=UTC), start + timedelta(days=1))
    naive = IngestOptions(min_timestamp=datetime(2024, 1, 1), max_timestamp=datetime(2024, 2, 1))
    assert naive.min_timestamp.tzinfo is UTC and naive.max_timestamp == datetime(2024, 2, 1, tzinfo=UTC)
    assert naive.window(start) == (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    for bad in (dict(max_quarantine_share=1.5), dict(max_quarantine_share=-0.1), dict(max_text_chars=0),
                dict(max_query_chars=0), dict(max_timestamp=datetime(1999, 1, 1, tzinfo=UTC))):
        with pytest.raises(ValueError):
            IngestOptions(**bad)
    IngestOptions(max_quarantine_share=0.0)  # the bounds themselves are allowed
    IngestOptions(max_quarantine_share=1.0)
