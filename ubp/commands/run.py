"""`ubp run` (the whole pipeline, no Airflow needed) and `ubp demo-readback` (read results back from Feast)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo-readback")(demo_readback)


def run(
    ctx: typer.Context,
    raw: Path | None = typer.Option(None, "--raw", help="Raw data folder to ingest first (omit: no ingest)."),
    retrain: bool = typer.Option(False, "--retrain", help="Train new user/item models even if some are serving."),
    as_of: str | None = typer.Option(None, "--as-of", help="Build profiles from events before this (ISO, UTC)."),
    no_publish: bool = typer.Option(False, "--no-publish", help="Stop before publishing to Feast."),
    members: list[str] | None = typer.Option(
        None, "--member", help="GRU-AE member to train and embed (repeatable; default: day_event, week_all, "
        "all_fields; the first is served as user_profiles)."),
    max_epochs: int | None = typer.Option(None, "--max-epochs", min=1, help="Epoch cap for both models."),
    item_variant: str = typer.Option("delta", "--item-variant", help="Item model variant."),
    train_users: int | None = typer.Option(None, "--train-users", min=1,
                                           help="Train the models on a stable sample of about N users (at scale)."),
    threshold: float = typer.Option(
        0.01, "--threshold", min=0.0, help="A retrained model may be this much (relative) worse and still serve."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    """Run every stage in order: ingest, sequences, aggregates, models, embeddings, ensemble, publish."""
    from ubp.cli import settings_of
    from ubp.stages.pipeline import format_report, parse_as_of, run_pipeline

    settings = settings_of(ctx)
    report = run_pipeline(
        settings, raw, retrain=retrain, as_of=parse_as_of(as_of), publish=not no_publish,
        user_members=tuple(members) if members else None, user_max_epochs=max_epochs, item_variant=item_variant,
        item_max_epochs=max_epochs, threshold=threshold, train_users=train_users,
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
    typer.echo(format_report(report))


def _first_row(path: Path, columns: list[str], filter=None) -> dict | None:
    from ubp import reader

    for batch in reader.iter_batches(path, columns=columns, filter=filter, batch_size=64):
        if batch.num_rows:
            return batch.slice(0, 1).to_pylist()[0]
    return None


def demo_readback(
    ctx: typer.Context,
    client_id: int | None = typer.Option(None, "--client-id", help="User to read (default: one with a profile)."),
    sku: int | None = typer.Option(None, "--sku", help="Item whose neighbours to list (default: a cold item)."),
    k: int = typer.Option(5, "--k", min=1, help="Neighbours to list."),
) -> None:
    """Read one user's profile and one cold item's nearest neighbours back from the Feast online store."""
    import pyarrow.compute as pc

    from ubp.cli import settings_of
    from ubp.stages.publish import profile, similar_items

    settings = settings_of(ctx)
    if client_id is None:
        for table in ("user_profiles_ensemble", "user_profiles"):
            path = settings.table_path(table)
            if path.is_dir():
                row = _first_row(path, ["client_id"])
                if row:
                    client_id = int(row["client_id"])
                    break
        if client_id is None:
            raise UbpError(f"no profiles under {settings.lakehouse}: run `ubp run --raw DIR` first")
    cold = False
    if sku is None:
        path = settings.table_path("item_vectors")
        row = _first_row(path, ["sku"], filter=pc.field("is_cold")) if path.is_dir() else None
        cold = row is not None
        if row is None and path.is_dir():
            row = _first_row(path, ["sku"])
        if row is None:
            raise UbpError(f"no item vectors under {settings.lakehouse}: run `ubp run --raw DIR` first")
        sku = int(row["sku"])

    prof = profile(settings, client_id)
    typer.echo(f"profile of client {client_id} (Feast online store, {settings.feast_dir}):")
    for key, value in prof.items():
        if isinstance(value, (list, tuple)) and len(value) > 8:
            head = ", ".join(f"{float(v):.4f}" for v in value[:8])
            typer.echo(f"  {key}: [{head}, ...] ({len(value)} values)")
        else:
            typer.echo(f"  {key}: {value}")
    neighbours = similar_items(settings, sku, k=k)
    typer.echo(f"{len(neighbours)} nearest items to sku {sku}{' (a cold item)' if cold else ''}, by cosine:")
    for n in neighbours:
        typer.echo(f"  sku {n['sku']:<10} cosine {n['score']:.4f}{'  cold' if n.get('is_cold') else ''}")
    typer.echo(f"tables: {settings.lakehouse}  models: {settings.models_dir}  feast: {settings.feast_dir}")
