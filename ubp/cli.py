"""`ubp`: one CLI for every stage and the whole pipeline.

Each stage's commands live in `ubp/commands/<stage>.py` and register themselves here. Command modules import
heavy libraries (pyspark, torch, feast) inside the command functions, so `ubp --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from ubp.config import DEFAULT_LAKEHOUSE, Settings, parse_conf
from ubp.errors import UbpError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Universal Behavioral Profiles.")

# Stage command modules, in pipeline order. A module exposes `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "ubp.commands.demo",
    "ubp.commands.ingest",
    "ubp.commands.sequences",
    "ubp.commands.user_model",
    "ubp.commands.items",
    "ubp.commands.evaluate",
    "ubp.commands.publish",
    "ubp.commands.run",
)


@app.callback()
def main(
    ctx: typer.Context,
    lakehouse: Path = typer.Option(
        Path(DEFAULT_LAKEHOUSE), "--lakehouse", envvar="UBP_LAKEHOUSE", help="Lakehouse root folder."
    ),
    master: str | None = typer.Option(None, "--master", help="Spark master (default local[2])."),
    conf: list[str] | None = typer.Option(None, "--conf", help="Extra Spark conf key=value (repeatable)."),
) -> None:
    """Universal Behavioral Profiles: user and item vectors from event logs."""
    from ubp.log import setup_logging

    settings = Settings(lakehouse=lakehouse, master=master, spark_conf=parse_conf(conf))
    setup_logging(settings.logs_dir)
    ctx.obj = settings


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a stage not built yet must not break the others
        if exc.name != _name:
            raise
        continue
    _mod.register(app)


def _click_error(exc: BaseException) -> bool:
    """Is `exc` a click error? typer bundles its own click (`typer._click`, whose exceptions derive from
    `typer.exceptions.TyperException`), so the top-level `click.ClickException` alone never matches."""
    from typer.exceptions import TyperException

    kinds: list[type] = [TyperException]
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:  # typer does not need the top-level click
        pass
    return isinstance(exc, tuple(kinds)) and hasattr(exc, "format_message")


def _show_click_error(exc) -> int:
    """Print a click error as ONE line on stderr; return its exit code (2 for usage errors)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # plain `ubp`: the help is the answer (typer's rich help has
        if (exc.format_message() or "").strip():  # been printed already; plain click's is in the message)
            typer.echo(exc.format_message(), err=True)
        return 2
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    typer.secho(f"error: {message}{hint}", fg="red", err=True)
    return int(getattr(exc, "exit_code", 2) or 2)


def run() -> None:
    """Entry point: user errors, usage errors and Spark's analysis errors become one clear line (exit 2)."""
    try:
        app(standalone_mode=False)
    except UbpError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        if _click_error(exc):
            sys.exit(_show_click_error(exc))
        raise


if __name__ == "__main__":
    run()
