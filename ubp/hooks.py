"""Test and diagnostic hooks: the only knobs that exist for tests and measurements, not for users.

They are environment variables, read here and nowhere else, so that production signatures carry no test knobs and
a hook reaches code that a test cannot call directly (a torchrun child, a `subprocess` training run, an Airflow
task). `current()` reads the environment on each call because tests change a variable between runs in one
process. All are off when unset; a real run never sets them.

| variable | effect | used by |
|---|---|---|
| `UBP_TRAIN_THROTTLE_S` | sleep this many seconds per training batch (makes a kill mid-epoch observable) | `models/train_user.py` |
| `UBP_TRAIN_TRACE_DIR` | every rank appends the client ids it trained on, per epoch, to `<dir>/rank<r>.jsonl` | `models/train_user.py` |
| `UBP_MODEL_LOAD_LOG` | Spark workers append their pid to this file per user-model load ("once per worker") | `spark_jobs/embed_users.py` |
| `UBP_INJECT_FAILURE` | `task_id[:before|after],...`: fail that Airflow task's first try | `dags/_ubp_common.py` |
| `UBP_PUBLISH_THROTTLE_S` | sleep this many seconds after each batch a publish writes (makes a kill mid-publish observable) | `ubp/publish/incremental.py` |
| `UBP_PUBLISH_TRACE` | a publish appends `<unix time> <view> <rows>` to this file after each batch it writes | `ubp/publish/incremental.py` |
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Hooks:
    train_throttle_s: float = 0.0
    train_trace_dir: str | None = None
    model_load_log: str | None = None
    inject_failure: str = ""
    publish_throttle_s: float = 0.0
    publish_trace: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Hooks:
        """The hooks an environment sets (default: this process's)."""
        env = os.environ if env is None else env
        return cls(
            train_throttle_s=float(env.get("UBP_TRAIN_THROTTLE_S") or 0.0),
            train_trace_dir=env.get("UBP_TRAIN_TRACE_DIR") or None,
            model_load_log=env.get("UBP_MODEL_LOAD_LOG") or None,
            inject_failure=env.get("UBP_INJECT_FAILURE", ""),
            publish_throttle_s=float(env.get("UBP_PUBLISH_THROTTLE_S") or 0.0),
            publish_trace=env.get("UBP_PUBLISH_TRACE") or None,
        )

    def after_publish_batch(self, view: str, rows: int) -> None:
        """A publish wrote one batch of `view` (the statement is queued / the commands are sent)."""
        if self.publish_trace:
            with open(self.publish_trace, "a") as fh:
                fh.write(f"{time.time():.6f} {view} {rows}\n")
        if self.publish_throttle_s > 0:
            time.sleep(self.publish_throttle_s)


def current() -> Hooks:
    """The hooks set now; read at the start of the work they affect, never stored in a signature."""
    return Hooks.from_env()
