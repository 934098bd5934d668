"""Logging: rich to the console, plain text to `<lakehouse>/_logs/ubp.log`."""

from __future__ import annotations

import logging
from pathlib import Path

_CONFIGURED = False


def setup_logging(log_dir: Path | None = None, level: int = logging.INFO) -> None:
    global _CONFIGURED
    if _CONFIGURED:
        return
    from rich.logging import RichHandler

    handlers: list[logging.Handler] = [RichHandler(show_path=False, rich_tracebacks=False)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_dir / "ubp.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    logging.basicConfig(level=level, handlers=handlers, format="%(message)s", force=True)
    for noisy in ("py4j", "urllib3", "matplotlib", "filelock", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _CONFIGURED = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
