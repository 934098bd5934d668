"""Where things live. One Settings object is passed to every stage, the CLI and the DAGs build it the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_LAKEHOUSE = "./lakehouse"


@dataclass(frozen=True)
class IngestOptions:
    """Guards of `ubp ingest` (CLI flags of the same names; see docs/operations.md).

    The defaults accept the organizers' data as delivered and stop a run whose input is mostly broken, so a
    scheduled run fails loudly instead of landing garbage or quarantining everything silently.
    """

    strict_schema: bool = False  # True: columns outside the contract quarantine the file (else ignored, recorded)
    min_timestamp: datetime = datetime(2000, 1, 1, tzinfo=UTC)  # earlier events: quarantined as out_of_range
    max_timestamp: datetime | None = None  # later events: out_of_range; None = the run's start + future_tolerance
    future_tolerance: timedelta = timedelta(days=1)  # default window end after the run's start
    max_quarantine_share: float = 0.5  # a file with a larger share of quarantined rows fails the run
    max_text_chars: int = 65_536  # product_text.text longer than this: quarantined (text_too_long)
    max_query_chars: int = 1_024  # search_query.query / product name strings longer than this: quarantined

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_quarantine_share <= 1.0:
            raise ValueError(f"max_quarantine_share must be in 0..1, got {self.max_quarantine_share}")
        if self.max_text_chars < 1 or self.max_query_chars < 1:
            raise ValueError("max_text_chars and max_query_chars must be positive")
        for name in ("min_timestamp", "max_timestamp"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:  # naive datetimes are UTC, like naive raw timestamps
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        if self.max_timestamp is not None and self.max_timestamp <= self.min_timestamp:
            raise ValueError(f"max_timestamp {self.max_timestamp} is not after min_timestamp {self.min_timestamp}")

    def window(self, run_start: datetime) -> tuple[datetime, datetime]:
        """The accepted event-time window [min, max] for a run that started at `run_start` (UTC)."""
        return self.min_timestamp, self.max_timestamp or run_start + self.future_tolerance


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
    ingest: IngestOptions = field(default_factory=IngestOptions)

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
