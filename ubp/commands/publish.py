"""`ubp publish`, `ubp profile CLIENT_ID`, `ubp similar-items SKU`: the Feast side of ubp."""

from __future__ import annotations

import json

import typer

ONLINE_HELP = "Online store: sqlite (default) or redis (address from UBP_REDIS_URL). Env UBP_FEAST_ONLINE."


def register(app: typer.Typer) -> None:
    app.command("publish")(publish_cmd)
    app.command("profile")(profile_cmd)
    app.command("similar-items")(similar_items_cmd)


def publish_cmd(
    ctx: typer.Context,
    online: str = typer.Option(None, "--online", help=ONLINE_HELP),
    view: list[str] | None = typer.Option(None, "--view", help="Only these feature views (repeatable)."),
    full: bool = typer.Option(False, "--full", help="Rewrite every entity, not only the changed ones."),
    profile_table: str = typer.Option(
        None, "--profile-table", help="user_profiles or user_profiles_ensemble (default: the ensemble if built)."
    ),
) -> None:
    """feast apply + fast incremental publish of profiles, aggregates and item vectors into the online store."""
    from ubp.cli import settings_of
    from ubp.stages.publish import publish

    res = publish(settings_of(ctx), online=online, views=view or None, full=full, profile_table=profile_table)
    typer.echo(json.dumps(res, indent=2, default=str))


def profile_cmd(
    ctx: typer.Context,
    client_id: int = typer.Argument(..., help="User id."),
    online: str = typer.Option(None, "--online", help=ONLINE_HELP),
) -> None:
    """Print one user's published profile (feature service user_profile_v1) as JSON."""
    from ubp.cli import settings_of
    from ubp.stages.publish import profile

    typer.echo(json.dumps(profile(settings_of(ctx), client_id, online=online), default=str))


def similar_items_cmd(
    ctx: typer.Context,
    sku: int = typer.Argument(..., help="Item id."),
    k: int = typer.Option(10, "--k", min=1, help="How many neighbours."),
    online: str = typer.Option(None, "--online", help=ONLINE_HELP),
) -> None:
    """The k most similar items by cosine over the published item vectors (exact, cold items included)."""
    from ubp.cli import settings_of
    from ubp.stages.publish import similar_items

    for row in similar_items(settings_of(ctx), sku, k=k, online=online):
        typer.echo(json.dumps(row))
