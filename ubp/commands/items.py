"""CLI: `ubp item-content`, `ubp train-item-model`, `ubp evaluate-items`, `ubp item-vectors`."""

from __future__ import annotations

import json

import typer

from ubp.errors import UbpError

VARIANT_HELP = "delta (default), content_finetune, frozen, id_only or history_avg."


def register(app: typer.Typer) -> None:
    app.command("item-content")(item_content_cmd)
    app.command("train-item-model")(train_item_model_cmd)
    app.command("evaluate-items")(evaluate_items_cmd)
    app.command("item-vectors")(item_vectors_cmd)


def _echo(result: dict, keys: tuple[str, ...] | None = None) -> None:
    shown = {k: result[k] for k in keys if k in result} if keys else result
    typer.echo(json.dumps(shown, indent=2, default=str))


def item_content_cmd(
    ctx: typer.Context,
    source: str = typer.Option("auto", "--source", help="auto: product text, else name codes; codes: name codes for "
                               "every item (the challenge's form; MiniLM on a CPU manages ~150-300 texts/s)."),
) -> None:
    """Encode new or changed catalog items (product text, else name codes) into silver item_content."""
    from ubp.cli import settings_of
    from ubp.stages.item_content import item_content

    if source not in ("auto", "codes"):
        raise UbpError(f"--source must be auto or codes, not {source!r}")
    _echo(item_content(settings_of(ctx), use_text=source == "auto"))


def train_item_model_cmd(
    ctx: typer.Context,
    variant: str = typer.Option("delta", "--variant", help=VARIANT_HELP),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Max epochs (default 100, early stopping)."),
    seed: int = typer.Option(0, "--seed"),
    promote: str = typer.Option("if_none", "--promote", help="if_none, always or never."),
    delta_max: float = typer.Option(0.5, "--delta-max", min=0.0, help="L2 bound of each item's delta."),
    train_users: int | None = typer.Option(None, "--train-users", min=1,
                                           help="Train on a stable hashed sample of about N users (at scale)."),
) -> None:
    """Train the cold-start SASRec (frozen content + bounded delta, or a baseline) as a new item-model version."""
    from ubp.cli import settings_of
    from ubp.stages.train_item_model import train_item_model

    if promote not in ("if_none", "always", "never"):
        raise UbpError(f"--promote must be if_none, always or never, got {promote!r}")
    res = train_item_model(settings_of(ctx), variant=variant, max_epochs=epochs, seed=seed, promote=promote,
                           delta_max=delta_max, train_users=train_users)
    _echo(res, ("version", "variant", "promoted", "model_dir", "metrics", "split", "seconds"))


def evaluate_items_cmd(
    ctx: typer.Context,
    variants: str = typer.Option("history_avg,id_only,content_finetune,frozen,delta", "--variants",
                                 help="Comma-separated variants to compare."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Max epochs per variant."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated training seeds, e.g. 0,1,2 (mean ± std)."),
    delta_max: float = typer.Option(0.5, "--delta-max", min=0.0, help="L2 bound of each item's delta."),
    n_boot: int = typer.Option(5000, "--bootstrap", min=100, help="Bootstrap resamples for the paired CI."),
) -> None:
    """Train every variant on one temporal split, per seed; print and save the paper-style table (cold / warm /
    total, mean ± std over seeds) and a paired bootstrap CI of delta vs content-init fine-tuned."""
    from ubp.cli import settings_of
    from ubp.stages.train_item_model import evaluate_item_model

    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    try:
        seed_list = tuple(int(x) for x in seeds.split(",") if x.strip())
    except ValueError as exc:
        raise UbpError(f"--seeds must be comma-separated integers, got {seeds!r}") from exc
    res = evaluate_item_model(settings_of(ctx), variants=chosen, max_epochs=epochs, seeds=seed_list,
                              delta_max=delta_max, n_boot=n_boot)
    typer.echo(res["table"])
    typer.echo(f"\nsaved to {res['report']}")


def item_vectors_cmd(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="Item-model version (default: CURRENT)."),
) -> None:
    """Write gold item_vectors for every catalog item (cold and new items from content alone)."""
    from ubp.cli import settings_of
    from ubp.stages.item_vectors import item_vectors

    _echo(item_vectors(settings_of(ctx), model_version=model))
