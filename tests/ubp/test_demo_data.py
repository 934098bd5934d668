"""`ubp demo-data`: layout and schema of the raw directory, determinism, and the planted structure; at the challenge's
scale (checked at small sizes): its proportions of event types, parts per chunk, memory that does not grow with the
number of users, the catalog written by row groups, and the demo's own data unchanged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
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
from ubp.tables import (
    EVENT_TYPES,
    PRODUCT_EVENTS,
    RAW_EVENT_COLUMNS,
    RAW_PRODUCT_COLUMNS,
    RAW_PRODUCT_FILE,
    RAW_PRODUCT_TEXT_COLUMNS,
    RAW_PRODUCT_TEXT_FILE,
)

SMALL = {"users": 400, "days": 30, "seed": 3, "chunk_users": 150, "skus": 1200}  # 40 categories
CODES = re.compile(r"^\[(\d{1,3})( \d{1,3}){15}\]$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "raw"
    return out, generate_demo_data(out, **SMALL)


def _events(out: Path, stem: str) -> pd.DataFrame:
    df = pq.read_table(out / stem).to_pandas()
    df["ts"] = pd.to_datetime(df["timestamp"], format="%Y-%m-%d %H:%M:%S").dt.tz_localize("UTC")
    return df


def _all_events(out: Path) -> pd.DataFrame:
    return pd.concat([_events(out, s).assign(event_type=s)[["client_id", "ts", "event_type"]] for s in EVENT_TYPES])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_schema_and_counts(demo):
    out, res = demo
    meta = json.loads((out / TRUTH_DIR / "meta.json").read_text())
    start, end = pd.Timestamp(meta["start"], tz="UTC"), pd.Timestamp(meta["end"], tz="UTC")
    assert end - start == pd.Timedelta(days=SMALL["days"])
    for stem in EVENT_TYPES:
        assert (out / stem).is_dir()
        table = pq.read_table(out / stem)
        assert tuple(table.column_names) == RAW_EVENT_COLUMNS[stem]
        assert table.schema.field("client_id").type == pa.int64()
        assert table.schema.field("timestamp").type == pa.string()
        assert table.num_rows == res["rows"][stem] > 0
        df = _events(out, stem)
        assert df["ts"].between(start, end, inclusive="left").all()
        if stem == "search_query":
            assert df["query"].str.match(CODES).all()
            codes = np.array([list(map(int, q[1:-1].split())) for q in df["query"]])
            assert codes.shape[1] == 16 and codes.min() >= 0 and codes.max() <= 255
        else:
            assert table.schema.field(RAW_EVENT_COLUMNS[stem][2]).type == pa.int64()
    products = pq.read_table(out / f"{RAW_PRODUCT_FILE}.parquet")
    assert tuple(products.column_names) == RAW_PRODUCT_COLUMNS
    assert [products.schema.field(c).type for c in ("sku", "category", "price")] == [pa.int64(), pa.int64(),
                                                                                      pa.int32()]
    p = products.to_pandas()
    assert p["sku"].is_unique and p["price"].between(0, 99).all() and p["name"].str.match(CODES).all()
    text = pq.read_table(out / f"{RAW_PRODUCT_TEXT_FILE}.parquet").to_pandas()
    assert tuple(text.columns) == RAW_PRODUCT_TEXT_COLUMNS and set(text["sku"]) == set(p["sku"])
    assert text["text"].str.len().min() > 20
    # every product event references a catalog sku; page visits are the majority
    for stem in PRODUCT_EVENTS:
        assert _events(out, stem)["sku"].isin(p["sku"]).all()
    n = {s: res["rows"][s] for s in EVENT_TYPES}
    assert 0.55 < n["page_visit"] / sum(n.values()) < 0.8
    # no exact duplicates unless asked for
    for stem in EVENT_TYPES:
        assert not _events(out, stem).duplicated(list(RAW_EVENT_COLUMNS[stem])).any()


def test_chunked_writing_gives_parts_that_add_up(demo):
    out, res = demo
    users = pq.read_table(out / TRUTH_DIR / "users.parquet").to_pandas()
    total = 0
    for stem in EVENT_TYPES:
        parts = sorted((out / stem).glob("part-*.parquet"))
        assert len(parts) == 3  # 400 users in chunks of 150
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        assert rows == res["rows"][stem]
        total += rows
    assert users["n_events"].sum() == total
    ev = _all_events(out)
    assert ev.groupby("client_id").size().reindex(users["client_id"], fill_value=0).tolist() == \
        users["n_events"].tolist()


def test_same_arguments_give_identical_bytes_and_rerun_replaces_old_output(tmp_path, demo):
    out, _ = demo
    again = tmp_path / "raw"
    generate_demo_data(again, **{**SMALL, "seed": 4, "users": 200})  # different content first ...
    (again / "unrelated.txt").write_text("kept")
    generate_demo_data(again, **SMALL)  # ... then replaced
    a, b = _files(out), _files(again)
    assert b.pop("unrelated.txt") == b"kept"
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = tmp_path / "other"
    generate_demo_data(other, **{**SMALL, "seed": SMALL["seed"] + 1})
    assert _files(other)["product_buy/part-00000.parquet"] != a["product_buy/part-00000.parquet"]


def test_churners_stop_and_fade(demo):
    out, _ = demo
    users = pq.read_table(out / TRUTH_DIR / "users.parquet").to_pandas().set_index("client_id")
    last = _all_events(out).groupby("client_id")["ts"].max()
    churners = users[users["churned"]]
    assert 0.2 < len(churners) / len(users) < 0.4
    assert (last.reindex(churners.index).dropna() < churners["churn_ts"].reindex(
        last.reindex(churners.index).dropna().index)).all()
    meta = json.loads((out / TRUTH_DIR / "meta.json").read_text())
    as_of = pd.Timestamp(meta["suggested_as_of"], tz="UTC")
    # some churners stop in the final 14 days, others earlier; active non-churners keep buying in the window
    assert 0.1 < (churners["churn_ts"] >= as_of).mean() < 0.9
    buys = _events(out, "product_buy")
    window_buyers = set(buys.loc[buys["ts"] >= as_of, "client_id"])
    active = users[users["n_events"] > 20]
    rate = active.index.isin(window_buyers)
    assert rate[~active["churned"].to_numpy()].mean() > rate[active["churned"].to_numpy()].mean() + 0.2


def test_new_items_first_appear_after_the_time_quantile(demo):
    out, _ = demo
    items = pq.read_table(out / TRUTH_DIR / "items.parquet").to_pandas()
    new = items[items["is_new"]]
    assert 0.02 < len(new) / len(items) < 0.15
    ev = _all_events(out)
    q90 = ev["ts"].quantile(0.9)
    product = pd.concat([_events(out, s) for s in PRODUCT_EVENTS])
    seen_new = product[product["sku"].isin(new["sku"])]
    assert len(seen_new) > 0
    assert seen_new["ts"].min() > max(q90, product["ts"].quantile(0.9))
    # nothing is touched before its release; first_seen_ts in the truth matches the data
    first = product.groupby("sku")["ts"].min()
    truth = items.set_index("sku")
    assert (first >= truth.loc[first.index, "release_ts"]).all()
    assert (first == truth.loc[first.index, "first_seen_ts"]).all()


def test_segments_shape_category_distribution(demo):
    """Naive Bayes with the planted segment->category probabilities must recover segments far above chance."""
    out, _ = demo
    users = pq.read_table(out / TRUTH_DIR / "users.parquet").to_pandas()
    seg_cat = pq.read_table(out / TRUTH_DIR / "segment_categories.parquet").to_pandas()
    probs = seg_cat.pivot(index="segment", columns="category", values="prob")
    products = pq.read_table(out / f"{RAW_PRODUCT_FILE}.parquet").to_pandas()[["sku", "category"]]
    ev = pd.concat([_events(out, s) for s in PRODUCT_EVENTS]).merge(products, on="sku")
    counts = pd.crosstab(ev["client_id"], ev["category"]).reindex(columns=probs.columns, fill_value=0)
    counts = counts[counts.sum(axis=1) >= 5]
    assert len(counts) > 100
    guess = (counts.to_numpy() @ np.log(probs.to_numpy().T)).argmax(axis=1)
    segment = users.set_index("client_id").loc[counts.index, "segment"].to_numpy()
    assert (guess == segment).mean() > 0.5  # chance is about 1/8


def _two_department_mass(out: Path) -> float:
    """Mean over segments of the probability mass in the segment's two most likely departments."""
    from ubp.demo_data import category_departments

    seg_cat = pq.read_table(out / TRUTH_DIR / "segment_categories.parquet").to_pandas()
    cats = np.sort(seg_cat["category"].unique())  # category index c <-> the c-th smallest id
    seg_cat["dept"] = seg_cat["category"].map(dict(zip(cats.tolist(), category_departments(len(cats)).tolist(),
                                                       strict=True)))
    mass = seg_cat.groupby(["segment", "dept"])["prob"].sum()
    return float(mass.groupby("segment").apply(lambda m: m.nlargest(2).sum()).mean())


def test_coherent_segments_shop_related_departments(tmp_path):
    """--coherent-segments: a segment's core categories share departments (item text predicts behaviour); the
    default draws random cores. Same random draws either way: the catalogue is byte-identical."""
    args = {"users": 300, "days": 10, "seed": 3, "categories": 48}  # 48 categories in 6 departments, 6 per core
    plain, coherent = tmp_path / "plain", tmp_path / "coherent"
    generate_demo_data(plain, **args)
    res = generate_demo_data(coherent, **args, coherent_segments=True)
    assert res["args"]["coherent_segments"] is True
    assert _two_department_mass(coherent) > 0.8  # the core (80 % of the mass) lies in <= 2 departments
    assert _two_department_mass(coherent) - _two_department_mass(plain) > 0.15  # seed 3: 0.87 vs 0.67
    for name in (RAW_PRODUCT_FILE, RAW_PRODUCT_TEXT_FILE):
        assert pq.read_table(coherent / f"{name}.parquet").equals(pq.read_table(plain / f"{name}.parquet"))


def test_search_codes_follow_the_session_category(demo):
    """Each user's mean query codes are closer to the name codes of the categories they buy than to others."""
    out, _ = demo
    products = pq.read_table(out / f"{RAW_PRODUCT_FILE}.parquet").to_pandas()
    names = np.array([list(map(int, q[1:-1].split())) for q in products["name"]], dtype=float)
    centre = pd.DataFrame(names).groupby(products["category"].to_numpy()).mean()
    q = _events(out, "search_query")
    qc = pd.DataFrame(np.array([list(map(int, s[1:-1].split())) for s in q["query"]], dtype=float))
    user_q = qc.groupby(q["client_id"].to_numpy()).mean()
    buys = _events(out, "add_to_cart").merge(products[["sku", "category"]], on="sku")
    top = buys.groupby("client_id")["category"].agg(lambda s: s.value_counts().index[0])
    common = user_q.index.intersection(top.index)
    assert len(common) > 50
    d = ((user_q.loc[common].to_numpy()[:, None, :] - centre.to_numpy()[None]) ** 2).sum(-1)
    own = d[np.arange(len(common)), centre.index.get_indexer(top.loc[common])]
    assert (own < np.median(d, axis=1)).mean() > 0.62  # chance: 0.5, +3 sd at ~200 users


def test_weekday_seasonality_and_heavy_tail(demo):
    out, _ = demo
    ev = _all_events(out)
    by_day = ev["ts"].dt.dayofweek.value_counts()
    assert by_day[5] > 1.15 * by_day[1]  # Saturday busier than Tuesday
    n = pq.read_table(out / TRUTH_DIR / "users.parquet").to_pandas()["n_events"]
    assert n.max() > 8 * n.median()


def test_bad_rows_and_duplicates_are_injected_and_counted(tmp_path, demo):
    out, clean = demo
    res = generate_demo_data(tmp_path / "bad", **SMALL, bad_row_rate=0.01)
    bad, dup = res["injected_bad_rows"], res["injected_duplicates"]
    assert sum(dup.values()) > 0 and sum(sum(k.values()) for k in bad.values()) > 0
    for stem in EVENT_TYPES:
        n_bad = sum(bad.get(stem, {}).values())
        assert res["rows"][stem] == clean["rows"][stem] + n_bad + dup.get(stem, 0)
    pv = pq.read_table(tmp_path / "bad" / "page_visit").to_pandas()
    assert pv["client_id"].isna().sum() == bad["page_visit"].get("null_client_id", 0)
    assert (pv["url"] < 0).sum() == bad["page_visit"].get("negative_id", 0)
    assert pv.dropna().duplicated().sum() >= dup["page_visit"]
    assert res["injected_bad_products"] >= 1
    products = pq.read_table(tmp_path / "bad" / f"{RAW_PRODUCT_FILE}.parquet").to_pandas()
    invalid = (products["price"] > 99) | (products["category"] < 0)
    assert invalid.sum() == res["injected_bad_products"]
    meta = json.loads((tmp_path / "bad" / TRUTH_DIR / "meta.json").read_text())
    assert meta["injected_duplicates"] == dup


def test_foreign_raw_files_are_never_deleted(tmp_path):
    from ubp.errors import UbpError

    raw = tmp_path / "real"
    (raw / "product_buy").mkdir(parents=True)
    (raw / "product_buy" / "part-0.parquet").write_bytes(b"not ours")
    with pytest.raises(UbpError, match="not written by"):
        generate_demo_data(raw, users=20, days=5)
    assert (raw / "product_buy" / "part-0.parquet").read_bytes() == b"not ours"


def test_timestamp_form_writes_timestamp_columns(tmp_path):
    res = generate_demo_data(tmp_path / "ts", users=60, days=10, seed=1, timestamp_form="timestamp",
                             end="2024-03-31", bad_row_rate=0.02)
    table = pq.read_table(tmp_path / "ts" / "page_visit")
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    bad = res["injected_bad_rows"]["page_visit"]
    assert table.column("timestamp").null_count == bad.get("null_timestamp", 0) and "bad_timestamp" not in bad
    ts = table.column("timestamp").to_pandas().dropna()
    ts = ts[ts.dt.year < 2099]
    assert ts.min() >= pd.Timestamp("2024-03-22", tz="UTC") and ts.max() < pd.Timestamp("2024-04-01", tz="UTC")
    assert res["end"] == "2024-04-01 00:00:00"


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from ubp.cli import app
    from ubp.errors import UbpError

    runner = CliRunner()
    ok = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "raw"), "--users", "50", "--days", "10",
                             "--seed", "2"])
    assert ok.exit_code == 0, ok.output
    assert "product_buy" in ok.output and (tmp_path / "raw" / "product_buy").is_dir()
    bad = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "raw"), "--end", "June"])
    assert isinstance(bad.exception, UbpError)


def test_demo_cold_items_are_bought_by_users_of_their_content_category(tmp_path):
    """The link the method relies on, in the demo data: a new (cold) item shares its product-type text with the
    old items of its category, and the users who take it had shopped in that category before, far more often than
    the category's share of all product events."""
    import glob

    import pandas as pd
    import pyarrow.parquet as pq

    from ubp.demo_data import generate_demo_data

    raw = tmp_path / "raw"
    generate_demo_data(raw, users=800, days=30)
    items = pq.read_table(raw / "_truth" / "items.parquet").to_pandas()
    text = pq.read_table(raw / "product_text.parquet").to_pandas()
    label = dict(zip(text.iloc[:, 0], text.iloc[:, 1].str.split(",").str[0], strict=True))  # product type
    items["label"] = items.sku.map(label)
    old_labels = items[~items.is_new].groupby("category").label.agg(set)
    new = items[items.is_new]
    assert len(new) > 0
    assert all(row.label in old_labels[row.category] for row in new.itertuples())

    ev = pd.concat([pq.read_table(f).to_pandas() for d in ("add_to_cart", "product_buy", "remove_from_cart")
                    for f in glob.glob(str(raw / d / "*.parquet"))])
    ev["t"] = pd.to_datetime(ev.timestamp)
    ev["kat"] = ev.sku.map(dict(zip(items.sku, items.category, strict=True)))
    ev["new"] = ev.sku.map(dict(zip(items.sku, items.is_new, strict=True))).astype(bool)
    ev = ev.sort_values(["client_id", "t"])
    base = ev[~ev.new].kat.value_counts(normalize=True)
    share, expected = [], []
    for _, g in ev.groupby("client_id"):
        if not g.new.any():
            continue
        first = g[g.new].iloc[0]
        hist = g[(g.t < first.t) & ~g.new]
        if len(hist):
            share.append(float((hist.kat == first.kat).mean()))
            expected.append(float(base[first.kat]))
    assert len(share) >= 15
    assert np.mean(share) > 2.5 * np.mean(expected)


# the challenge preset scaled down: its rates, period and events per user; 2,000 users; a small catalog
SCALED = {**SCALES["challenge"], "users": 2000, "chunk_users": 1000, "skus": 20_000, "categories": 600,
          "urls": 50_000, "seed": 5}
CHALLENGE_SHARE = {k: v / sum(CHALLENGE_EVENTS.values()) for k, v in CHALLENGE_EVENTS.items()}


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
