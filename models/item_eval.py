"""Evaluation protocol of the cold-start paper, on product-event sequences.

- Item sequence of a user: product events (add / remove / buy; `sku_raw >= 0`) in time order, consecutive repeats of
  the same sku collapsed (add-then-buy of one item is one step).
- Global temporal split at the 0.9 quantile of all product-event timestamps. Warm items occur before the split;
  cold items never do (catalog items nobody touched before the split are cold too).
- Training users: their pre-split items; 10% of them (seeded) are held out for validation: history = all but the
  last pre-split item, target = the last one (only where it is new to the user).
- Test users: anyone with a post-split item that is new to them; history = everything before it (the earlier,
  pre-split history prepended), ground truth = that first new item. Seen items are removed at ranking.
- NDCG@10 and Recall@10 for users whose target is cold, warm, and all. Ties are counted against the target and an
  item scored -inf (ID-only for cold items) is never a hit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

K = 10


def product_sequence(sku_raw: Sequence[int], ts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One user's events -> (skus, ts) of product events only, consecutive repeats collapsed."""
    sku = np.asarray(sku_raw, dtype=np.int64)
    t = np.asarray(ts, dtype=np.int64)
    keep = sku >= 0
    sku, t = sku[keep], t[keep]
    if len(sku) > 1:
        first = np.concatenate([[True], sku[1:] != sku[:-1]])
        sku, t = sku[first], t[first]
    return sku, t


@dataclass
class ItemIndex:
    """Row r of every item table <-> sku. Row 0 = PAD, rows 1..n_warm warm, the rest cold."""

    skus: np.ndarray  # (n_items,) int64, skus[0] = -1
    n_warm: int
    _row: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {int(s): r for r, s in enumerate(self.skus) if r > 0}

    @classmethod
    def build(cls, warm: Iterable[int], other: Iterable[int]) -> ItemIndex:
        warm_sorted = np.array(sorted(set(int(s) for s in warm)), dtype=np.int64)
        cold = np.array(sorted(set(int(s) for s in other) - set(warm_sorted.tolist())), dtype=np.int64)
        return cls(np.concatenate([[-1], warm_sorted, cold]).astype(np.int64), len(warm_sorted))

    @property
    def n_items(self) -> int:
        return len(self.skus)

    def rows(self, skus: Iterable[int]) -> np.ndarray:
        return np.array([self._row[int(s)] for s in skus], dtype=np.int64)

    def row(self, sku: int) -> int | None:
        return self._row.get(int(sku))

    def is_cold_row(self, row: int) -> bool:
        return row > self.n_warm


@dataclass
class Case:
    history: np.ndarray  # item rows, chronological
    target: int  # item row
    cold: bool


@dataclass
class ItemSplit:
    split_ts: int
    index: ItemIndex
    train: list[np.ndarray]  # item-row sequences (len >= 2)
    val: list[Case]
    test: list[Case]

    def summary(self) -> dict:
        return {
            "split_ts": int(self.split_ts), "n_items": self.index.n_items - 1, "n_warm": self.index.n_warm,
            "n_cold": self.index.n_items - 1 - self.index.n_warm, "train_users": len(self.train),
            "val_users": len(self.val), "test_users": len(self.test),
            "test_cold_targets": sum(c.cold for c in self.test),
        }


def temporal_split(
    users: Iterable[tuple[np.ndarray, np.ndarray]],
    catalog: Iterable[int] = (),
    quantile: float = 0.9,
    val_frac: float = 0.1,
    seed: int = 0,
    split_ts: int | None = None,
) -> ItemSplit:
    """Build the paper's split from per-user (skus, ts) product sequences (see module docstring)."""
    users = [(s, t) for s, t in users if len(s) > 0]
    if not users:
        raise ValueError("no product events to split")
    if split_ts is None:
        split_ts = int(np.quantile(np.concatenate([t for _, t in users]), quantile))
    warm: set[int] = set()
    for s, t in users:
        warm.update(s[t < split_ts].tolist())
    if len(warm) < 2:
        raise ValueError(f"only {len(warm)} warm items before the split at {split_ts}: not enough to train")
    others = set(int(c) for c in catalog)
    for s, _ in users:
        others.update(s.tolist())
    index = ItemIndex.build(warm, others)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[Case] = []
    test: list[Case] = []
    for s, t in users:
        rows = index.rows(s)
        pre = rows[t < split_ts]
        if len(pre) >= 2:
            is_val = rng.random() < val_frac and pre[-1] not in set(pre[:-1].tolist())
            if is_val:
                val.append(Case(pre[:-1], int(pre[-1]), False))
            else:
                train.append(pre)
        seen = set(pre.tolist())
        post = rows[t >= split_ts]
        for j, r in enumerate(post):
            if int(r) not in seen:
                history = np.concatenate([pre, post[:j]])
                if len(history) > 0:
                    test.append(Case(history, int(r), index.is_cold_row(int(r))))
                break
    return ItemSplit(int(split_ts), index, train, val, test)


def pad_left(seqs: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """Keep the newest `max_len` rows of each sequence, PAD (0) on the left. -> (B, max_len) int64."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s) :] = s
    return torch.from_numpy(out)


def ranks(scores: torch.Tensor, cases: Sequence[Case]) -> np.ndarray:
    """(B, N) scores -> 0-based rank of each target after removing seen items (inf when it cannot be ranked)."""
    scores = scores.clone().float()
    out = np.empty(len(cases), dtype=np.float64)
    for b, case in enumerate(cases):
        seen = torch.as_tensor(case.history, dtype=torch.long)
        scores[b, seen] = float("-inf")
        t = scores[b, case.target]
        if torch.isinf(t) and t < 0:
            out[b] = np.inf
            continue
        greater = (scores[b] > t).sum().item()
        ties = (scores[b] == t).sum().item() - 1
        out[b] = greater + ties
    return out


def compute_ranks(
    scorer: Callable[[torch.Tensor], torch.Tensor], cases: Sequence[Case], max_len: int,
    batch_size: int = 256, device: str | torch.device = "cpu",
) -> np.ndarray:
    out = []
    for i in range(0, len(cases), batch_size):
        chunk = cases[i : i + batch_size]
        seq = pad_left([c.history for c in chunk], max_len).to(device)
        out.append(ranks(scorer(seq).cpu(), chunk))
    return np.concatenate(out) if out else np.zeros(0)


def ndcg_gains(r: np.ndarray, k: int = K) -> np.ndarray:
    """Per-user NDCG@k from 0-based target ranks (one relevant item): 1/log2(rank + 2) inside the top k, else 0."""
    r = np.asarray(r, dtype=np.float64)
    hit = r < k
    return np.where(hit, 1.0 / np.log2(np.where(hit, r, 0) + 2.0), 0.0)


def metrics_from_ranks(r: np.ndarray, cold: np.ndarray, k: int = K) -> dict:
    """NDCG@k and Recall@k for cold, warm and all targets (one relevant item per user)."""
    hit = r < k
    gain = ndcg_gains(r, k)
    out: dict = {}
    for name, sel in (("cold", cold), ("warm", ~cold), ("total", np.ones_like(cold, dtype=bool))):
        n = int(sel.sum())
        out[f"ndcg@{k}_{name}"] = float(gain[sel].mean()) if n else float("nan")
        out[f"recall@{k}_{name}"] = float(hit[sel].mean()) if n else float("nan")
        out[f"n_{name}"] = n
    return out


def evaluate_cases(
    scorer: Callable[[torch.Tensor], torch.Tensor], cases: Sequence[Case], max_len: int,
    batch_size: int = 256, device: str | torch.device = "cpu",
) -> dict:
    r = compute_ranks(scorer, cases, max_len, batch_size, device)
    cold = np.array([c.cold for c in cases], dtype=bool)
    return metrics_from_ranks(r, cold)


# ---------------------------------------------------------------------------------------------------------------
# statistics over seeds and users: the demo has few cold-target users, so one run's cold NDCG is mostly noise
# ---------------------------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values; (nan, nan) if none."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def aggregate_runs(runs: Sequence[dict]) -> dict:
    """Metrics of one variant over several training seeds -> mean per metric, plus `std` and `n_seeds`.

    Counts (`n_cold`, ...) are the same in every run (one split), so their mean is the count."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    out: dict = {}
    std: dict = {}
    for key in keys:
        m, s = mean_std([r.get(key) for r in runs])
        out[key] = int(round(m)) if key.startswith("n_") and m == m else m
        if not key.startswith("n_"):
            std[key] = s
    out["std"] = std
    out["n_seeds"] = len(runs)
    return out


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 5000, seed: int = 0, level: float = 0.95,
) -> dict:
    """Paired comparison of two models on the SAME users (a[i], b[i] = user i's metric under each model).

    Users are resampled with replacement `n_boot` times; returns the mean difference a - b with its percentile
    confidence interval, the relative difference mean(a) / mean(b) - 1 with the interval of the difference divided by
    the observed mean(b) (a ratio per resample is undefined whenever a resample has no hit for b, which is common
    with ~100 cold users), per-user wins/losses, and `p_not_better` = share of resamples where a - b <= 0 (a
    one-sided bootstrap p-value for "a beats b")."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-d shapes, got {a.shape} and {b.shape}")
    n = len(a)
    nan = float("nan")
    if n == 0:
        return {"n": 0, "mean_a": nan, "mean_b": nan, "diff": nan, "diff_ci": [nan, nan], "rel": nan,
                "rel_ci": [nan, nan], "wins": 0, "losses": 0, "ties": 0, "p_not_better": nan,
                "n_boot": n_boot, "level": level}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n) resampled users
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)  # (n_boot,)
    d = ma - mb
    lo, hi = (1.0 - level) / 2 * 100, (1.0 + level) / 2 * 100
    mean_a, mean_b = float(a.mean()), float(b.mean())
    diff_ci = [float(np.percentile(d, lo)), float(np.percentile(d, hi))]
    return {
        "n": n, "mean_a": mean_a, "mean_b": mean_b, "diff": mean_a - mean_b, "diff_ci": diff_ci,
        "rel": mean_a / mean_b - 1.0 if mean_b > 0 else nan,
        "rel_ci": [x / mean_b for x in diff_ci] if mean_b > 0 else [nan, nan],
        "wins": int((a > b).sum()), "losses": int((a < b).sum()), "ties": int((a == b).sum()),
        "p_not_better": float((d <= 0).mean()), "n_boot": n_boot, "level": level,
    }


def format_comparison(name_a: str, name_b: str, group: str, c: dict, k: int = K) -> str:
    """One line for a `paired_bootstrap` result."""
    if not c["n"]:
        return f"{name_a} vs {name_b}, NDCG@{k} {group}: no users."
    pct = int(round(c["level"] * 100))
    return (
        f"{name_a} vs {name_b}, NDCG@{k} {group} ({c['n']} users, paired): {c['mean_a']:.4f} vs {c['mean_b']:.4f}, "
        f"difference {c['diff']:+.4f} [{pct}% CI {c['diff_ci'][0]:+.4f}, {c['diff_ci'][1]:+.4f}], relative "
        f"{c['rel'] * 100:+.1f}% [{c['rel_ci'][0] * 100:+.1f}%, {c['rel_ci'][1] * 100:+.1f}%]; "
        f"better for {c['wins']} users, worse for {c['losses']}; P(diff <= 0) = {c['p_not_better']:.3f}."
    )


LABELS = {
    "history_avg": "History average of content vectors",
    "id_only": "SASRec, ids only",
    "content_finetune": "Content init, fine-tuned freely",
    "frozen": "Frozen content (delta_max = 0)",
    "delta": "Frozen content + trainable delta",
}


def format_table(results: dict[str, dict], k: int = K, comparisons: dict[str, dict] | None = None) -> str:
    """Markdown table in the form of the paper's Table 1 (cold / warm / total), plus the anchor comparison.

    `results[variant]` is one run's metrics or an `aggregate_runs` result (cells then read mean ± std over seeds);
    `comparisons` maps a group ("cold", "total") to a `paired_bootstrap` of delta vs content-init fine-tuned."""

    def f(x: float) -> str:
        return "n/a" if x != x else f"{x:.4f}"

    def cell(m: dict, key: str) -> str:
        s = m.get("std", {}).get(key)
        return f(m[key]) + (f" ± {s:.4f}" if m.get("n_seeds", 1) > 1 and s is not None and s == s else "")

    lines = [
        f"| Model | NDCG@{k} cold | NDCG@{k} warm | NDCG@{k} total | Recall@{k} cold | Recall@{k} warm | Recall@{k} total |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in ("history_avg", "id_only", "content_finetune", "frozen", "delta"):
        if variant not in results:
            continue
        m = results[variant]
        lines.append(
            f"| {LABELS[variant]} | "
            + " | ".join(cell(m, f"{met}@{k}_{s}") for met in ("ndcg", "recall") for s in ("cold", "warm", "total"))
            + " |"
        )
    any_m = next(iter(results.values()), None)
    if any_m is not None:
        lines.append("")
        seeds = max(m.get("n_seeds", 1) for m in results.values())
        lines.append(f"Test users: {any_m['n_total']} ({any_m['n_cold']} with a cold target, {any_m['n_warm']} warm)"
                     + (f"; mean ± std over {seeds} training seeds." if seeds > 1 else "; one training seed."))
    if "delta" in results and "content_finetune" in results:
        d, c = results["delta"], results["content_finetune"]
        for s in ("cold", "total"):
            a, b = d[f"ndcg@{k}_{s}"], c[f"ndcg@{k}_{s}"]
            rel = (a / b - 1.0) * 100 if b and b == b and a == a else float("nan")
            lines.append(f"Delta vs content-init fine-tuned, NDCG@{k} {s}: {f(a)} vs {f(b)} ({rel:+.1f}%).")
    for group, comp in (comparisons or {}).items():
        lines.append(format_comparison("Delta", "content-init fine-tuned", group, comp, k))
    return "\n".join(lines)
