"""Stage `evaluate`: the RecSys Challenge 2025 protocol (the ensemble itself is `ubp.stages.ensemble`).

`evaluate` proves (or disproves) that profiles are universal: it rebuilds every profile at an earlier as-of in an
evaluation namespace (`<lakehouse>/_eval/<as_of>/`, so serving tables are untouched and nothing after the as-of
leaks in), takes targets from the 14 days after it, trains the challenge's downstream probes per task on a user
split, several seeds, and writes a report.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.stages.ensemble import _read_bronze, _spark_ts, _utc, compute_stats, compute_text, ensemble

log = get_logger(__name__)


# ------------------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------------------
def eval_namespace(as_of: datetime) -> str:
    return f"_eval/{_utc(as_of).strftime('%Y-%m-%dT%H%M%S')}"


def gru_profile_name(member: str) -> str:
    """Evaluation / ensemble name of a user-model member's profile: `gru` for the served member, `gru_<member>` for
    any other (the transformer members `next_sku` / `next_url` too: the prefix names the user-model family)."""
    from ubp.registry import PRIMARY_USER_MEMBER

    return "gru" if member == PRIMARY_USER_MEMBER else f"gru_{member}"


def _build_profiles(es: Settings, as_of: datetime, rebuild: bool, members: tuple[str, ...],
                    max_epochs: int | None, items: bool = True, ensemble_step: bool = True,
                    built: tuple[str, ...] = ()) -> dict:
    """Run the upstream stages in the evaluation namespace. Steps done before (recorded) are skipped.

    `max_epochs` caps both the user models and the item model (None: their members'/presets' defaults). Each
    GRU-AE member in `members` is trained (promoted in the namespace) and embedded; `items` / `ensemble_step`
    skip the item model and the ensemble when the evaluation does not score them. `built`: the opt-in members the
    ensemble stage computes (`stats`, `text`) to build for the as-of, as the ensemble would with them enabled."""
    from ubp.stages.aggregates import aggregates
    from ubp.stages.embed_users import embed_users
    from ubp.stages.item_content import item_content
    from ubp.stages.item_vectors import item_vectors
    from ubp.stages.sequences import sequences
    from ubp.stages.train_item_model import train_item_model
    from ubp.stages.train_user_model import train_user_model

    marker = es.root / "_eval_steps.json"
    done: dict = json.loads(marker.read_text()) if marker.exists() and not rebuild else {}

    def step(name: str, fn, **kwargs):
        if name in done:
            return done[name]
        log.info("evaluation: %s", name)
        t0 = time.time()
        try:
            result = fn(es, **kwargs)
        except (UbpError, ImportError) as exc:  # a stage that cannot run here: its member is left out
            log.warning("evaluation: step %s failed (%s): its member is skipped", name, exc)
            return None
        done[name] = {"seconds": round(time.time() - t0, 1),
                      **{k: v for k, v in (result or {}).items()
                         if k in ("version", "rows", "metrics", "latent_health")}}
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(done, indent=1, default=str))
        return done[name]

    step("sequences", sequences, as_of=as_of)
    step("aggregates", aggregates, as_of=as_of)
    for member in members:
        suffix = "" if gru_profile_name(member) == "gru" else f"_{member}"
        trained = step(f"train_user_model{suffix}", train_user_model, member=member,
                       max_epochs=max_epochs, seed=0, promote="always")
        if trained:
            step(f"embed_users{suffix}", embed_users, model_version=trained.get("version"),
                 member=member)
    content = (items or "text" in built) and step("item_content", item_content)
    if items and content:
        item = step("train_item_model", train_item_model, max_epochs=max_epochs)
        if item:
            step("item_vectors", item_vectors, model_version=item.get("version"))
    if "stats" in built:
        step("stats", compute_stats, as_of=as_of)
    if "text" in built and content:
        step("text", compute_text, as_of=as_of)
    if ensemble_step:
        step("ensemble", ensemble, as_of=as_of)
    return done


def _truth_segments(settings: Settings, events, truth_dir: Path | None):
    """(client_id -> segment) from the demo's `<raw>/_truth/users.parquet`, found next to the raw files."""
    import pandas as pd

    candidates = []
    if truth_dir is not None:
        candidates.append(Path(truth_dir))
    else:
        row = events.select("source_file").limit(1).collect()
        if row:
            p = Path(str(row[0][0]).replace("file://", "").replace("file:", ""))
            candidates += [q / "_truth" for q in p.parents]
    for c in candidates:
        f = c / "users.parquet"
        if f.exists():
            df = pd.read_parquet(f)
            if {"client_id", "segment"} <= set(df.columns):
                return df[["client_id", "segment"]]
    return None


def evaluate(
    settings: Settings,
    profiles: list[str] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    as_of: datetime | None = None,
    window_days: int = 14,
    build: bool = True,
    rebuild: bool = False,
    members: tuple[str, ...] | None = None,
    max_epochs: int | None = None,
    probes: tuple[str, ...] = ("mlp", "logreg"),
    ablation: bool = True,
    max_users: int | None = 200_000,
    test_fraction: float = 0.2,
    probe_hidden: int = 256,
    probe_epochs: int = 3,
    probe_threads: int = 1,
    report_dir: Path | None = None,
    truth_dir: Path | None = None,
    compare: tuple[tuple[str, str], ...] | None = None,
    n_boot: int = 200,
) -> dict:
    """The challenge protocol on the lakehouse; returns the results and writes `reports/<date>/report.md`.

    profiles: which representations to score (member names gru/aggregates/factors, the recipe's opt-in members
    stats/items/text, `gru_<member>` for the other GRU-AE members, "ensemble", or the table names user_profiles /
    user_profiles_ensemble); None = the recipe's enabled members and the ensemble. The random baseline is always
    scored. members: the GRU-AE members built (default `DEFAULT_MEMBERS`).
    compare: (a, b) profile pairs to compare on the same test users with a paired per-user bootstrap (`n_boot`
    draws; default: every GRU profile vs aggregates, vs the older `gru_small` when scored, the ensemble vs each
    member and vs itself without each member: the ablation's interval).
    Scale limit: labels and the profiles of at most `max_users` sampled users are held in memory for the probes.
    """
    import numpy as np

    from ubp.metrics import scorable_labels, score_task
    from ubp.models.members import DEFAULT_MEMBERS
    from ubp.models.probe import ProbeConfig, fit_probe
    from ubp.report import write_report
    from ubp.spark_jobs import targets as T
    from ubp.spark_jobs.ensemble import (
        MEMBERS,
        align,
        combine,
        load_members,
        load_profile_member,
        load_recipe,
    )

    t_start = time.time()
    spark, events, products = _read_bronze(settings)
    as_of = _utc(as_of) or _utc(T.default_as_of(events, window_days))
    es = settings.with_namespace(eval_namespace(as_of))
    log.info("evaluation as_of %s, namespace %s", as_of.isoformat(), es.root)
    members = tuple(members or DEFAULT_MEMBERS)
    gru_names = [gru_profile_name(m) for m in members]
    wanted = {"user_profiles": "gru", "user_profiles_ensemble": "ensemble"}
    names = [wanted.get(p, p) for p in profiles] if profiles else [*MEMBERS, *gru_names[1:], "ensemble"]
    # the recipe's opt-in members (stats, items, text), scored when named; the opt-in user models are `gru_<member>`
    opt_in = {n for n in load_recipe().members if n not in MEMBERS and not n.startswith("gru_")}
    known = {*MEMBERS, *opt_in, "ensemble", *gru_names}
    unknown = {n for n in names if n not in known and not n.startswith("gru_")}
    if unknown:
        raise UbpError(f"unknown profiles {sorted(unknown)}; choose from {sorted(known | set(wanted))}")
    steps = (_build_profiles(es, as_of, rebuild, members, max_epochs, items="items" in names or "ensemble" in names,
                             ensemble_step="ensemble" in names,
                             built=tuple(n for n in ("stats", "text") if n in names)) if build else {})
    at = _spark_ts(as_of)

    # labels of every task from three small collects; population = users with any event before as_of
    labels = T.collect_labels(events, products, at, window_days)
    pop = labels["conversion"]["client_id"]
    if len(pop) == 0:
        raise UbpError(f"no events before as_of {as_of.isoformat()}")
    if max_users and len(pop) > max_users:
        pop = np.sort(np.random.default_rng(0).choice(pop, max_users, replace=False))

    # representations
    extra = [n for n in names if n.startswith("gru_") or n in opt_in]
    loaded = load_members(es, as_of=as_of, names=tuple(dict.fromkeys([*MEMBERS, *extra])))
    members_in = [m for m in loaded if m.name in MEMBERS]  # the ensemble's default set, for the ablation
    reps: dict[str, np.ndarray] = {}
    fill: dict[str, int] = {}
    for m in loaded:
        if m.name in names:
            _, x, layout = combine([m], client_ids=pop)
            reps[m.name], fill[m.name] = x.astype(np.float32), layout[m.name]["filled"]
    if "ensemble" in names:
        try:
            # the written table, as served (each member already normalised): not re-normalised here
            ens = load_profile_member(es, "user_profiles_ensemble", "ensemble", as_of=as_of)
            reps["ensemble"], fill["ensemble"] = align(ens, pop)
        except (FileNotFoundError, LookupError) as exc:
            if not members_in:
                raise UbpError(f"no profiles to evaluate at {as_of.isoformat()}: {exc}") from exc
            log.warning("no ensemble table (%s): combining the members in memory", exc)
            _, x, _ = combine(members_in, client_ids=pop)
            reps["ensemble"], fill["ensemble"] = x.astype(np.float32), 0
    ablations: dict[str, np.ndarray] = {}
    if ablation and "ensemble" in names and len(members_in) > 1:
        for m in members_in:
            rest = [o for o in members_in if o.name != m.name]
            ablations[f"ensemble - {m.name}"] = combine(rest, client_ids=pop)[1].astype(np.float32)
    if not reps:
        raise UbpError("none of the requested profiles exist in the evaluation namespace")
    dim = max(x.shape[1] for x in reps.values())
    reps["random"] = np.random.default_rng(12345).standard_normal((len(pop), dim)).astype(np.float32)

    # targets, aligned to the population's rows
    tasks: dict[str, dict] = {}
    for task, spec in labels.items():
        rows = np.searchsorted(pop, spec["client_id"])
        rows = np.clip(rows, 0, len(pop) - 1)
        keep = pop[rows] == spec["client_id"]
        tasks[task] = {"kind": spec["kind"], "rows": rows[keep], "y": spec["y"][keep],
                       "popularity": None if spec["popularity"] is None else np.asarray(spec["popularity"], float)}
        if spec["kind"] == "multilabel":
            tasks[task]["targets"] = len(spec["targets"])
    for task in T.TASKS:
        if task not in tasks:
            log.warning("task %s: no targets in the window; skipped", task)

    # probes; the main probe's test logits are kept per (profile, task, seed) for the paired comparisons
    test_logits: dict[tuple[str, str, int], np.ndarray] = {}
    test_rows: dict[tuple[str, int], np.ndarray] = {}

    def run_probes(x_all: np.ndarray, probe_names: tuple[str, ...], name: str = "") -> dict:
        out: dict = {}
        for task, spec in tasks.items():
            x, y = x_all[spec["rows"]], spec["y"]
            pop_ = spec["popularity"]

            def score_fn(yt, logits, kind=spec["kind"], pop_=pop_):
                return score_task(kind, yt, logits, pop_)

            for probe in probe_names:
                per_seed = []
                for seed in seeds:
                    perm = np.random.default_rng(seed).permutation(len(y))
                    n_test = max(1, int(round(test_fraction * len(y))))
                    te, tr = perm[:n_test], perm[n_test:]
                    cfg = ProbeConfig(hidden=probe_hidden, epochs=probe_epochs, linear=(probe == "logreg"), seed=seed)
                    r = fit_probe(x[tr], y[tr], x[te], y[te], score_fn, cfg)
                    r.pop("epochs")
                    logits = r.pop("logits")
                    if probe == probe_names[0]:
                        test_logits[(name, task, seed)] = logits
                        test_rows[(task, seed)] = te
                    per_seed.append(r)
                out.setdefault(task, {})[probe] = _summarise(per_seed)
        return out

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(probe_threads)  # tiny models: one thread is faster than two fighting Spark for 2 cores
    results: dict[str, dict] = {}
    try:
        _score_all(reps, ablations, probes, run_probes, results)
    finally:
        torch.set_num_threads(threads)
    for rep in results.values():
        for probe in probes:
            s = [rep[t][probe]["score_mean"] for t in tasks if probe in rep.get(t, {})]
            if s:
                rep.setdefault("_mean", {})[probe] = float(np.mean(s))
    if compare is None:
        grus = [n for n in reps if n == "gru" or n.startswith("gru_")]
        compare = tuple([(g, "aggregates") for g in grus if "aggregates" in reps]
                        + [(g, "gru_small") for g in grus if g != "gru_small" and "gru_small" in reps]
                        + [("ensemble", m.name) for m in members_in if "ensemble" in reps and m.name in reps]
                        # the ablation with intervals: > 0 = the member adds to the ensemble
                        + [("ensemble", f"ensemble - {m.name}") for m in members_in
                           if "ensemble" in reps and f"ensemble - {m.name}" in ablations])
    comparisons = _paired_comparisons(compare, tasks, seeds, test_logits, test_rows, n_boot)

    task_info = {
        t: {"kind": s["kind"], "users": int(len(s["rows"])),
            "positive_rate": float(np.mean(s["y"])) if s["kind"] == "binary" else float(s["y"].any(axis=1).mean()),
            **({"targets": s["targets"], "scorable_labels": scorable_labels(s["y"])} if s["kind"] == "multilabel"
               else {})}
        for t, s in tasks.items()
    }
    summary = {
        "stage": "evaluate",
        "rows": {"population": int(len(pop))},
        "as_of": as_of.isoformat(),
        "window_days": window_days,
        "namespace": str(es.root),
        "seeds": list(seeds),
        "probes": list(probes),
        "probe_config": {"hidden": probe_hidden, "epochs": probe_epochs, "test_fraction": test_fraction},
        "members": {m.name: {"version": m.version, "users": int(len(m.client_ids)), "columns": int(m.values.shape[1]),
                             "filled": fill.get(m.name)} for m in loaded},
        "tasks": task_info,
        "results": results,
        "comparisons": comparisons,
        "n_boot": n_boot,
        "members_built": list(members),
        "build_steps": steps,
        "seconds": round(time.time() - t_start, 1),
    }
    segments = _truth_segments(settings, events, truth_dir)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out_dir = Path(report_dir) if report_dir is not None else Path("reports") / date
    summary["report"] = str(write_report(summary, out_dir, pop=pop, reps=reps, segments=segments))
    return summary


def _score_all(reps: dict, ablations: dict, probes: tuple[str, ...], run_probes, results: dict) -> None:
    from tqdm import tqdm

    jobs = [(n, x, probes) for n, x in reps.items()] + [(n, x, probes[:1]) for n, x in ablations.items()]
    for name, x, probe_names in tqdm(jobs, desc="probes", unit="profile"):
        t0 = time.time()
        results[name] = run_probes(x, probe_names, name)
        log.info("scored %s in %.1fs", name, time.time() - t0)


def _paired_comparisons(pairs, tasks: dict, seeds, test_logits: dict, test_rows: dict, n_boot: int) -> list[dict]:
    """Per pair (a, b): the main probe's score difference a - b per task and on the mean over tasks, averaged over
    seeds, with a 95% paired per-user bootstrap interval (both profiles resampled on the same test users)."""
    import numpy as np

    from ubp.metrics import interval, paired_bootstrap, score_task

    out = []
    for a, b in pairs:
        if not all((n, t, s) in test_logits for n in (a, b) for t in tasks for s in seeds):
            continue
        per_task, draws_all = {}, []
        for task, spec in tasks.items():
            kind, pop_ = spec["kind"], spec["popularity"]
            diffs, draws = [], []
            for seed in seeds:
                y = spec["y"][test_rows[(task, seed)]]
                la, lb = test_logits[(a, task, seed)], test_logits[(b, task, seed)]
                diffs.append(score_task(kind, y, la, pop_)["score"] - score_task(kind, y, lb, pop_)["score"])
                draws.append(paired_bootstrap(kind, y, la, lb, pop_, n_boot=n_boot, seed=seed))
            d = np.nanmean(np.stack(draws), axis=0)  # [n_boot]: mean over seeds per draw
            lo, hi = interval(d)
            per_task[task] = {"diff": float(np.mean(diffs)), "ci": [lo, hi]}
            draws_all.append(d)
        mean_draws = np.nanmean(np.stack(draws_all), axis=0)
        lo, hi = interval(mean_draws)
        out.append({"a": a, "b": b, "mean": {"diff": float(np.mean([v["diff"] for v in per_task.values()])),
                                              "ci": [lo, hi]}, "tasks": per_task})
        log.info("%s vs %s: mean score diff %+.4f [%+.4f, %+.4f]", a, b, out[-1]["mean"]["diff"], lo, hi)
    return out


def _summarise(per_seed: list[dict]) -> dict:
    import numpy as np

    out: dict = {"seeds": per_seed}
    for key in ("auroc", "novelty", "diversity", "score"):
        vals = [r[key] for r in per_seed if r.get(key) is not None and not np.isnan(r[key])]
        out[f"{key}_mean"] = float(np.mean(vals)) if vals else None
        out[f"{key}_std"] = float(np.std(vals)) if vals else None
    out["best_epochs"] = [r["best_epoch"] for r in per_seed]
    return out
