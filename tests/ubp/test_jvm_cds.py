"""The Spark driver's class-data-sharing archive: used only when it exists, keyed by JVM + class path, and never
able to break or pollute a command (a stale archive is ignored silently)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ubp import jvm_cds


@pytest.fixture
def cds_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UBP_CDS_CACHE", str(tmp_path / "cds"))
    monkeypatch.delenv(jvm_cds.DUMP_ENV, raising=False)
    monkeypatch.delenv("UBP_CDS", raising=False)
    return tmp_path / "cds"


def test_archive_used_only_when_it_exists(cds_cache, monkeypatch):
    path = jvm_cds.archive_path()
    assert path.parent == cds_cache
    assert jvm_cds.java_options() == ""  # no archive yet: the JVM starts as before
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    os.utime(path, (1000, 1000))
    opts = jvm_cds.java_options()
    assert path.stat().st_mtime > 1000  # marked as used, so pruning keeps it
    assert f"-XX:SharedArchiveFile={path}" in opts and "-Xlog:cds=off" in opts
    monkeypatch.setenv("UBP_CDS", "0")
    assert jvm_cds.java_options() == ""
    assert jvm_cds.build_archive() is None


def test_dump_option_in_the_building_process(cds_cache, monkeypatch, tmp_path):
    monkeypatch.setenv(jvm_cds.DUMP_ENV, str(tmp_path / "a.jsa"))
    assert jvm_cds.java_options().startswith(f"-XX:ArchiveClassesAtExit={tmp_path / 'a.jsa'} ")


def test_key_follows_the_class_path(cds_cache, monkeypatch, tmp_path):
    from ubp.jars import cache_dir

    monkeypatch.setenv("UBP_JAR_CACHE", str(tmp_path / "jars"))
    cache_dir().mkdir(parents=True)
    jar = cache_dir() / "delta-spark.jar"
    jar.write_bytes(b"v1")
    before = jvm_cds.archive_path()
    assert jvm_cds.archive_path() == before  # stable
    jar.write_bytes(b"v2 is longer")
    assert jvm_cds.archive_path() != before  # a changed jar gets a new archive


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_stale_archive_is_ignored_silently(tmp_path):
    bad = tmp_path / "stale.jsa"
    bad.write_bytes(b"\0" * 4096)
    proc = subprocess.run(["java", f"-XX:SharedArchiveFile={bad}", *jvm_cds.QUIET.split(), "-version"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout == ""  # nothing on stdout, where commands print their results
    assert "warning" not in proc.stderr.lower()


def test_session_runs_with_the_archive(spark):
    """When bootstrap made the archive for this class path, the test session's driver JVM was started with it.
    `UBP_CDS=0` (CI) starts it without, even when another process left an archive for this class path."""
    if not jvm_cds.enabled():
        pytest.skip("UBP_CDS=0: sessions start without the archive")
    if not jvm_cds.archive_path().is_file():
        pytest.skip("no CDS archive for this class path (make bootstrap builds it)")
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={jvm_cds.archive_path()}" in args


def test_workload_is_a_stage_named_by_string():
    """The warm-up runs stages, so the core names it and imports it only in the archive-building subprocess."""
    from ubp.stages.jvm_warmup import run

    assert jvm_cds.load_workload(jvm_cds.WORKLOAD) is run
    with pytest.raises(ValueError, match="module:function"):
        jvm_cds.load_workload("ubp.stages.jvm_warmup")


def test_old_archives_are_pruned(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"spark-driver-{i}.jsa"
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
        paths.append(p)
    removed = jvm_cds._prune(tmp_path, keep=3)
    assert sorted(removed) == sorted(paths[:2])
    assert sorted(tmp_path.glob("*.jsa")) == sorted(paths[2:])
