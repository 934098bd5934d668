"""Delta Lake jars for Spark, fetched once from Maven Central and cached outside the repo.

Spark's own Ivy resolver (`spark.jars.packages`, what `configure_spark_with_delta_pip` sets) cannot reach Maven
Central from this machine's proxy setup, so we resolve the same coordinates with Maven into a cache folder and pass
them as `spark.jars`. The cache (default `~/.cache/ubp/jars`, env `UBP_JAR_CACHE`) survives fresh clones, so later
runs need no network.

Version note: the delta-spark 4.4.1 Python package names `io.delta:delta-spark_4.2_2.13:4.4.1`, but Maven Central
serves 4.4.0 as the newest `delta-spark_4.2_2.13` (4.4.1 answers 404); the Python package is a thin wrapper and the
4.4.0 jars pass our Delta tests, so 4.4.0 is what we pin. Set `UBP_DELTA_VERSION` to move.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

DELTA_ARTIFACT = "io.delta:delta-spark_4.2_2.13"
DELTA_VERSION = os.environ.get("UBP_DELTA_VERSION", "4.4.0")
# Jars Spark already ships (hadoop, parquet, jackson, scala, log4j, ...) are skipped so the classpath has one copy.
_SPARK_PROVIDED_PREFIXES = (
    "hadoop-", "parquet-", "jackson-core", "jackson-databind", "jackson-annotations", "scala-library", "log4j-",
    "slf4j-", "snappy-java", "zstd-jni", "RoaringBitmap", "aircompressor", "jsr305", "commons-pool", "jts-core",
)


def cache_dir() -> Path:
    return Path(os.environ.get("UBP_JAR_CACHE", Path.home() / ".cache" / "ubp" / "jars")) / DELTA_VERSION


def _pom(version: str) -> str:
    group, artifact = DELTA_ARTIFACT.split(":")
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>ubp</groupId><artifactId>ubp-delta-jars</artifactId><version>1</version><packaging>pom</packaging>
<dependencies><dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>
<version>{version}</version></dependency></dependencies></project>"""


def ensure_delta_jars() -> list[str]:
    """Return the Delta jar paths, downloading them with Maven the first time."""
    target = cache_dir()
    stamp = target / ".complete"
    if not stamp.exists():
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed once to fetch the Delta jars; install it or set UBP_JAR_CACHE")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "pom.xml").write_text(_pom(DELTA_VERSION))
            staging = Path(tmp) / "jars"
            proc = subprocess.run(
                ["mvn", "-q", "-B", "-U", "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
                 "-DincludeScope=runtime"],
                cwd=tmp, capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"could not fetch {DELTA_ARTIFACT}:{DELTA_VERSION} from Maven Central:\n"
                                   f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            target.mkdir(parents=True, exist_ok=True)
            for jar in staging.glob("*.jar"):
                if not jar.name.startswith(_SPARK_PROVIDED_PREFIXES):
                    shutil.copy2(jar, target / jar.name)
        stamp.write_text(f"{DELTA_ARTIFACT}:{DELTA_VERSION}\n")
    jars = sorted(str(p) for p in target.glob("*.jar"))
    if not any("delta-spark" in j for j in jars):
        raise RuntimeError(f"Delta jar cache {target} is incomplete; delete it and retry")
    return jars


if __name__ == "__main__":
    for j in ensure_delta_jars():
        print(j)
