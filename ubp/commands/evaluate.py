"""`ubp ensemble` and `ubp evaluate`: the ensemble profile and the RecSys Challenge 2025 evaluation protocol."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("ensemble")(ensemble_cmd)
    app.command("evaluate")(evaluate_cmd)


def _parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise UbpError(f"--as-of must be an ISO timestamp like 2025-06-16T00:00:00, got {value!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def ensemble_cmd(
    ctx: typer.Context,
    as_of: str | None = typer.Option(None, "--as-of", help="Members' as-of (default: the current GRU profiles')."),
    member: list[str] | None = typer.Option(
        None, "--member", help="Member to include (repeatable): gru, gru_<member>, aggregates, factors, stats, items, "
                               "text. "
                               "Default: the recipe's enabled members."
    ),
    pca: list[str] | None = typer.Option(None, "--pca", help="Per-member PCA width NAME=DIM (repeatable)."),
    factor_method: str = typer.Option("svd", "--factor-method", help="Factorisation member: svd or als."),
    recipe: str | None = typer.Option(None, "--recipe", help="Merge recipe TOML (default: ubp/ensemble_recipe.toml)."),
) -> None:
    """Build gold user_profiles_ensemble by the merge recipe: members transformed, concatenated, mean-filled,
    has_<member> flags, float16."""
    from ubp.cli import settings_of
    from ubp.stages.ensemble import ensemble

    widths: dict[str, int] = {}
    for item in pca or []:
        name, _, dim = item.partition("=")
        if not dim.isdigit():
            raise UbpError(f"--pca expects NAME=DIM, got {item!r}")
        widths[name] = int(dim)
    out = ensemble(settings_of(ctx), as_of=_parse_ts(as_of), members=tuple(member) if member else None,
                   pca=widths or None, factor_method=factor_method, recipe=recipe)
    typer.echo(json.dumps(out, indent=1, default=str))


def evaluate_cmd(
    ctx: typer.Context,
    profiles: list[str] | None = typer.Option(
        None, "--profiles",
        help="Profiles to score (repeatable): gru, gru_<member>, aggregates, factors, stats, items, text, "
             "ensemble, user_profiles, user_profiles_ensemble. Default: the recipe's enabled members and the "
             "ensemble. The random baseline is always scored.",
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (user split and probe init)."),
    as_of: str | None = typer.Option(None, "--as-of", help="Default: last purchase - 14 days (the challenge's)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the evaluation namespace's profiles."),
    no_build: bool = typer.Option(False, "--no-build", help="Use the evaluation namespace's tables as they are."),
    members: list[str] | None = typer.Option(
        None, "--member", help="User-model member built in the evaluation namespace (repeatable; default: "
        "day_event, week_all, all_fields; `small` adds the older preset for comparison, next_sku / next_url the "
        "transformers; score one as --profiles gru_<member>)."),
    max_epochs: int | None = typer.Option(None, "--max-epochs", help="Cap the user and item models' training epochs."),
    no_ablation: bool = typer.Option(False, "--no-ablation", help="Skip the ensemble-minus-member ablation."),
    max_users: int = typer.Option(200_000, "--max-users", help="Sample at most this many users for the probes."),
    probes: str = typer.Option("mlp,logreg", "--probes", help="Comma-separated probes; the first is the main one "
                               "(mlp: the challenge's MLP shape; logreg: logistic regression)."),
    n_boot: int = typer.Option(200, "--n-boot", min=10, help="Paired bootstrap draws per comparison."),
    probe_hidden: int = typer.Option(
        256, "--probe-hidden", min=8, help="The MLP probe's width (the challenge's is 2048, ~8x the CPU time of 256; "
        "docs/evaluation.md compares the two)."),
    probe_threads: int = typer.Option(1, "--probe-threads", min=1, help="torch threads of the probes."),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default reports/<date>)."),
    truth: Path | None = typer.Option(None, "--truth", help="Demo truth folder (default: <raw>/_truth if found)."),
) -> None:
    """Challenge protocol: profiles at as-of in an _eval namespace, targets from the next 14 days, probes, report."""
    from ubp.cli import settings_of
    from ubp.stages.evaluate import evaluate

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise UbpError(f"--seeds expects integers like 0,1,2, got {seeds!r}") from None
    if not seed_list:
        raise UbpError("--seeds needs at least one seed")
    probe_list = tuple(p.strip() for p in probes.split(",") if p.strip())
    if not probe_list or set(probe_list) - {"mlp", "logreg"}:
        raise UbpError(f"--probes takes mlp and/or logreg, got {probes!r}")
    res = evaluate(settings_of(ctx), profiles=profiles or None, seeds=seed_list, as_of=_parse_ts(as_of),
                   build=not no_build, rebuild=rebuild, members=tuple(members) if members else None,
                   max_epochs=max_epochs,
                   ablation=not no_ablation, max_users=max_users, report_dir=out, truth_dir=truth,
                   probes=probe_list, n_boot=n_boot, probe_hidden=probe_hidden, probe_threads=probe_threads)
    probe = res["probes"][0]
    typer.echo(f"evaluation at {res['as_of']} on {res['rows']['population']} users ({res['seconds']} s)")
    for name, rep in res["results"].items():
        mean = rep.get("_mean", {}).get(probe)
        if mean is not None:
            typer.echo(f"  {name:<24} mean score ({probe}) {mean:.4f}")
    typer.echo(f"report: {res['report']}")
