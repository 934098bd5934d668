"""CLI: `ubp train-user-model`, `ubp embed-users`, `ubp export --format challenge`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("train-user-model")(train_cmd)
    app.command("embed-users")(embed_cmd)
    app.command("export")(export_cmd)


def _echo(result: dict) -> None:
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2, default=str))


def train_cmd(
    ctx: typer.Context,
    member: str = typer.Option("day_event", "--member", "--preset",
                               help="User-model member: day_event, week_all, all_fields, the opt-in "
                                    "transformers next_sku, next_url (or the older small, paper)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Max epochs (default: the member's)."),
    seed: int = typer.Option(0, "--seed"),
    promote: str = typer.Option("if_none", "--promote", help="if_none | always | never"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of users (by client_id hash) held out."),
    force: bool = typer.Option(False, "--force", help="Retrain even if this exact run already finished."),
    init_from: str | None = typer.Option(None, "--init-from", help="Warm start from this version of the member, or `current` (the serving one when vocabulary and shapes allow)."),
    full_size: bool = typer.Option(False, "--full-size", help="Large members at full size even without a GPU."),
    train_users: int | None = typer.Option(None, "--train-users", min=1,
                                           help="Train on a stable hashed sample of about N users (at scale)."),
    loss_norm: bool = typer.Option(False, "--loss-norm",
                                   help="Divide each field's loss by log(its classes), so the sku/url heads do "
                                        "not outweigh time and event type (docs/members.md)."),
) -> None:
    """Train one user-model member (GRU-AE or next-event transformer) on the current `user_sequences` (resumes
    after a kill).

    Multi-GPU: `torchrun --nproc_per_node N -m ubp.stages.train_user_model --lakehouse DIR --member week_all`.
    """
    from ubp.cli import settings_of
    from ubp.stages.train_user_model import train_user_model

    overrides: dict = {}  # GRUAEConfig fields the options change; none: the member's own config
    if batch_size:
        overrides["batch_size"] = batch_size
    if loss_norm:
        overrides["loss_norm"] = True
    _echo(train_user_model(settings_of(ctx), member=member, max_epochs=epochs, seed=seed, promote=promote,
                           overrides=overrides or None, val_fraction=val_fraction, force=force,
                           init_from=init_from, full_size=full_size, train_users=train_users))


def embed_cmd(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="User model version (default: the member's CURRENT)."),
    member: str = typer.Option("day_event", "--member", help="User-model member whose model embeds."),
    engine: str = typer.Option("arrow", "--engine", help="arrow (mapInArrow, the default: no pandas conversion) or pandas (mapInPandas)."),
) -> None:
    """Embed every user of `user_sequences` into gold `user_profiles` with Spark (idempotent per model, as-of)."""
    from ubp.cli import settings_of
    from ubp.stages.embed_users import embed_users

    if engine not in ("pandas", "arrow"):
        raise UbpError(f"--engine must be pandas or arrow, not {engine!r}")
    _echo(embed_users(settings_of(ctx), model_version=model, engine=engine, member=member))


def export_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Output directory (client_ids.npy, embeddings.npy)."),
    fmt: str = typer.Option("challenge", "--format", help="Only 'challenge' (RecSys 2025 submission)."),
    clients: Path | None = typer.Option(None, "--clients", help="relevant_clients.npy: exact rows and order."),
    table: str = typer.Option("user_profiles", "--table", help="user_profiles or user_profiles_ensemble."),
    model: str | None = typer.Option(None, "--model", help="Model version slice (default: the newest as-of)."),
    as_of: str | None = typer.Option(None, "--as-of", help="As-of slice, ISO date/time in UTC."),
) -> None:
    """Write a profile table in the challenge format (float16, <= 2048 columns); missing clients get the mean."""
    from ubp.cli import settings_of
    from ubp.stages.export import export

    if fmt != "challenge":
        raise UbpError(f"--format must be 'challenge', not {fmt!r}")
    when = None
    if as_of:
        try:
            when = datetime.fromisoformat(as_of)
        except ValueError as exc:
            raise UbpError(f"--as-of: not an ISO date/time: {as_of!r}") from exc
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if clients is not None and not clients.exists():
        raise UbpError(f"--clients: no such file {clients}")
    result = export(settings_of(ctx), out, table=table, clients=clients, model_version=model, as_of=when)
    _echo(result)
    if clients is not None:
        typer.echo(f"{result['filled_with_mean']} of {result['rows']['client_ids']} clients had no profile "
                   f"and were filled with the mean profile")
