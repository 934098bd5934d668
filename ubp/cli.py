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


def run() -> None:
    """Entry point: turn user errors (and Spark's analysis errors) into one clear line."""
    try:
        app(standalone_mode=False)
    except UbpError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own formatting
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    run()
