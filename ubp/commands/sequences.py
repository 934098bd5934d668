"""CLI: `ubp sequences` (silver user_sequences + vocabularies) and `ubp aggregates` (gold user_aggregates)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("sequences")(sequences_cmd)
    app.command("aggregates")(aggregates_cmd)


def parse_as_of(value: str | None) -> datetime | None:
    """'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (or ISO 8601), read as UTC."""
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.strip().replace("T", " "))
    except ValueError:
        raise UbpError(f"--as-of must be 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' (UTC), got {value!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _print(result: dict, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    from ubp.log import console as ubp_console

    console = ubp_console()  # piped / logged: wide, no wrapping
    keys = [k for k in result if k not in ("stage", "top_values")]
    for k in keys:
        console.print(f"[bold]{k}[/bold]: {result[k]}")


def sequences_cmd(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None, "--as-of", help="Use only events strictly before this UTC time (default: all events, i.e. the "
        "latest event + 1 s)."
    ),
    max_len: int = typer.Option(126, "--max-len", min=1, help="Keep the newest N events per user."),
    incremental: bool = typer.Option(
        False, "--incremental", help="Rebuild only users with new events since the last build (MERGE)."
    ),
    refresh_vocab: bool = typer.Option(
        False, "--refresh-vocab", help="Build a new vocabulary from the events before --as-of instead of reusing the "
        "table's (models trained on the old one must be retrained)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build one chronological token sequence per user (all event types merged) + the vocabularies."""
    from ubp.cli import settings_of
    from ubp.stages.sequences import sequences

    result = sequences(settings_of(ctx), as_of=parse_as_of(as_of), max_len=max_len, incremental=incremental,
                       refresh_vocab=refresh_vocab)
    _print(result, json_out)


def aggregates_cmd(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None, "--as-of", help="Use only events strictly before this UTC time (default: all events)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build the per-user aggregate features (official challenge baseline + the seed solution's statistics)."""
    from ubp.cli import settings_of
    from ubp.stages.aggregates import aggregates

    result = aggregates(settings_of(ctx), as_of=parse_as_of(as_of))
    _print(result, json_out)
