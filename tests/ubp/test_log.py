"""Logs of a scheduled (non-TTY) run: plain lines, no carriage returns or escape codes, no 80-column wrapping, no
JVM WARN noise, and one log file per lakehouse."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UBP = str(Path(sys.executable).parent / "ubp")


def _check_plain(text: str, what: str) -> None:
    assert "\r" not in text, f"{what}: carriage return"
    assert "\x1b[" not in text, f"{what}: escape code"
    longest = max((len(line) for line in text.splitlines()), default=0)
    assert longest <= 300, f"{what}: a {longest}-character line"


def test_piped_run_writes_plain_lines(tmp_path: Path):
    # a long path: piped output must show it whole, on one line (rich cut and wrapped it at 80 columns)
    deep = tmp_path / "a-rather-long-folder-name-for-a-scheduled-run" / "raw"
    lakehouse = tmp_path / "lh"
    env = {k: v for k, v in os.environ.items() if k not in ("UBP_NO_PROGRESS", "UBP_SPARK_LOG_LEVEL", "COLUMNS")}
    env["PYTHONPATH"] = str(REPO)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        for args in (["demo-data", "--out", str(deep), "--users", "50", "--days", "5", "--chunk-users", "10"],
                     ["--lakehouse", str(lakehouse), "ingest", "--raw", str(deep)]):
            rc = subprocess.run([UBP, *args], stdout=fo, stderr=fe, env=env, cwd=tmp_path, timeout=900).returncode
            assert rc == 0, err.read_text()[-3000:]
    stdout, stderr = out.read_text(), err.read_text()
    _check_plain(stdout, "stdout")
    _check_plain(stderr, "stderr")
    lines = stdout.splitlines()
    assert any(str(deep) in line for line in lines), stdout  # the path whole, on one line
    # progress as log lines (5 chunks of 10 users: a line per 10% step, the last at 100%)
    progress = [line for line in lines if "generating events:" in line]
    assert progress and progress[-1].split("generating events: ")[1].startswith("5/5 (100%)"), stdout
    assert any("INFO ubp.stages.ingest: ingest run" in line for line in lines), stdout
    # the Spark JVM's console: no WARN lines, no log-level banner (the JDK's own incubator notice may remain)
    assert " WARN " not in stderr and "log4j" not in stderr and "Setting default log level" not in stderr, stderr
    assert "ingest run" in (lakehouse / "_logs" / "ubp.log").read_text()


def test_progress_lines_every_tenth(caplog):
    from ubp.log import LineProgress, progress

    with caplog.at_level(logging.INFO, logger="ubp.progress"):
        assert list(LineProgress(range(100), desc="work")) == list(range(100))
        msgs = [r.getMessage() for r in caplog.records]
        assert len(msgs) == 10 and msgs[0].startswith("work: 10/100 (10%)") and msgs[-1].startswith("work: 100/100")
        caplog.clear()
        bar = LineProgress(desc="epoch 1")  # no total: a line every 30 s and one at the end
        for _ in range(1000):
            bar.update(1)
        bar.set_postfix(loss="0.123")
        bar.close()
        assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["epoch 1: 1,000"]
        caplog.clear()
        # under pytest stdout is not a terminal: the same line-based progress; UBP_NO_PROGRESS=1 silences it
        os.environ["UBP_NO_PROGRESS"] = "1"
        try:
            assert list(progress(range(20), desc="quiet")) == list(range(20))
        finally:
            del os.environ["UBP_NO_PROGRESS"]
        assert caplog.records == []
        assert isinstance(progress(range(3)), LineProgress)


def test_one_log_file_per_lakehouse(tmp_path: Path):
    from ubp.log import setup_logging

    a, b = tmp_path / "a" / "_logs", tmp_path / "b" / "_logs"
    log = logging.getLogger("ubp.test_logs")
    try:
        setup_logging(a)
        log.info("line for lakehouse a")
        setup_logging(b)
        log.info("line for lakehouse b")
        setup_logging(a)
        log.info("again for a")
    finally:
        setup_logging(tmp_path / "other")  # leave no handler on a or b
    text_a, text_b = (a / "ubp.log").read_text(), (b / "ubp.log").read_text()
    assert "line for lakehouse a" in text_a and "again for a" in text_a and "lakehouse b" not in text_a
    assert "line for lakehouse b" in text_b and "for a" not in text_b and "lakehouse a" not in text_b


def test_plain_lines_follow_the_current_stdout(tmp_path: Path, monkeypatch):
    """Piped, records go to whatever `sys.stdout` is now (pytest and Airflow swap it), as one plain line each."""
    import io

    from ubp.log import setup_logging

    setup_logging(tmp_path / "_logs")
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stdout", swapped)  # after the handler exists
    logging.getLogger("ubp.test_logs").info("a record for the current stdout")
    line = next(x for x in swapped.getvalue().splitlines() if "a record for the current stdout" in x)
    assert " INFO ubp.test_logs: a record for the current stdout" in line and "\x1b[" not in line
