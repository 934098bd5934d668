"""The environment a test gives a subprocess (Airflow, spark-submit): none of the caller's settings, the suite's own."""

from __future__ import annotations

import os

# settings tests/conftest.py gives the whole suite; a subprocess keeps them (the Feast registry TTL: a re-publish
# in a subprocess would otherwise wait out Feast's default 60 s)
SUITE_SETTINGS = ("UBP_FEAST_CACHE_TTL_S",)


def subprocess_env(strip: tuple[str, ...] = ("AIRFLOW", "UBP_"), **extra: str) -> dict[str, str]:
    """os.environ without the variables starting with `strip` (a developer's own lakehouse or Airflow home must not
    leak into a test) except the suite's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(strip) or k in SUITE_SETTINGS}
    env.update(extra)
    return env
