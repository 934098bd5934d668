"""Stage `train_item_model`: the cold-start SASRec (arXiv 2507.19473) and its evaluation.

- `train_item_model`: silver `user_sequences` (product events) + `item_content` -> a versioned item model
  (registry kind "item") with the warm-fitted content transform and the trained deltas.
- `evaluate_item_model`: every variant on the same temporal split -> a table in the form of the paper's Table 1.

The other item stages: `item_content.py` (the content embeddings it reads), `item_vectors.py` (what it serves).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.reader import require_table
from ubp.registry import ITEM_KIND

log = get_logger(__name__)

KIND = ITEM_KIND
DEFAULT_VARIANTS: tuple[str, ...] = ("history_avg", "id_only", "content_finetune", "frozen", "delta")
DEFAULT_MAX_EPOCHS = 100  # the paper's cap; early stopping (patience 5) ends runs long before on demo data
REPORT_NAME = "item_model_eval"
DEFAULT_DELTA_MAX = 0.5  # the paper's bound
TEST_USERS_FILE = "test_users.json"


# ---------------------------------------------------------------------------------------------------------------
# inputs for training / evaluation (Arrow over the Delta log, no Spark)
# ---------------------------------------------------------------------------------------------------------------
def load_inputs(settings: Settings, train_users: int | None = None) -> dict[str, Any]:
    """Per-user product sequences from `user_sequences` (all users, or a stable hashed sample of about
    `train_users`: the sequences are held in memory) and the raw content matrix from `item_content`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ubp.models.item_eval import product_sequence
    from ubp.models.user_data import in_sample
    from ubp.reader import count_rows, iter_batches, table_version

    seq_path = settings.table_path("user_sequences")
    content_path = settings.table_path("item_content")
    require_table(seq_path, "user_sequences", "sequences")
    require_table(content_path, "item_content", "item-content")
    seq_version = table_version(seq_path)
    fraction = 1.0 if train_users is None else min(1.0, train_users / max(1, count_rows(seq_path, seq_version)))
    users, as_of = [], None
    for batch in iter_batches(seq_path, version=seq_version, columns=["client_id", "sku_raw", "ts", "as_of"],
                              batch_size=8192):
        if fraction < 1.0:
            ids = batch.column("client_id").to_numpy(zero_copy_only=False)
            batch = batch.filter(pa.array(in_sample(ids, fraction)))
        skus = batch.column("sku_raw").to_pylist()
        tss = batch.column("ts").to_pylist()
        for s, t in zip(skus, tss, strict=True):
            items, ts = product_sequence(s, t)
            if len(items):
                users.append((items, ts))
        m = pc.max(batch.column("as_of")).as_py()
        as_of = m if as_of is None or (m is not None and m > as_of) else as_of
    content_version = table_version(content_path)
    sku_parts, emb_parts, encoders = [], [], set()
    for batch in iter_batches(content_path, version=content_version, columns=["sku", "encoder", "embedding"],
                              batch_size=8192):
        sku_parts.append(batch.column("sku").to_numpy())
        flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)  # (n * D,)
        emb_parts.append(np.asarray(flat, dtype=np.float32).reshape(batch.num_rows, -1))  # (n, D)
        encoders.update(batch.column("encoder").to_pylist())
    if not sku_parts:
        raise UbpError(f"{content_path} is empty: run `ubp item-content` after ingesting products")
    return {
        "users": users, "as_of": as_of, "skus": np.concatenate(sku_parts), "raw": np.concatenate(emb_parts),
        "encoders": sorted(encoders), "sequences_version": seq_version, "item_content_version": content_version,
        **({"sample_fraction": fraction} if fraction < 1.0 else {}),
    }


def _versions(settings: Settings) -> dict[str, int]:
    from ubp.reader import table_version

    seq_path, content_path = settings.table_path("user_sequences"), settings.table_path("item_content")
    require_table(seq_path, "user_sequences", "sequences")
    require_table(content_path, "item_content", "item-content")
    return {"sequences_version": table_version(seq_path), "item_content_version": table_version(content_path)}


def _work_dir(settings: Settings, params: dict[str, Any]) -> Path:
    """Training work dir derived from everything that determines the result: the same call after a kill resumes
    from its checkpoints, and a finished one is reused (DONE.json) instead of retrained."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return settings.cache_dir / "train_item" / f"{params['variant']}-{key}"


def _finished(settings: Settings, work: Path) -> dict | None:
    from ubp import registry

    done = work / "DONE.json"
    if not done.exists():
        return None
    prev = json.loads(done.read_text())
    if not (work / TEST_USERS_FILE).exists():  # a run recorded by an older ubp, without per-user results: retrain
        return None
    return prev if (registry.kind_dir(settings, KIND) / prev["version"]).is_dir() else None


def _promote(settings: Settings, version: str, variant: str, promote: str, test: dict) -> bool:
    from ubp import registry

    current = registry.current_version(settings, KIND)
    if current == version:
        return True
    if promote == "always" or (promote == "if_none" and current is None):
        registry.promote(settings, KIND, version, reason=f"promote={promote}: {variant}, test NDCG@10 "
                         f"{test.get('ndcg@10_total', float('nan')):.4f}")
        return True
    registry.log_decision(settings, KIND, {"version": version, "promoted": False,
                                           "reason": f"promote={promote}, CURRENT={current}"})
    return False


def _train_variant(
    settings: Settings, variant: str, max_epochs: int | None, seed: int, promote: str,
    d_model: int = 64, delta_max: float = 0.5, patience: int = 5, show_progress: bool = True,
    force: bool = False, inputs: dict[str, Any] | None = None, split_seed: int = 0,
    train_users: int | None = None,
) -> dict:
    """Train (or reuse) one variant. `seed` seeds the training only; the split (validation users) and the content
    PCA use `split_seed`, so runs with different seeds are scored on the same test users, paired user by user."""
    import shutil

    import numpy as np

    from ubp import registry
    from ubp.models.item_eval import compute_ranks, metrics_from_ranks, ndcg_gains, temporal_split
    from ubp.models.sasrec import TRAINED_VARIANTS, VARIANTS, SASRecConfig
    from ubp.models.train_item import (
        WEIGHTS_FILE,
        history_avg_scorer,
        item_offsets,
        prepare_content,
        save_item_model,
        train_sasrec,
    )

    if variant not in VARIANTS:
        raise UbpError(f"unknown item-model variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if promote not in ("if_none", "always", "never"):
        raise UbpError(f"promote must be if_none, always or never, got {promote!r}")
    t0 = time.perf_counter()
    epochs = DEFAULT_MAX_EPOCHS if max_epochs is None else int(max_epochs)
    versions = _versions(settings) if inputs is None else {
        k: inputs[k] for k in ("sequences_version", "item_content_version")}
    # the bound shapes only the delta variant: the baselines are keyed at the default bound, so a delta_max sweep
    # reuses their finished runs instead of retraining identical models
    key_bound = delta_max if variant == "delta" else DEFAULT_DELTA_MAX
    params = {"variant": variant, "d_model": d_model, "delta_max": key_bound, "max_epochs": epochs,
              "patience": patience, "seed": seed, "split_seed": split_seed, **versions,
              **({"train_users": train_users} if train_users is not None else {})}
    work = _work_dir(settings, params)
    prev = None if force else _finished(settings, work)
    if prev is not None:
        log.info("item model %s for these inputs already trained: %s", variant, prev["version"])
        promoted = _promote(settings, prev["version"], variant, promote, prev["metrics"])
        # the run's work dir is this cache slot (the recorded path is stale once the lakehouse has been moved)
        return {**prev, "work_dir": str(work), "promoted": promoted, "reused": True}
    if force and work.exists():
        shutil.rmtree(work)
    inputs = inputs if inputs is not None else load_inputs(settings, train_users)
    try:
        split = temporal_split(inputs["users"], catalog=inputs["skus"], seed=split_seed)
    except ValueError as exc:
        raise UbpError(f"cannot build the item-model split: {exc}") from exc
    config = SASRecConfig(n_items=split.index.n_items, n_warm=split.index.n_warm, d_model=d_model,
                          variant=variant, delta_max=delta_max)
    transform, content, missing = prepare_content(split.index, inputs["skus"], inputs["raw"], d_model,
                                                  seed=split_seed)
    log.info("item model %s in %s: %s", variant, work, split.summary())
    work.mkdir(parents=True, exist_ok=True)
    if variant in TRAINED_VARIANTS:
        model, train = train_sasrec(split, content, config, work, max_epochs=epochs, patience=patience,
                                    seed=seed, show_progress=show_progress)
        model.eval()
        scorer, device = model.score, next(model.parameters()).device
    else:
        model, train = None, {"epochs_run": 0, "note": "history average: no training"}
        scorer, device = history_avg_scorer(content), "cpu"
    test_ranks = compute_ranks(scorer, split.test, config.max_len, device=device)
    offsets = item_offsets(model, split.index, content)
    test_cold = np.array([c.cold for c in split.test], dtype=bool)
    test = metrics_from_ranks(test_ranks, test_cold)
    version, out_dir = registry.new_version(settings, KIND, tag=variant.replace("_", "-"))
    for name in (WEIGHTS_FILE, "metrics.jsonl", "loss.png"):
        if (work / name).exists():
            shutil.copy(work / name, out_dir / name)
    as_of = inputs["as_of"]
    info = {
        "version": version, "variant": variant, "created_at": datetime.now(UTC).isoformat(),
        "as_of": as_of.isoformat() if as_of is not None else None, "split": split.summary(),
        "encoders": inputs["encoders"], "items_without_content": missing, "train": train, "test": test,
        "params": params, "work_dir": str(work),
    }
    save_item_model(out_dir, config, split.index, None if variant == "id_only" else transform, offsets, info)
    (out_dir / "eval.json").write_text(json.dumps(test, indent=2))
    promoted = _promote(settings, version, variant, promote, test)
    out = {
        "stage": "train_item_model", "rows": {"train_sequences": len(split.train), "test_users": len(split.test)},
        "version": version, "variant": variant, "promoted": promoted, "model_dir": str(out_dir),
        "metrics": {**test, "best_val_ndcg@10": train.get("best_val_ndcg@10")}, "train": train,
        "split": split.summary(), "seconds": round(time.perf_counter() - t0, 3), "work_dir": str(work),
    }
    # per-user NDCG@10 on the test users, in the same order for every variant and seed (pairs them up); a file
    # next to the run, not in the returned summary (which ends up in logs and Airflow XComs)
    (work / TEST_USERS_FILE).write_text(json.dumps(
        {"ndcg@10": [round(float(g), 6) for g in ndcg_gains(test_ranks)], "cold": test_cold.tolist(),
         "target": [int(c.target) for c in split.test]}))
    (work / "DONE.json").write_text(json.dumps(out, default=str))
    return out


def train_item_model(
    settings: Settings, variant: str = "delta", max_epochs: int | None = None, seed: int = 0,
    promote: str = "if_none", d_model: int = 64, delta_max: float = 0.5, force: bool = False,
    train_users: int | None = None,
) -> dict:
    """Train one variant (default: frozen content + bounded delta) and register it as a new item-model version.

    Resumes an interrupted run for the same inputs; a finished one is returned as is (`reused`) unless `force`.
    `train_users`: train on a stable hashed sample of about this many users (the sequences are held in memory).
    """
    return _train_variant(settings, variant, max_epochs, seed, promote, d_model=d_model, delta_max=delta_max,
                          force=force, train_users=train_users)


def evaluate_item_model(
    settings: Settings, variants: tuple[str, ...] = DEFAULT_VARIANTS, max_epochs: int | None = None,
    seeds: Sequence[int] = (0,), d_model: int = 64, delta_max: float = 0.5, n_boot: int = 5000,
    seed: int | None = None,
) -> dict:
    """Train every variant with every training seed on ONE split; write the Table-1-style comparison (mean ± std
    over seeds) and a paired bootstrap of delta vs content-init fine-tuned to `<root>/_reports/`.

    Why seeds and pairing: on demo data only ~100 users have a cold target, so one run's cold NDCG@10 moves by
    0.01 per hit. Per-user NDCG@10 is averaged over the seeds, then users are resampled (the same users for both
    models) for a confidence interval of the difference. `seed` (one int) is kept as a shorthand for `seeds=(seed,)`.
    The delta model of the first seed is promoted only when no item model is current yet; the rest never are.
    """
    import numpy as np

    from ubp.models.item_eval import aggregate_runs, format_table, paired_bootstrap

    seeds = (int(seed),) if seed is not None else tuple(int(s) for s in seeds)
    if not seeds:
        raise UbpError("evaluate-items needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UbpError(f"seeds must be distinct, got {list(seeds)}")
    inputs = load_inputs(settings)
    per_seed: dict[str, list[dict]] = {v: [] for v in variants}
    gains: dict[str, list[list[float]]] = {v: [] for v in variants}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    users_key = None
    for n, s in enumerate(seeds):
        for variant in variants:
            if variant == "history_avg" and n > 0:  # no training: the same ranking for every seed, one row
                continue
            out = _train_variant(settings, variant, max_epochs, s,
                                 promote="if_none" if variant == "delta" and n == 0 else "never",
                                 d_model=d_model, delta_max=delta_max, inputs=inputs)
            tu = _test_users(out)
            key = (tuple(tu["cold"]), tuple(tu["target"]))
            if users_key is not None and key != users_key:
                raise UbpError("test users differ between runs: cannot pair them (inputs changed mid-evaluation?)")
            users_key = key
            per_seed[variant].append(out["metrics"])
            gains[variant].append(tu["ndcg@10"])
            runs[variant].append({"seed": s, "version": out["version"], "seconds": out["seconds"],
                                  "sequences_per_s": out["train"].get("sequences_per_s"),
                                  "epochs_run": out["train"].get("epochs_run"),
                                  "best_epoch": out["train"].get("best_epoch"),
                                  "drift": _drift(Path(out["model_dir"]))})
    results = {v: aggregate_runs(per_seed[v]) for v in variants}
    comparisons: dict[str, dict] = {}
    if "delta" in variants and "content_finetune" in variants and users_key is not None:
        cold = np.array(users_key[0], dtype=bool)
        a = np.mean(np.array(gains["delta"]), axis=0)  # (users,) per-user NDCG@10 averaged over the seeds
        b = np.mean(np.array(gains["content_finetune"]), axis=0)
        comparisons = {"cold": paired_bootstrap(a[cold], b[cold], n_boot=n_boot),
                       "total": paired_bootstrap(a, b, n_boot=n_boot)}
    table = format_table(results, comparisons=comparisons)
    drift = {v: [r["drift"]["mean"] for r in runs[v] if r.get("drift")] for v in ("content_finetune", "delta")}
    table += (f"\nDelta bound delta_max = {delta_max:g}; max epochs {max_epochs or DEFAULT_MAX_EPOCHS} (early stopping on "
              "validation NDCG@10, patience 5); training seeds " + ", ".join(map(str, seeds)) + ".")
    if drift["content_finetune"] and drift["delta"]:
        table += (f"\nMean L2 drift of warm items from their content vector: content-init fine-tuned "
                  f"{np.mean(drift['content_finetune']):.3f}, delta {np.mean(drift['delta']):.3f}.")
    report_dir = settings.root / "_reports"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"{REPORT_NAME}.md").write_text(f"# Item model evaluation\n\n{table}\n")
    report = {"seeds": list(seeds), "delta_max": delta_max, "max_epochs": max_epochs, "results": results,
              "per_seed": per_seed, "comparisons": comparisons, "runs": runs}
    (report_dir / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2, default=str))
    return {
        "stage": "evaluate_item_model", "rows": {"test_users": next(iter(results.values()), {}).get("n_total", 0)},
        "seeds": list(seeds), "results": results, "per_seed": per_seed, "comparisons": comparisons, "runs": runs,
        "table": table, "report": str(report_dir / f"{REPORT_NAME}.md"),
        "versions": {v: rs[0]["version"] for v, rs in runs.items() if rs},  # first seed's (the promotable one)
        "all_versions": {v: [r["version"] for r in rs] for v, rs in runs.items()},
    }


def _test_users(out: dict) -> dict:
    """Per-user test results of a finished run (see `_train_variant`)."""
    return json.loads((Path(out["work_dir"]) / TEST_USERS_FILE).read_text())


def _drift(model_dir: Path) -> dict[str, float] | None:
    """How far the warm items moved from their content vectors: L2 norm of (final vector - content) per warm item.

    For `delta` it is bounded by delta_max; for `content_finetune` it shows whether free fine-tuning actually
    drifted away from the content space (the paper's explanation of why it loses on cold items)."""
    import numpy as np

    from ubp.models.train_item import OFFSETS_FILE

    path = model_dir / OFFSETS_FILE
    if not path.exists():
        return None
    from safetensors.numpy import load_file

    norms = np.linalg.norm(load_file(str(path))["offset"], axis=1)
    if not len(norms):
        return None
    return {"mean": round(float(norms.mean()), 4), "p90": round(float(np.percentile(norms, 90)), 4),
            "max": round(float(norms.max()), 4)}
