"""Where things live. One Settings object is passed to every stage, the CLI and the DAGs build it the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_LAKEHOUSE = "./lakehouse"


@dataclass(frozen=True)
class Settings:
    """Paths and Spark options for one lakehouse.

    `lakehouse` is the root; tables live at `<lakehouse>/<layer>/<table>`, models under `_models`, Feast state
    under `_feast`, logs under `_logs`. `master` and `spark_conf` let the same job run on a cluster.
    """

    lakehouse: Path = field(default_factory=lambda: Path(os.environ.get("UBP_LAKEHOUSE", DEFAULT_LAKEHOUSE)))
    master: str | None = None
    spark_conf: tuple[tuple[str, str], ...] = ()
    namespace: str = ""  # non-empty: derived tables and models go to <lakehouse>/<namespace>/ (bronze is shared)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lakehouse", Path(self.lakehouse).expanduser().resolve())

    def table_path(self, name: str) -> Path:
        """Filesystem location of a lakehouse table, by its contract name (see `ubp.tables`)."""
        from ubp.tables import TABLES

        table = TABLES[name]
        if table.layer in ("bronze", "ops"):
            return self.lakehouse / table.layer / table.name
        return self.root / table.layer / table.name

    @property
    def root(self) -> Path:
        """Where derived tables and models live: the lakehouse, or a namespace inside it (e.g. an evaluation)."""
        return self.lakehouse / self.namespace if self.namespace else self.lakehouse

    def with_namespace(self, namespace: str) -> Settings:
        """Same lakehouse and Spark options; derived tables and models in their own namespace, bronze shared."""
        return replace(self, namespace=namespace)

    @property
    def models_dir(self) -> Path:
        return self.root / "_models"

    @property
    def feast_dir(self) -> Path:
        return self.lakehouse / "_feast"

    @property
    def logs_dir(self) -> Path:
        return self.lakehouse / "_logs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "_cache"


def parse_conf(pairs: list[str] | None) -> tuple[tuple[str, str], ...]:
    """Parse repeated `--conf key=value` options."""
    out: list[tuple[str, str]] = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--conf expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out.append((k.strip(), v.strip()))
    return tuple(out)
