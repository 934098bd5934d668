"""`ubp export`: a profile table in the RecSys Challenge 2025 submission format (the work is `ubp.export`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ubp.config import Settings


def export(settings: Settings, out: str | Path, table: str = "user_profiles", clients: str | Path | None = None,
           model_version: str | None = None, as_of: datetime | None = None) -> dict:
    """Write the challenge submission format from a profile table (see `ubp.export`)."""
    from ubp.export import export_challenge

    return export_challenge(settings, out, table=table, clients=clients, model_version=model_version, as_of=as_of)
