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
) -> None:
    """feast apply + fast incremental publish of profiles (GRU and ensemble), aggregates and item vectors."""
    from ubp.cli import settings_of
    from ubp.stages.publish import publish

    res = publish(settings_of(ctx), online=online, views=view or None, full=full)
    typer.echo(json.dumps(res, indent=2, default=str))


def profile_cmd(
    ctx: typer.Context,
    client_id: int = typer.Argument(..., help="User id."),
    online: str = typer.Option(None, "--online", help=ONLINE_HELP),
    service: str = typer.Option(
        "user_profile_v1", "--service",
        help="A vector space's service: user_profile_v1 (served GRU-AE member), user_profile_<member>_v1, "
             "user_profile_ensemble_v1, a later _v<N>; or all (user_profile_v1 and user_profile_ensemble_v1).",
    ),
) -> None:
    """Print one user's published profile as JSON, one line per feature service."""
    from ubp.cli import settings_of
    from ubp.errors import UbpError
    from ubp.stages.publish import PROFILE_SERVICES, profile, profiles

    settings = settings_of(ctx)
    if service != "all":
        typer.echo(json.dumps(profile(settings, client_id, online=online, service=service), default=str))
        return
    rows = profiles(settings, client_id, online=online)
    if not any(rows.values()):
        raise UbpError(f"client_id {client_id} has no published profile in {', '.join(PROFILE_SERVICES)}")
    for name, row in rows.items():
        typer.echo(json.dumps(row or {"service": name, "client_id": client_id, "embedding": None}, default=str))


def similar_items_cmd(
    ctx: typer.Context,
    sku: int = typer.Argument(..., help="Item id."),
    k: int = typer.Option(10, "--k", min=1, help="How many neighbours."),
    online: str = typer.Option(None, "--online", help=ONLINE_HELP),
    exact: bool | None = typer.Option(
        None, "--exact/--index",
        help="--exact: exact search over every published vector; --index: the ANN index or an error. "
             "Default: the index when `ubp publish` built one, else exact.",
    ),
    space: str = typer.Option(None, "--space", help="Item-vector space (item_vector_v<N>); default: the newest."),
) -> None:
    """The k most similar items by cosine over the published item vectors (cold items included, the item left out)."""
    from ubp.cli import settings_of
    from ubp.stages.publish import similar_items

    for row in similar_items(settings_of(ctx), sku, k=k, online=online, exact=exact, space=space):
        typer.echo(json.dumps(row))
