"""The evaluation report: `reports/<date>/report.md` + `results.json` + plots (per-task bars, 2-D profile map)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAIN_ORDER = ("gru", "aggregates", "factors", "items", "ensemble", "random")


def _fmt(mean, std=None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _diff(d: dict) -> str:
    lo, hi = d["ci"]
    return f"{d['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _rows(results: dict) -> list[str]:
    main = [r for r in MAIN_ORDER if r in results]
    return main + [r for r in results if r not in main and not r.startswith("ensemble - ")]


def acceptance(summary: dict, probe: str = "mlp") -> list[str]:
    """The issue's acceptance checks, computed from the numbers (never assumed)."""
    res, tasks = summary["results"], list(summary["tasks"])
    lines = []

    def score(rep, task):
        return res.get(rep, {}).get(task, {}).get(probe, {}).get("score_mean")

    def mean(rep):
        return res.get(rep, {}).get("_mean", {}).get(probe)

    if "gru" in res and "random" in res:
        worse = [t for t in tasks if score("gru", t) is None or score("random", t) is None
                 or not score("gru", t) > score("random", t)]
        lines.append(f"GRU beats random on every task: {'yes' if not worse else 'NO (' + ', '.join(worse) + ')'}")
    if "gru" in res and "aggregates" in res:
        g, a = mean("gru"), mean("aggregates")
        lines.append(f"GRU beats aggregates on the mean score: {'yes' if g > a else 'NO'} ({g:.4f} vs {a:.4f})")
    members = [r for r in ("gru", "aggregates", "factors", "items") if r in res]
    if "ensemble" in res and members:
        best = max(members, key=mean)
        e = mean("ensemble")
        lines.append(f"ensemble >= best member ({best}) on the mean score: {'yes' if e >= mean(best) else 'NO'} "
                     f"({e:.4f} vs {mean(best):.4f})")
    return lines


def render_markdown(summary: dict) -> str:
    res, probes = summary["results"], summary["probes"]
    main = probes[0]
    out = [
        f"# ubp evaluation report ({summary['as_of']})",
        "",
        "RecSys Challenge 2025 protocol: profiles built at the as-of in an evaluation namespace "
        f"(`{summary['namespace']}`), targets from the {summary['window_days']} days after it; probes trained on "
        f"{1 - summary['probe_config']['test_fraction']:.0%} of the users and scored on the rest; "
        f"seeds {summary['seeds']} (mean ± std over seeds; the seed changes the user split and the probe init). "
        f"Main probe: `{main}` (the challenge's MLP shape, hidden {summary['probe_config']['hidden']}, "
        f"{summary['probe_config']['epochs']} epochs, best epoch counts)"
        + (f"; also `{', '.join(probes[1:])}` (logistic regression)." if len(probes) > 1 else "."),
        f"Population: {summary['rows']['population']} users with events before the as-of. "
        f"Run time {summary['seconds']} s.",
        "",
        "## Members",
        "",
        "| member | version | users | columns | filled with mean |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary["members"].items():
        out.append(f"| {name} | `{m['version']}` | {m['users']} | {m['columns']} | {m['filled']} |")
    out += ["", "## Tasks", "", "| task | kind | users | positive rate | targets (scorable) |", "|---|---|---|---|---|"]
    for t, info in summary["tasks"].items():
        tg = f"{info['targets']} ({info['scorable_labels']})" if "targets" in info else "-"
        out.append(f"| {t} | {info['kind']} | {info['users']} | {info['positive_rate']:.3f} | {tg} |")
    out += ["", "## Mean score over tasks", "", "| profile | " + " | ".join(probes) + " |",
            "|---|" + "---|" * len(probes)]
    for r in _rows(res):
        out.append(f"| {r} | " + " | ".join(_fmt(res[r].get("_mean", {}).get(p)) for p in probes) + " |")
    out += ["", "Acceptance (computed from the numbers above, main probe):", ""]
    out += [f"- {line}" for line in acceptance(summary, main)]
    for t in summary["tasks"]:
        out += ["", f"## {t}", "", "| profile | AUROC | novelty | diversity | score |"
                + "".join(f" {p} score |" for p in probes[1:]), "|---|---|---|---|---|" + "---|" * len(probes[1:])]
        for r in _rows(res):
            m = res[r].get(t, {}).get(main)
            if m is None:
                continue
            cells = [_fmt(m[f"{k}_mean"], m[f"{k}_std"]) for k in ("auroc", "novelty", "diversity", "score")]
            extra = [_fmt(res[r][t][p]["score_mean"], res[r][t][p]["score_std"]) for p in probes[1:] if p in res[r][t]]
            out.append(f"| {r} | " + " | ".join(cells + extra) + " |")
    if summary.get("comparisons"):
        tasks = list(summary["tasks"])
        out += ["", "## Paired comparisons (main probe)", "",
                f"Score of a minus score of b on the same test users, mean over seeds; 95% interval of a paired "
                f"per-user bootstrap ({summary.get('n_boot', 200)} draws). An interval above 0: a is better.", "",
                "| a | b | mean over tasks | " + " | ".join(tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
        for c in summary["comparisons"]:
            cells = [_diff(c["tasks"][t]) if t in c["tasks"] else "-" for t in tasks]
            out.append(f"| {c['a']} | {c['b']} | {_diff(c['mean'])} | " + " | ".join(cells) + " |")
    health = {k: v["latent_health"] for k, v in (summary.get("build_steps") or {}).items()
              if isinstance(v, dict) and v.get("latent_health")}
    if health:
        out += ["", "## Latent health (raw GRU latents of the training users)", "",
                "| model | users | saturated share (abs > 0.95) | median per-dim std | PC1 share | one-sign dims | "
                "served dims |", "|---|---|---|---|---|---|---|"]
        for step, h in health.items():
            r = h["raw"]
            out.append(f"| {step} | {r['users']} | {r['saturated_share']:.3f} | {r['median_dim_std']:.3f} | "
                       f"{r['pc1_share']:.3f} | {r['one_sign_dims']:.3f} | {h.get('served_dim', '-')} |")
    abl = [r for r in res if r.startswith("ensemble - ")]
    if abl and "ensemble" in res:
        base = res["ensemble"]["_mean"][main]
        out += ["", "## Member ablation (main probe)", "", "| profile | mean score | change vs ensemble |"
                + "".join(f" {t} |" for t in summary["tasks"]), "|---|---|---|" + "---|" * len(summary["tasks"])]
        for r in ["ensemble", *abl]:
            m = res[r]["_mean"][main]
            per = [_fmt(res[r].get(t, {}).get(main, {}).get("score_mean")) for t in summary["tasks"]]
            out.append(f"| {r} | {m:.4f} | {m - base:+.4f} | " + " | ".join(per) + " |")
    out += ["", "## Plots", "", "![per-task scores](scores.png)", ""]
    for file in summary.get("projection") or []:
        out += [f"![{file[11:-4]} profiles coloured by planted segment]({file})", ""]
    return "\n".join(out) + "\n"


def plot_scores(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res, main = summary["results"], summary["probes"][0]
    tasks, reps = list(summary["tasks"]), _rows(res)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 4))
    w = 0.8 / max(len(reps), 1)
    for i, r in enumerate(reps):
        means = [res[r].get(t, {}).get(main, {}).get("score_mean") or 0 for t in tasks]
        stds = [res[r].get(t, {}).get(main, {}).get("score_std") or 0 for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * w, means, w, yerr=stds, label=r, capsize=2)
    ax.set_xticks(np.arange(len(tasks)) + w * (len(reps) - 1) / 2, tasks)
    ax.set_ylabel(f"score ({main} probe, mean ± std over seeds)")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_projection(x: np.ndarray, labels: np.ndarray, title: str, path: Path, max_points: int = 5000) -> None:
    """2-D PCA of the profiles, coloured by planted segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.random.default_rng(0).permutation(len(x))[:max_points]
    xs = x[idx].astype(np.float64)
    xs = xs - xs.mean(axis=0)
    _, _, vt = np.linalg.svd(xs, full_matrices=False)
    xy = xs @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[idx], s=4, cmap="tab10", alpha=0.7)
    ax.legend(*sc.legend_elements(), title="segment", fontsize=7, loc="best")
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(summary: dict, out_dir: Path, pop=None, reps: dict | None = None, segments=None) -> Path:
    """Write report.md, results.json and the plots into `out_dir`; returns the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_scores(summary, out_dir / "scores.png")
    summary["projection"] = []
    if segments is not None and reps and pop is not None:
        seg = dict(zip(segments["client_id"].astype(np.int64), segments["segment"].astype(int), strict=True))
        labels = np.array([seg.get(int(c), -1) for c in pop])
        known = labels >= 0
        for name in [n for n in ("gru", "ensemble", "random") if n in reps]:
            if known.sum() > 10:
                file = f"projection_{name}.png"
                plot_projection(reps[name][known], labels[known], f"{name} profiles, PCA", out_dir / file)
                summary["projection"].append(file)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    path = out_dir / "report.md"
    path.write_text(render_markdown(summary))
    return path
