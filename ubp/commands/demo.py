"""`ubp demo-data`: write a synthetic raw directory (RecSys 2025 layout) with planted, known structure."""

from __future__ import annotations

from pathlib import Path

import typer

from ubp.errors import UbpError


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)


def demo_data(
    out: Path = typer.Option(..., "--out", help="Raw directory to write (its earlier demo outputs are replaced)."),
    scale: str | None = typer.Option(
        None, "--scale",
        help="Named preset: 'challenge' = the RecSys 2025 data's size (1M users, 180 days, ~169M events in its "
             "proportions of event types, 1.26M skus, 6,774 categories, 12.7M urls). Explicit options override it.",
    ),
    users: int | None = typer.Option(None, "--users", min=1, help="Number of users [default: 3000]."),
    days: int | None = typer.Option(None, "--days", min=3, help="Length of the period in days [default: 60]."),
    seed: int = typer.Option(7, "--seed", help="Random seed: same arguments give byte-identical files."),
    end: str = typer.Option("2025-06-30", "--end", help="Last day of the period, YYYY-MM-DD."),
    bad_row_rate: float = typer.Option(
        0.0, "--bad-row-rate", help="Share of invalid rows (and of exact duplicates) to inject, e.g. 0.001."
    ),
    timestamp_form: str = typer.Option(
        "string", "--timestamp-form", help="'string' (\"YYYY-MM-DD HH:MM:SS\", the challenge's form) or 'timestamp'."
    ),
    chunk_users: int | None = typer.Option(
        None, "--chunk-users", min=1, help="Users per written part (memory bound) [default: 20,000]."),
    skus: int | None = typer.Option(None, "--skus", min=3, help="Catalog size [default: users / 2, 300..500k]."),
    categories: int | None = typer.Option(
        None, "--categories", min=1, help="Categories [default: skus / 30, 12..5,000; at most skus / 3]."),
    urls: int | None = typer.Option(None, "--urls", min=1, help="Urls [default: users, 500..2M]."),
    events_per_user: float | None = typer.Option(
        None, "--events-per-user", min=0.001,
        help="Scale the users' session rates to about this many events per user [default: unscaled, ~1.1 per "
             "user and day]."),
    coherent_segments: bool = typer.Option(
        False, "--coherent-segments",
        help="Segments shop related departments, so item text predicts behaviour (the cold-start study's data).",
    ),
) -> None:
    """Generate demo data: segments, funnels, searches, churners, seasonality, cold items (truth in DIR/_truth)."""
    from datetime import date

    from rich.table import Table

    from ubp.demo_data import SCALES, generate_demo_data
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
    if scale is not None and scale not in SCALES:
        raise UbpError(f"--scale must be one of {', '.join(sorted(SCALES))}, got {scale!r}")
    given = {"users": users, "days": days, "chunk_users": chunk_users, "skus": skus, "categories": categories,
             "urls": urls, "events_per_user": events_per_user}
    sizes = {**(SCALES[scale] if scale else {}), **{k: v for k, v in given.items() if v is not None}}
    res = generate_demo_data(out, seed=seed, end=end_day, bad_row_rate=bad_row_rate, timestamp_form=timestamp_form,
                             progress=True, coherent_segments=coherent_segments, record_run=True, **sizes)

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
        f"in {res['seconds']:.1f}s ({res['events_per_s']:,} events/s, peak RSS {res['peak_rss_bytes'] / 1e9:.2f} GB, "
        f"{sum(res['bytes_on_disk'].values()) / 1e9:.2f} GB on disk)."
    )
    console.print(f"Planted truth: {out / '_truth'} (not ingested). Suggested as-of: {res['suggested_as_of']}.")
