"""A class-data-sharing (AppCDS) archive for the Spark driver JVM: every ubp Spark command starts faster.

A local Spark job loads ~20k classes (Spark, Scala, Delta, Hadoop, Parquet) from jars and verifies them before it
does any work; on the 2-core dev VM that was ~6 s of JVM start plus ~2 s more of first-use class loading in the Delta
reads, for every `ubp` command. A dynamic CDS archive (JDK 13+) stores those classes pre-parsed and pre-verified:
`make bootstrap` (or `python -m ubp.jvm_cds`) runs a small real ubp workload once with `-XX:ArchiveClassesAtExit`
(`ubp/stages/jvm_warmup.py`, named by string so this core module imports no stage), and
`spark_jobs.session.get_spark` then starts the driver with `-XX:SharedArchiveFile` (the saving is in
docs/benchmarks.md, "JVM start").

The archive is only valid for the exact JVM and class path it was made with, so its file name is a hash of both
(a fresh clone with its own `.venv` gets its own archive); the JVM silently ignores an archive that does not match,
and we only pass one that exists. `UBP_CDS=0` turns it off; `UBP_CDS_CACHE` moves the cache (default
`~/.cache/ubp/cds`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DUMP_ENV = "UBP_CDS_DUMP"  # set (to a path) only in the archive-building subprocess
KEEP_ARCHIVES = 3  # most recently used archives kept in the cache (one per clone / venv)
QUIET = "-Xshare:auto -Xlog:cds=off,cds+dynamic=off"  # a stale archive must never print to a command's stdout
WORKLOAD = "ubp.stages.jvm_warmup:run"  # real stages on tiny data: the classes a ubp Spark command loads


def enabled() -> bool:
    return os.environ.get("UBP_CDS", "1") not in ("0", "false", "no", "off")


def _classpath_key() -> str:
    """Hash of what the archive depends on: the java binary and every jar the driver loads (path, size, mtime)."""
    import pyspark

    from ubp.jars import cache_dir

    h = hashlib.sha256()
    java = shutil.which("java") or ""
    h.update(os.path.realpath(java).encode() if java else b"no-java")
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar")) + sorted(cache_dir().glob("*.jar"))
    for jar in jars:
        st = jar.stat()
        h.update(f"{jar}\t{st.st_size}\t{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def archive_path() -> Path:
    root = Path(os.environ.get("UBP_CDS_CACHE", Path.home() / ".cache" / "ubp" / "cds"))
    return root / f"spark-driver-{_classpath_key()}.jsa"


def java_options() -> str:
    """Driver JVM options for the archive: dump it in the building subprocess, use it when it exists, else ''."""
    dump = os.environ.get(DUMP_ENV)
    if dump:
        return f"-XX:ArchiveClassesAtExit={dump} {QUIET}"
    if not enabled():
        return ""
    try:
        path = archive_path()
    except Exception as exc:  # no pyspark/jars yet: run without the archive
        log.debug("no CDS archive: %s", exc)
        return ""
    if not path.is_file():
        return ""
    with contextlib.suppress(OSError):  # mark it used: pruning keeps the recently used archives, not the newest made
        os.utime(path)
    return f"-XX:SharedArchiveFile={path} {QUIET}"


def load_workload(spec: str) -> Callable[[Path], None]:
    """Resolve a "module:function" workload. By name, not by import: the workload runs stages, and the core must not
    import the layers above it (tests/test_layout_imports.py)."""
    module, _, func = spec.partition(":")
    if not module or not func:
        raise ValueError(f"workload must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), func)


def build_archive(force: bool = False, workload: str = WORKLOAD) -> Path | None:
    """Make the archive for this JVM + class path once (idempotent; about a minute). None when turned off.

    `workload` ("module:function", called with a scratch folder) runs in a subprocess whose driver JVM dumps the
    classes it loaded."""
    if not enabled():
        log.info("UBP_CDS=0: no CDS archive")
        return None
    path = archive_path()
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ubp-cds-") as tmp:
        dump = Path(tmp) / "archive.jsa"
        env = {**os.environ, DUMP_ENV: str(dump), "UBP_CDS": "1"}
        proc = subprocess.run([sys.executable, "-m", "ubp.jvm_cds", "--train", tmp, "--workload", workload], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not dump.is_file() or dump.stat().st_size == 0:
            # an optimisation only: say why and go on without it
            log.warning("could not build the CDS archive (rc %s): %s", proc.returncode, proc.stderr[-2000:])
            return None
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        shutil.move(str(dump), staged)
        os.replace(staged, path)  # atomic: a concurrent reader sees no archive or a whole one
    _prune(path.parent, keep=KEEP_ARCHIVES)
    return path


def _prune(root: Path, keep: int) -> list[Path]:
    """Every fresh clone (its own .venv, so its own class path) gets its own ~200 MB archive: keep only the `keep`
    most recently used (`java_options` touches the one it hands out). Removing one that a running JVM has mapped is
    safe (the file lives until it is unmapped)."""
    archives = sorted(root.glob("spark-driver-*.jsa"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)
    return archives[keep:]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Build the Spark driver's CDS archive (faster JVM start).")
    ap.add_argument("--force", action="store_true", help="rebuild even if it exists")
    ap.add_argument("--workload", default=WORKLOAD, help="module:function run to load the classes (default %(default)s)")
    ap.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train:
        load_workload(args.workload)(args.train)
        return 0
    path = build_archive(force=args.force, workload=args.workload)
    print(path if path else "no CDS archive (see the warning above); Spark runs without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
