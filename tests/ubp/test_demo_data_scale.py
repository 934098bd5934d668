"""`ubp demo-data` at the challenge's scale, checked at small sizes: the challenge's proportions of event types,
parts per chunk, memory that does not grow with the number of users, determinism, the catalog written by row groups,
and the demo's own data unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ubp import demo_data
from ubp.demo_data import (
    BIG_POPULATION,
    CHALLENGE_EVENTS,
    CHALLENGE_RATES,
    SCALES,
    TRUTH_DIR,
    _distinct_ids,
    generate_demo_data,
)
from ubp.tables import EVENT_TYPES, RAW_PRODUCT_FILE, RAW_PRODUCT_TEXT_FILE

# the challenge preset scaled down: its rates, period and events per user; 2,000 users; a small catalog
SCALED = {**SCALES["challenge"], "users": 2000, "chunk_users": 1000, "skus": 20_000, "categories": 600,
          "urls": 50_000, "seed": 5}
CHALLENGE_SHARE = {k: v / sum(CHALLENGE_EVENTS.values()) for k, v in CHALLENGE_EVENTS.items()}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scaled") / "raw"
    return out, generate_demo_data(out, **SCALED)


def test_challenge_rates_have_the_challenge_proportions_in_expectation():
    per = CHALLENGE_RATES.per_session()
    total = sum(per.values())
    for stem, share in CHALLENGE_SHARE.items():
        assert per[stem] / total == pytest.approx(share, rel=1e-9)
    assert 0.88 < CHALLENGE_SHARE["page_visit"] < 0.90


def test_scaled_down_preset_gives_the_challenge_mix_and_events_per_user(scaled):
    out, res = scaled
    rows = {s: res["rows"][s] for s in EVENT_TYPES}
    total = sum(rows.values())
    assert 0.85 < rows["page_visit"] / total < 0.92
    for stem, share in CHALLENGE_SHARE.items():  # every type within 15% (relative) of the real data's share
        assert rows[stem] / total == pytest.approx(share, rel=0.15), stem
    # ordering as in the real data: visits >> searches > adds > removes ~ buys
    assert rows["page_visit"] > rows["search_query"] > rows["add_to_cart"] > max(rows["product_buy"],
                                                                                    rows["remove_from_cart"])
    assert total / SCALED["users"] == pytest.approx(SCALES["challenge"]["events_per_user"], rel=0.1)
    meta = json.loads((out / TRUTH_DIR / "meta.json").read_text())
    assert meta["args"]["rates"] == "challenge" and meta["args"]["events_per_user"] == 169.0
    assert meta["args"]["days"] == 180 and "run" not in meta  # run stats only when asked for (the CLI)
    assert res["peak_rss_bytes"] > 0 and res["events_per_s"] > 0 and res["bytes_on_disk"]["events"] > 0


def test_number_of_parts_follows_the_chunk_size(tmp_path):
    out = tmp_path / "raw"
    res = generate_demo_data(out, **{**SCALED, "users": 700, "chunk_users": 100})
    for stem in EVENT_TYPES:
        parts = sorted((out / stem).glob("part-*.parquet"))
        assert len(parts) == res["parts"][stem] == 7, stem
        assert sum(pq.ParquetFile(p).metadata.num_rows for p in parts) == res["rows"][stem]
        # a part holds one chunk's users: parts never share a client
        ids = [set(pq.read_table(p, columns=["client_id"])["client_id"].to_pylist()) for p in parts]
        assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])


def test_same_arguments_give_identical_bytes(tmp_path, scaled):
    out, _ = scaled
    again = tmp_path / "raw"
    generate_demo_data(again, **SCALED)
    a, b = _files(out), _files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


_MEASURE = """
import json, sys
from ubp.demo_data import generate_demo_data
res = generate_demo_data(sys.argv[1], users=int(sys.argv[2]), chunk_users=1000, days=180, skus=20000,
                         categories=600, urls=50000, rates="challenge", events_per_user=169.0)
print(json.dumps({"rss": res["peak_rss_bytes"], "events": sum(res["rows"][s] for s in res["parts"])}))
"""


def test_peak_memory_does_not_grow_with_users(tmp_path):
    """Same chunk size, 8x the users (2.7M vs 0.34M events): peak RSS stays within 1.3x (holding the events
    would take several hundred MB more)."""
    runs = {}
    for users in (2000, 16_000):
        proc = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / f"raw{users}"), str(users)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[users] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs[16_000]["events"] > 7 * runs[2000]["events"]
    assert runs[16_000]["rss"] <= 1.3 * runs[2000]["rss"], runs


def test_catalog_is_written_by_row_groups(tmp_path, monkeypatch):
    kw = {"users": 50, "days": 10, "skus": 1000, "bad_row_rate": 0.01, "seed": 2}
    whole = generate_demo_data(tmp_path / "whole", **kw)
    monkeypatch.setattr(demo_data, "CATALOG_BLOCK", 300)
    blocks = generate_demo_data(tmp_path / "blocks", **kw)
    assert blocks["rows"] == whole["rows"]
    for name in (RAW_PRODUCT_FILE, RAW_PRODUCT_TEXT_FILE):
        a = pq.ParquetFile(tmp_path / "whole" / f"{name}.parquet")
        b = pq.ParquetFile(tmp_path / "blocks" / f"{name}.parquet")
        assert a.metadata.num_row_groups == 1 and b.metadata.num_row_groups == 4
        assert a.read().equals(b.read())
    # the injected bad products are in the last row group
    last = pq.ParquetFile(tmp_path / "blocks" / f"{RAW_PRODUCT_FILE}.parquet").read_row_group(3)
    assert last.num_rows == 100 + whole["injected_bad_products"]


def test_big_id_ranges_are_drawn_distinct_sorted_and_in_range():
    rng = np.random.default_rng(0)
    ids = _distinct_ids(rng, 200_000, 2 * BIG_POPULATION)
    assert len(ids) == 200_000 and ids.dtype == np.int64
    assert (np.diff(ids) > 0).all() and ids[0] >= 1 and ids[-1] <= 2 * BIG_POPULATION
    assert np.array_equal(ids, _distinct_ids(np.random.default_rng(0), 200_000, 2 * BIG_POPULATION))
    dense = _distinct_ids(np.random.default_rng(1), 1000, BIG_POPULATION + 1100)  # nearly every id: still works
    assert len(np.unique(dense)) == 1000


def test_demo_data_itself_is_unchanged(tmp_path):
    """Content fingerprint of a small demo with bad rows, from before the challenge-scale options: the default
    rates, draws and catalog writing give the same rows."""
    out = tmp_path / "raw"
    res = generate_demo_data(out, users=400, days=30, seed=3, chunk_users=150, skus=1200, bad_row_rate=0.01)
    assert res["rows"] == {"add_to_cart": 1429, "remove_from_cart": 237, "product_buy": 763, "page_visit": 8243,
                           "search_query": 1105, "product_properties": 1212, "product_text": 1200}

    def sums(name: str) -> list[int]:
        t = pq.read_table(out / name)
        return [pc.sum(t[c] if str(t[c].type).startswith("int") else pc.utf8_length(t[c])).as_py()
                for c in t.column_names]

    assert sums("page_visit") == [47420346, 156487, 20896659]
    assert sums("product_buy") == [4469062, 14497, 8323949]
    assert sums(f"{RAW_PRODUCT_FILE}.parquet") == [14260574, 284968, 63205, 72067]
    assert sums(f"{RAW_PRODUCT_TEXT_FILE}.parquet") == [13972556, 82359]


def test_cli_scale_preset_with_overrides_records_the_run(tmp_path):
    from typer.testing import CliRunner

    from ubp.cli import app
    from ubp.errors import UbpError

    runner = CliRunner()
    out = tmp_path / "raw"
    ok = runner.invoke(app, ["demo-data", "--out", str(out), "--scale", "challenge", "--users", "300",
                             "--skus", "3000", "--categories", "100", "--urls", "5000", "--chunk-users", "150"])
    assert ok.exit_code == 0, ok.output
    meta = json.loads((out / TRUTH_DIR / "meta.json").read_text())
    assert {k: meta["args"][k] for k in ("users", "days", "skus", "categories", "urls", "chunk_users", "rates",
                                         "events_per_user")} == {
        "users": 300, "days": 180, "skus": 3000, "categories": 100, "urls": 5000, "chunk_users": 150,
        "rates": "challenge", "events_per_user": 169.0}
    run = meta["run"]
    assert run["seconds"] > 0 and run["peak_rss_bytes"] > 0 and run["events"] == sum(
        meta["rows"][s] for s in EVENT_TYPES)
    assert set(run["bytes_on_disk"]) == {"events", "catalog", "truth"}
    assert "peak RSS" in ok.output and meta["parts"]["page_visit"] == 2
    bad = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "x"), "--scale", "huge"])
    assert isinstance(bad.exception, UbpError)
