"""`ubp demo-data`: write a synthetic raw directory (RecSys 2025 layout) with planted, known structure."""

from __future__ import annotations

from pathlib import Path

import typer

from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)


def demo_data(
    out: Path = typer.Option(..., "--out", help="Raw directory to write (its earlier demo outputs are replaced)."),
    users: int = typer.Option(3000, "--users", min=1, help="Number of users."),
    days: int = typer.Option(60, "--days", min=3, help="Length of the period in days."),
    seed: int = typer.Option(7, "--seed", help="Random seed: same arguments give byte-identical files."),
    end: str = typer.Option("2025-06-30", "--end", help="Last day of the period, YYYY-MM-DD."),
    bad_row_rate: float = typer.Option(
        0.0, "--bad-row-rate", help="Share of invalid rows (and of exact duplicates) to inject, e.g. 0.001."
    ),
    timestamp_form: str = typer.Option(
        "string", "--timestamp-form", help="'string' (\"YYYY-MM-DD HH:MM:SS\", the challenge's form) or 'timestamp'."
    ),
    chunk_users: int = typer.Option(20_000, "--chunk-users", min=1, help="Users per written part (memory bound)."),
    coherent_segments: bool = typer.Option(
        False, "--coherent-segments",
        help="Segments shop related departments, so item text predicts behaviour (the cold-start study's data).",
    ),
) -> None:
    """Generate demo data: segments, funnels, searches, churners, seasonality, cold items (truth in DIR/_truth)."""
    from datetime import date

    from rich.table import Table

    from ubp.demo_data import generate_demo_data
    from ubp.log import console as ubp_console

    try:
        end_day = date.fromisoformat(end)
    except ValueError:
        raise UbpError(f"--end must be YYYY-MM-DD, got {end!r}") from None
    if timestamp_form not in ("string", "timestamp"):
        raise UbpError(f"--timestamp-form must be 'string' or 'timestamp', got {timestamp_form!r}")
    if not 0.0 <= bad_row_rate < 0.5:
        raise UbpError(f"--bad-row-rate must be in [0, 0.5), got {bad_row_rate}")
    if out.exists() and not out.is_dir():
        raise UbpError(f"--out {out} exists and is not a directory")
    res = generate_demo_data(out, users=users, days=days, seed=seed, end=end_day, bad_row_rate=bad_row_rate,
                             timestamp_form=timestamp_form, chunk_users=chunk_users, progress=True,
                             coherent_segments=coherent_segments)

    console = ubp_console()  # piped / logged: wide, no wrapping
    table = Table(title=f"demo data in {out} ({res['start']} .. {res['end']}, exclusive end)")
    table.add_column("file")
    table.add_column("rows", justify="right")
    table.add_column("parts", justify="right")
    table.add_column("injected bad / dup", justify="right")
    for stem, n in res["rows"].items():
        bad = sum(res["injected_bad_rows"].get(stem, {}).values())
        dup = res["injected_duplicates"].get(stem, 0)
        if stem == "product_properties":
            bad = res["injected_bad_products"]
        table.add_row(stem, f"{n:,}", str(res["parts"].get(stem, 1)), f"{bad} / {dup}" if bad or dup else "")
    console.print(table)
    n_ev = sum(res["rows"][s] for s in res["parts"])
    console.print(
        f"{n_ev:,} events, {res['users']:,} users ({res['churners']:,} churners, {res['segments']} segments), "
        f"{res['skus']:,} skus ({res['new_skus']:,} new), {res['categories']} categories, {res['urls']:,} urls "
        f"in {res['seconds']:.1f}s. Planted truth: {out / '_truth'} (not ingested). "
        f"Suggested as-of: {res['suggested_as_of']}."
    )
