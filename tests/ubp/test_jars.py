"""The Delta jar cache (`ubp/jars.py`): one folder per Delta version under UBP_JAR_CACHE, used without Maven once it
is complete, and clear errors for an incomplete cache or a missing Maven."""

from __future__ import annotations

import pytest

from ubp import jars


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UBP_JAR_CACHE", str(tmp_path / "jars"))
    monkeypatch.setattr(jars.shutil, "which", lambda name: None)  # no Maven: nothing may be fetched
    return tmp_path / "jars" / jars.DELTA_VERSION


def test_cache_folder_follows_the_environment_and_version(cache):
    assert jars.cache_dir() == cache


def test_a_complete_cache_needs_no_maven(cache):
    cache.mkdir(parents=True)
    for name in ("delta-storage-4.4.0.jar", "delta-spark_4.2_2.13-4.4.0.jar", "antlr4-runtime.jar"):
        (cache / name).write_bytes(b"jar")
    (cache / "notes.txt").write_text("not a jar")
    (cache / ".complete").write_text(f"{jars.DELTA_ARTIFACT}:{jars.DELTA_VERSION}\n")
    got = jars.ensure_delta_jars()
    assert got == sorted(str(cache / n) for n in ("antlr4-runtime.jar", "delta-spark_4.2_2.13-4.4.0.jar",
                                                  "delta-storage-4.4.0.jar"))


def test_incomplete_cache_and_missing_maven_are_clear_errors(cache):
    with pytest.raises(RuntimeError, match=r"Maven \(mvn\) is needed once"):
        jars.ensure_delta_jars()
    cache.mkdir(parents=True)
    (cache / ".complete").write_text("x\n")  # marked complete, but the Delta jar is gone
    (cache / "delta-storage.jar").write_bytes(b"jar")
    with pytest.raises(RuntimeError, match="is incomplete; delete it and retry"):
        jars.ensure_delta_jars()


def test_pom_names_the_pinned_artifact():
    pom = jars._pom("9.9.9")
    group, artifact = jars.DELTA_ARTIFACT.split(":")
    assert f"<groupId>{group}</groupId><artifactId>{artifact}</artifactId>" in pom
    assert "<version>9.9.9</version>" in pom
