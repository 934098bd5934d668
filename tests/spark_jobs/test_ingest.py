"""Raw-file discovery of the ingest job (`spark_jobs/ingest.py`): clear errors for a missing or empty directory."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_missing_directory_and_empty_inputs(tmp_path: Path):
    from ubp.spark_jobs.ingest import discover

    from ubp.errors import UbpError

    with pytest.raises(UbpError, match="raw directory not found"):
        discover(tmp_path / "nope")
    (tmp_path / "raw").mkdir()
    with pytest.raises(UbpError, match="no raw files"):
        discover(tmp_path / "raw")
    (tmp_path / "raw" / "page_visit").mkdir()
    (tmp_path / "raw" / "page_visit" / "_SUCCESS").write_text("")
    (tmp_path / "raw" / "product_buy.parquet").write_bytes(b"")
    found = {s.stem: s for s in discover(tmp_path / "raw")}
    assert set(found) == {"page_visit", "product_buy"} and all(not s.files for s in found.values())
