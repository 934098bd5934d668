"""ubp's profiles through the challenge organizers' own downstream pipeline (Synerise/recsys2025), next to their
aggregated-features baseline.

Their repository is used as it is, in its own Python environment (their requirements.txt); this script only calls
its modules as a user would: `data_utils.split_data`, `baseline.aggregated_features_baseline.create_embeddings`,
`validator.run`, `training_pipeline.train` (CPU, their fixed model and settings, official weighted score per task).

Steps (each one skipped when its output exists, so a broken run resumes):
1. A challenge data directory from a ubp demo (`ubp demo-data` layout): one parquet per event type, properties,
   `input/relevant_clients.npy` (every client with an event) and `target/` (the 100 categories / skus bought most
   in the train-target window and their buy counts as popularity; active clients = a buy before that window).
2. Their `split_data` (input = events before the train-target window; two 14-day target windows).
3. ubp on their `input/` only (ingest -> sequences -> aggregates -> GRU members -> embed -> ensemble, as-of the
   train-target start), exported with `ubp export --clients relevant_clients.npy` and checked by their validator.
4. Their baseline's embeddings from the same input.
5. Their training pipeline for every embedding set. It sets no seed but is deterministic (torch's fixed default
   seed): two runs give the same scores, so the spread worth measuring is between datasets (`--also`).

Usage:
    python benchmarks/organizers_pipeline.py --recsys2025 CHECKOUT --org-python ENV/bin/python --work DIR \
        --raw DEMO_RAW [--members day_event] [--ensemble-members aggregates,factors] [--max-epochs N] \
        [--also OTHER_WORK ...] [--with-table docs/evaluation/organizers_table.json] \
        [--report docs/evaluation/organizers_table.md] [--no-train]
Set-up of their environment and the current table: docs/evaluation/organizers.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.stats import t as t_dist

EVENT_TYPES = ("product_buy", "add_to_cart", "remove_from_cart", "page_visit", "search_query")
TASKS = ("churn", "propensity_category", "propensity_sku")
DAYS_IN_TARGET = 14  # the organizers' data_utils.constants.DAYS_IN_TARGET
UBP = [str(Path(sys.executable).parent / "ubp")]


def log(msg: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {msg}", flush=True)


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, log_to: Path | None = None) -> None:
    """Run a command; its output goes to `log_to` (appended) so a failure names the file to read."""
    log("$ " + " ".join(str(c) for c in cmd))
    t0 = time.monotonic()
    with open(log_to or os.devnull, "a") as fh:
        rc = subprocess.call([str(c) for c in cmd], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"command failed (rc {rc}), see {log_to}: {' '.join(str(c) for c in cmd)}")
    log(f"  done in {time.monotonic() - t0:.0f} s")


def read_events(raw: Path, stem: str) -> pa.Table:
    """One event type of a ubp demo (a folder of parts or one file) as one table."""
    src = raw / stem if (raw / stem).is_dir() else raw / f"{stem}.parquet"
    return pq.read_table(src)


def target_window_start(last_buy: datetime) -> datetime:
    """The train-target window's first moment, as their `DataSplitter._compute_target_start_dates` computes it."""
    start = last_buy - timedelta(days=2 * DAYS_IN_TARGET - 1)
    return start.replace(hour=0, minute=0, second=0, microsecond=0)


def build_challenge_dir(raw: Path, out: Path) -> datetime:
    """Write the organizers' unsplit data layout from a demo; return the train-target start (ubp's as-of)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "input").mkdir(exist_ok=True)
    (out / "target").mkdir(exist_ok=True)
    clients, tables = [], {}
    for stem in EVENT_TYPES:
        tables[stem] = read_events(raw, stem)
        pq.write_table(tables[stem], out / f"{stem}.parquet")
        clients.append(np.unique(tables[stem].column("client_id").to_numpy()))
    props = pq.read_table(raw / "product_properties.parquet")
    pq.write_table(props, out / "product_properties.parquet")
    relevant = np.unique(np.concatenate(clients)).astype(np.int64)
    np.save(out / "input" / "relevant_clients.npy", relevant)

    buys = tables["product_buy"]
    ts = pc.strptime(buys.column("timestamp"), format="%Y-%m-%d %H:%M:%S", unit="s")
    last = datetime.fromtimestamp(pc.max(ts).cast(pa.int64()).as_py(), UTC).replace(tzinfo=None)
    start = target_window_start(last)
    start_s = int((start - datetime(1970, 1, 1)).total_seconds())
    ts_s = ts.cast(pa.int64()).to_numpy()
    in_target = (ts_s >= start_s) & (ts_s < start_s + DAYS_IN_TARGET * 86400)
    sku = buys.column("sku").to_numpy()
    sku_cat = dict(zip(props.column("sku").to_numpy(), props.column("category").to_numpy(), strict=True))
    for name, values in (("sku", sku[in_target]), ("category", np.array([sku_cat[s] for s in sku[in_target]]))):
        vals, counts = np.unique(values, return_counts=True)
        top = np.lexsort((vals, -counts))[:100]
        np.save(out / "target" / f"propensity_{name}.npy", vals[top].astype(np.int64))
        np.save(out / "target" / f"popularity_propensity_{name}.npy", counts[top].astype(np.float64))
    active = np.unique(buys.column("client_id").to_numpy()[ts_s < start_s]).astype(np.int64)
    np.save(out / "target" / "active_clients.npy", active)
    log(f"challenge dir: {len(relevant)} relevant clients, {len(active)} active, train target from {start}")
    return start


def ubp_raw_dir(challenge: Path, raw: Path, out: Path) -> Path:
    """ubp's raw layout over their split input: the input events, the properties and the demo's product texts."""
    out.mkdir(parents=True, exist_ok=True)
    links = {f"{s}.parquet": challenge / "input" / f"{s}.parquet" for s in EVENT_TYPES}
    links["product_properties.parquet"] = challenge / "product_properties.parquet"
    if (raw / "product_text.parquet").exists():
        links["product_text.parquet"] = raw / "product_text.parquet"
    for name, target in links.items():
        if not (out / name).exists():
            (out / name).symlink_to(target.resolve())
    return out


def build_profiles(lakehouse: Path, raw: Path, as_of: datetime, members: list[str], max_epochs: int | None,
                   ensemble_members: list[str], log_to: Path) -> None:
    """ubp's stages on the split input only."""
    env = dict(os.environ, UBP_LAKEHOUSE=str(lakehouse))
    iso = as_of.strftime("%Y-%m-%dT%H:%M:%S")
    run(UBP + ["ingest", "--raw", raw], env=env, log_to=log_to)
    run(UBP + ["sequences", "--as-of", iso], env=env, log_to=log_to)
    run(UBP + ["aggregates", "--as-of", iso], env=env, log_to=log_to)
    for member in members:
        epochs = ["--epochs", str(max_epochs)] if max_epochs else []
        run(UBP + ["train-user-model", "--member", member, *epochs], env=env, log_to=log_to)
        run(UBP + ["embed-users", "--member", member], env=env, log_to=log_to)
    chosen = [a for m in ensemble_members for a in ("--member", m)]  # empty: the recipe's members
    run(UBP + ["ensemble", "--as-of", iso, *chosen], env=env, log_to=log_to)


def export_table(lakehouse: Path, table: str, clients: Path, out: Path, log_to: Path) -> None:
    env = dict(os.environ, UBP_LAKEHOUSE=str(lakehouse))
    run(UBP + ["export", "--table", table, "--clients", clients, "--out", out], env=env, log_to=log_to)


def _place(dst: np.ndarray, pos: dict[int, int], ids: np.ndarray, x: np.ndarray) -> None:
    """Copy the rows of `x` whose client id is wanted into `dst` at that client's position (others are dropped)."""
    rows = np.array([pos.get(int(c), -1) for c in ids], dtype=np.int64)
    keep = rows >= 0
    dst[rows[keep]] = x[keep]


def export_aggregates(lakehouse: Path, clients: Path, out: Path) -> None:
    """`user_aggregates` as a challenge entry (not a profile table, so not `ubp export`): sign * log1p(|x|), zero
    rows for clients without aggregates."""
    from ubp.config import Settings
    from ubp.reader import iter_batches, table_version

    path = Settings(lakehouse=lakehouse).table_path("user_aggregates")
    wanted = np.load(clients)
    pos = {int(c): i for i, c in enumerate(wanted)}
    emb = None
    for rb in iter_batches(path, table_version(path), columns=["client_id", "features"]):
        feats = np.asarray(rb.column("features").flatten(), dtype=np.float64).reshape(rb.num_rows, -1)
        if emb is None:
            emb = np.zeros((len(wanted), feats.shape[1]), dtype=np.float64)
        _place(emb, pos, rb.column("client_id").to_numpy(), feats)
    emb = np.sign(emb) * np.log1p(np.abs(emb))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "client_ids.npy", wanted.astype(np.int64))
    np.save(out / "embeddings.npy", emb.astype(np.float16))


def train_scores(org_python: str, repo: Path, data: Path, emb: Path, score_dir: Path, log_to: Path,
                 tasks: tuple[str, ...] = TASKS, threads: int = 1) -> dict:
    """One run of their training pipeline on CPU; the best-epoch official score per task."""
    if not (score_dir / "scores.json").exists():
        score_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))  # runs share the cores instead of oversubscribing
        run([org_python, "-m", "training_pipeline.train", "--data-dir", data, "--embeddings-dir", emb,
             "--tasks", *tasks, "--log-name", score_dir.name, "--accelerator", "cpu", "--devices", "auto",
             "--num-workers", "0", "--disable-relevant-clients-check", "--score-dir", score_dir],
            cwd=repo, env=env, log_to=log_to)
    scores = json.loads((score_dir / "scores.json").read_text())
    return {t: float(scores[t]) for t in tasks}


def with_every_relevant_client(src: Path, clients: Path, out: Path) -> None:
    """A set extended to every relevant client with zero rows: the population a valid submission is scored on."""
    ids, emb = np.load(src / "client_ids.npy"), np.load(src / "embeddings.npy")
    wanted = np.load(clients)
    full = np.zeros((len(wanted), emb.shape[1]), dtype=np.float16)
    _place(full, {int(c): i for i, c in enumerate(wanted)}, ids, emb)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "client_ids.npy", wanted.astype(np.int64))
    np.save(out / "embeddings.npy", full)


def _score(r: dict, task: str) -> float | None:
    if task == "mean":
        return float(np.mean([r[t] for t in TASKS])) if all(t in r for t in TASKS) else None
    return r.get(task)


def summarise(runs: dict[str, dict[str, dict]], reference: str) -> list[str]:
    """Markdown rows, one per embedding set: its score per task averaged over datasets, and the difference to
    `reference` paired by dataset with a 95% t interval over datasets (their pipeline is deterministic for given
    data, so the spread that matters is between datasets)."""
    lines = ["| embeddings | datasets | " + " | ".join(TASKS) + " | mean of the 3 |", "|---" * (len(TASKS) + 3) + "|"]
    for name, by_data in runs.items():
        cells = []
        for t in (*TASKS, "mean"):
            own = {d: _score(r, t) for d, r in by_data.items() if _score(r, t) is not None}
            if not own:
                cells.append("")
                continue
            cell = f"{np.mean(list(own.values())):.4f}"
            ref = {d: _score(r, t) for d, r in runs[reference].items() if _score(r, t) is not None}
            diffs = np.array([own[d] - ref[d] for d in own if d in ref])
            if name != reference and len(diffs):
                cell += f" ({diffs.mean():+.4f}"
                if len(diffs) > 1:
                    half = t_dist.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
                    cell += f" [{diffs.mean() - half:+.4f}, {diffs.mean() + half:+.4f}]"
                cell += ")"
            cells.append(cell)
        lines.append(f"| {name} | {len(by_data)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recsys2025", type=Path, required=True, help="checkout of Synerise/recsys2025")
    ap.add_argument("--org-python", required=True, help="python of an env with their requirements.txt")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--raw", type=Path, required=True, help="a ubp demo-data folder (>= 6,000 users)")
    ap.add_argument("--reps", type=int, default=1, help="runs per set (their pipeline is deterministic: 1 is enough)")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    ap.add_argument("--members", default="day_event,week_all,all_fields", help="GRU-AE members to train ('' none)")
    ap.add_argument("--ensemble-members", default="", help="ubp ensemble --member list ('' = the recipe's)")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--report", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--sets", default="", help="comma list of embedding sets to train (default: all)")
    ap.add_argument("--no-train", action="store_true", help="only tabulate the runs already in WORK/scores")
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="other datasets' WORK dirs to tabulate with")
    ap.add_argument("--with-table", type=Path, default=None,
                    help="a previous report's .json: its datasets are tabulated too (their WORK dirs need not exist)")
    args = ap.parse_args()
    work, repo = args.work.resolve(), args.recsys2025.resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    data, emb, lakehouse = work / "challenge", work / "embeddings", work / "lakehouse"
    timings: dict[str, float] = {}

    t0 = time.monotonic()
    if not (data / "target" / "active_clients.npy").exists():
        as_of = build_challenge_dir(args.raw.resolve(), data)
        (work / "as_of.txt").write_text(as_of.isoformat())
    as_of = datetime.fromisoformat((work / "as_of.txt").read_text())
    if not (data / "target" / "validation_target.parquet").exists():
        run([args.org_python, "-m", "data_utils.split_data", "--challenge-data-dir", data], cwd=repo,
            log_to=logs / "split.log")
    timings["challenge dir + their split_data"] = time.monotonic() - t0
    clients = data / "input" / "relevant_clients.npy"

    t0 = time.monotonic()
    if not (emb / "baseline" / "embeddings.npy").exists():
        run([args.org_python, "-m", "baseline.aggregated_features_baseline.create_embeddings", "--data-dir", data,
             "--embeddings-dir", emb / "baseline"], cwd=repo, log_to=logs / "baseline.log")
    timings["their baseline embeddings"] = time.monotonic() - t0

    t0 = time.monotonic()
    members = [m for m in args.members.split(",") if m]
    if not (lakehouse / "gold" / "user_profiles_ensemble").exists():
        build_profiles(lakehouse, ubp_raw_dir(data, args.raw.resolve(), work / "ubp_raw"), as_of, members,
                       args.max_epochs, [m for m in args.ensemble_members.split(",") if m], logs / "ubp.log")
    timings["ubp stages"] = time.monotonic() - t0

    # One population for every set: their baseline embeds the clients with input events (a relevant client whose
    # events all fall in the target windows has none), so every set is trained and scored on exactly those; the
    # baseline extended to every relevant client (zero rows) shows what the population alone changes.
    common = work / "common_clients.npy"
    if not common.exists():
        np.save(common, np.load(emb / "baseline" / "client_ids.npy").astype(np.int64))
    if not (emb / "baseline_relevant" / "embeddings.npy").exists():
        with_every_relevant_client(emb / "baseline", clients, emb / "baseline_relevant")
    tables = {"ubp_ensemble": "user_profiles_ensemble", **({"ubp_gru": "user_profiles"} if members else {})}
    for name, table in tables.items():
        if not (emb / name / "embeddings.npy").exists():
            export_table(lakehouse, table, common, emb / name, logs / "export.log")
        entry = work / "entries" / name  # the submission form: every relevant client, checked by their validator
        if not (entry / "embeddings.npy").exists():
            export_table(lakehouse, table, clients, entry, logs / "export.log")
        run([args.org_python, "-m", "validator.run", "--data-dir", data, "--embeddings-dir", entry], cwd=repo,
            log_to=logs / f"validate_{name}.log")
    if not (emb / "ubp_aggregates" / "embeddings.npy").exists():
        export_aggregates(lakehouse, common, emb / "ubp_aggregates")

    if args.no_train:
        return report([work, *args.also], args.report, args.with_table)
    jobs = [(name, r, TASKS if name != "baseline_relevant" else TASKS[1:])
            for r in range(args.reps) for name in ("baseline", *tables, "ubp_aggregates", "baseline_relevant")
            if not (name == "baseline_relevant" and r > 0) and (not args.sets or name in args.sets.split(","))]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        done = pool.map(lambda j: (j[0], train_scores(args.org_python, repo, data, emb / j[0],
                                                      work / "scores" / f"{j[0]}_r{j[1]}",
                                                      logs / f"train_{j[0]}_r{j[1]}.log", j[2])), jobs)
        for name, scores in done:
            log(f"{name}: {scores}")
    timings[f"their training, {len(jobs)} runs, {args.parallel} at a time"] = time.monotonic() - t0
    (work / "timings.json").write_text(json.dumps(timings, indent=1))
    report([work, *args.also], args.report, args.with_table)


def report(works: list[Path], out: Path | None, previous: Path | None = None) -> None:
    """Tabulate every finished run (`<work>/scores/<set>_r<k>/scores.json`) of one or more datasets, plus the
    datasets of a previous report's json (a dataset scored again in `works` replaces its earlier scores)."""
    runs: dict[str, dict[str, dict]] = {"baseline": {}}
    if previous is not None:
        for name, by_data in json.loads(previous.read_text()).items():
            runs.setdefault(name, {}).update(by_data)
    for work in works:
        for f in sorted((work / "scores").glob("*_r*/scores.json")):
            name = f.parent.name.rsplit("_r", 1)[0]
            runs.setdefault(name, {})[work.name] = {k: v for k, v in json.loads(f.read_text()).items() if k in TASKS}
    table = summarise(runs, "baseline")
    print("\n".join(table))
    if out:
        out.write_text("\n".join(table) + "\n")
        (out.with_suffix(".json")).write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
        plot(runs, out.with_suffix(".png"))


def plot(runs: dict[str, dict[str, dict]], out: Path) -> None:
    """Grouped bars per task: each set's mean official score over datasets, one dot per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(runs)
    for i, (name, by_data) in enumerate(runs.items()):
        xs = [k + (i - (len(runs) - 1) / 2) * width for k in range(len(TASKS))]
        vals = [np.array([r[t] for r in by_data.values() if t in r]) for t in TASKS]
        ax.bar(xs, [v.mean() if len(v) else np.nan for v in vals], width, label=name)
        for x, v in zip(xs, vals, strict=True):
            ax.plot([x] * len(v), v, "k.", markersize=4)
    ax.set_xticks(range(len(TASKS)), TASKS)
    ax.set_ylabel("official score (best of 3 epochs)")
    ax.set_ylim(0.6, None)
    ax.set_title("The organizers' training pipeline on 10,000-user demos (dots: datasets)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
