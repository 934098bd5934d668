"""Logging and progress: rich on a terminal, plain lines when piped or scheduled; `<lakehouse>/_logs/ubp.log`.

A scheduled run's stdout/stderr go to a file, where a live bar is `\\r` spam and rich wraps at 80 columns. So when
either stream is not a terminal, log records are one plain line each, progress is a log line every ~10% or 30 s
(`LineProgress`), and consoles are wide. `UBP_NO_PROGRESS=1` turns progress off everywhere.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_CONFIGURED = False
_FILE_HANDLER: logging.FileHandler | None = None
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WIDE = 100_000  # console width when not a terminal: never wrap or cut a line
PROGRESS_EVERY_S = 30.0
PROGRESS_EVERY_FRACTION = 0.1

log = logging.getLogger("ubp.progress")


def interactive() -> bool:
    """True when both stdout and stderr are terminals (a person watching): only then live bars and rich layout."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is None or not stream.isatty():
                return False
        except (AttributeError, ValueError):  # replaced or closed streams (Airflow, pytest capture)
            return False
    return True


def progress_enabled() -> bool:
    """Progress is reported unless `UBP_NO_PROGRESS=1`."""
    return os.environ.get("UBP_NO_PROGRESS", "") != "1"


def console(stderr: bool = False) -> Any:
    """A rich Console; when piped or logged, wide and without soft wrapping so a table row or a path stays one
    line."""
    from rich.console import Console

    c = Console(stderr=stderr)
    if not c.is_terminal:
        c = Console(stderr=stderr, width=WIDE, soft_wrap=True)
    return c


def setup_logging(log_dir: Path | None = None, level: int = logging.INFO) -> None:
    """Console logging once per process; the file handler follows `log_dir`, so each lakehouse's `ubp.log` gets
    only its own runs' lines even when one process works on several lakehouses (tests, Airflow workers)."""
    global _CONFIGURED
    if not _CONFIGURED:
        if interactive():
            from rich.logging import RichHandler

            handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        else:  # one plain line per record: no wrapping, no escape codes
            handler = _PlainHandler()
            handler.setFormatter(logging.Formatter(_FORMAT))
        logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
        for noisy in ("py4j", "urllib3", "matplotlib", "filelock", "numba"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if not interactive() or not progress_enabled():
            # third-party tqdm bars (ours go through `progress`): off rather than `\r` lines in a log file
            os.environ.setdefault("TQDM_DISABLE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        _CONFIGURED = True
    if log_dir is not None:
        _use_log_file(Path(log_dir) / "ubp.log")


class _PlainHandler(logging.StreamHandler):
    """Plain lines on the CURRENT `sys.stdout`: pytest and Airflow replace it, and a handler holding the stream it
    was created with would write to a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _use_log_file(path: Path) -> None:
    """Point the file handler at `path` (closing the previous lakehouse's file)."""
    global _FILE_HANDLER
    root = logging.getLogger()
    if (_FILE_HANDLER is not None and _FILE_HANDLER in root.handlers
            and Path(_FILE_HANDLER.baseFilename) == path.absolute()):
        return
    if _FILE_HANDLER is not None:
        root.removeHandler(_FILE_HANDLER)
        _FILE_HANDLER.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    _FILE_HANDLER = logging.FileHandler(path)
    _FILE_HANDLER.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(_FILE_HANDLER)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


class LineProgress:
    """Progress as log lines (every ~10% of `total`, or 30 s without a total), with tqdm's small API
    (iterate, `update`, `set_postfix`, `close`), for runs nobody watches live."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 disable: bool = False) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.disable = iterable, total, desc, disable
        self.n = 0
        self.postfix = ""
        self._start = self._last_t = time.monotonic()
        self._last_n = 0
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        if self.total:
            step = max(1.0, self.total * PROGRESS_EVERY_FRACTION)
            due = self.n - self._last_n >= step or now - self._last_t >= PROGRESS_EVERY_S
        else:
            due = now - self._last_t >= PROGRESS_EVERY_S
        if due and (not self.total or self.n < self.total):
            self._emit(now)

    def close(self) -> None:
        if not self._closed and not self.disable and self.n > 0:
            self._emit(time.monotonic())
        self._closed = True

    def _emit(self, now: float) -> None:
        done = f"{self.n:,.0f}/{self.total:,} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n:,.0f}"
        extra = f", {self.postfix}" if self.postfix else ""
        log.info("%s: %s in %.0fs%s", self.desc or "progress", done, now - self._start, extra)
        self._last_t, self._last_n = now, self.n


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             disable: bool = False) -> Any:
    """A tqdm bar on a terminal, `LineProgress` log lines otherwise; off when `disable` or `UBP_NO_PROGRESS=1`."""
    disable = disable or not progress_enabled()
    if not interactive():
        return LineProgress(iterable, total=total, desc=desc, disable=disable)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False)


class _LineTasks:
    """rich `Progress`'s small API (add_task / advance / update / start / stop) as `LineProgress` log lines."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.tasks: dict[int, LineProgress] = {}

    def __enter__(self) -> _LineTasks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        return None

    def stop(self) -> None:
        for t in self.tasks.values():
            t.close()

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = LineProgress(total=None if total is None else int(total), desc=description,
                                           disable=self.disable)
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.tasks[task_id].update(advance)

    def update(self, task_id: int, advance: float | None = None, **_: Any) -> None:
        if advance:
            self.advance(task_id, advance)


def task_progress() -> Any:
    """A transient rich `Progress` on a terminal, log lines otherwise (same add_task / advance calls)."""
    if not interactive():
        return _LineTasks(disable=not progress_enabled())
    from rich.progress import Progress

    return Progress(transient=True, disable=not progress_enabled())
