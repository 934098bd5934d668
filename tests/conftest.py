"""Shared fixtures: ONE session-scoped Spark (local[2], few shuffle partitions, Delta enabled) and a fresh
lakehouse per test in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Feast registry cache TTL of publisher and readers: a publish waits this (+1 s) before rewriting the slot it switched
# away from (ubp/feast_slots.py), so back-to-back publishes in tests wait ~2 s instead of ~61 s
os.environ.setdefault("UBP_FEAST_CACHE_TTL_S", "1")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The one Spark session of the test run."""
    from ubp.spark_jobs.session import get_spark

    from ubp.config import Settings

    root = tmp_path_factory.mktemp("spark")
    settings = Settings(
        lakehouse=root,
        spark_conf=(
            ("spark.sql.shuffle.partitions", "2"),
            ("spark.default.parallelism", "2"),
            ("spark.driver.memory", "3g"),
        ),
    )
    session = get_spark(settings, app_name="ubp-tests")
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path: Path):
    """A fresh, empty lakehouse for one test."""
    from ubp.config import Settings

    return Settings(lakehouse=tmp_path / "lakehouse")
