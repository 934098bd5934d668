"""Benchmark: what a downstream model keeps when the served GRU-AE member is retrained.

On an ingested lakehouse (the demo), with the challenge protocol of `ubp evaluate` (as-of 14 days before the last
event, labels from the window after it): train the current `day_event` model (seed 0), then per retrain seed
(1, 2, 3) retrain it two ways, as the training DAG would (`init_from="current"`, a warm start) and from scratch (a
cold start). For every demo task a probe (logistic regression and the MLP of `ubp evaluate`) is trained on the
CURRENT profiles of the training users and applied unchanged to the test users' profiles of

- the current model (what it was trained on),
- the retrained model, unaligned (the new model's own coordinates),
- the retrained model, aligned (orthogonal Procrustes onto the current space, fitted label-free on the users both
  models encode, as `train_user_model` does),

next to a probe retrained on the retrained profiles. "kept" = (AUROC - 0.5) / (current AUROC - 0.5): the share of
the probe's lift over random that survives the retrain. The alignment error of each retrain (held-out users, the
figure `ubp/spaces.py` compares with its threshold) and whether the stage kept the space are reported too.

Run: .venv/bin/python benchmarks/retrain_alignment.py --lakehouse /path/to/ingested/lakehouse [--epochs 4]
Output: JSON on stdout, and `--out FILE` (the table in docs/evaluation/retrain_alignment.md is made from it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _vectors(settings, kind: str, version: str, rotation: bool = True):
    """(client_ids, served vectors) of every user of the pinned sequences, through one model version."""
    import numpy as np
    from ubp.models.infer_user import encode_batches, load_model

    from ubp import reader, registry

    model, _ = load_model(registry.version_dir(settings, kind, version), device="cpu")
    if not rotation and model.serving_transform is not None:
        model.serving_transform.rotation = None
    ids, xs = [], []
    for cid, _, z in encode_batches(model, reader.iter_batches(settings.table_path("user_sequences"),
                                                              batch_size=4096)):
        ids.append(cid)
        xs.append(z)
    ids = np.concatenate(ids)
    order = np.argsort(ids)
    return ids[order], np.concatenate(xs)[order]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lakehouse", required=True)
    p.add_argument("--epochs", type=int, default=4, help="epochs of the current model and of a cold retrain")
    p.add_argument("--warm-epochs", type=int, default=2, help="epochs of a warm-started retrain")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import numpy as np
    import torch
    from ubp.models.latent import align
    from ubp.models.probe import ProbeConfig, fit_probe, predict
    from ubp.spark_jobs import targets as T

    from ubp import registry
    from ubp.config import Settings
    from ubp.metrics import score_task
    from ubp.stages.ensemble import _read_bronze, _spark_ts, _utc
    from ubp.stages.sequences import sequences
    from ubp.stages.train_user_model import train_user_model

    t0 = time.time()
    torch.set_num_threads(2)
    settings = Settings(lakehouse=a.lakehouse)
    spark, events, products = _read_bronze(settings)
    as_of = _utc(T.default_as_of(events, 14))
    es = settings.with_namespace("_bench_align")
    sequences(es, as_of=as_of)
    labels = T.collect_labels(events, products, _spark_ts(as_of), 14)
    kind = registry.USER_KIND

    def train(seed: int, epochs: int, init_from: str | None, promote: str) -> dict:
        r = train_user_model(es, member="day_event", seed=seed, max_epochs=epochs, init_from=init_from,
                             promote=promote, show_progress=False)
        print(f"trained {r['version']} seed {seed} init {init_from}: space {r['space']}", file=sys.stderr)
        return r

    current = registry.current_version(es, kind) or train(0, a.epochs, None, "always")["version"]
    ids, x_cur = _vectors(es, kind, current)

    retrains = []
    for seed in a.seeds:
        for mode, init, epochs in (("warm", "current", a.warm_epochs), ("cold", None, a.epochs)):
            r = train(seed, epochs, init, "never")
            ids_b, x_new = _vectors(es, kind, r["version"], rotation=False)
            assert np.array_equal(ids_b, ids)
            rot, err = align(x_new, x_cur, ids)  # the stage's recipe, on every user (label-free)
            retrains.append({"seed": seed, "mode": mode, "version": r["version"], "space": r["space"],
                             "alignment_error": err, "x_new": x_new, "x_aligned": x_new @ rot})

    rows = []
    for task, spec in labels.items():
        pos = np.clip(np.searchsorted(ids, spec["client_id"]), 0, len(ids) - 1)
        keep = ids[pos] == spec["client_id"]
        rws, y = pos[keep], spec["y"][keep]
        popularity = None if spec["popularity"] is None else np.asarray(spec["popularity"], float)

        def auroc(logits, yt, kind_=spec["kind"], pop_=popularity):
            return score_task(kind_, yt, logits, pop_)

        for rt in retrains:
            perm = np.random.default_rng(rt["seed"]).permutation(len(y))
            n_te = int(round(0.2 * len(y)))
            te, tr = perm[:n_te], perm[n_te:]
            for probe in ("logreg", "mlp"):
                cfg = ProbeConfig(hidden=256, epochs=3, linear=(probe == "logreg"), seed=rt["seed"])

                def apply(model, x, te=te, rws=rws, kind_=spec["kind"]):
                    out = predict(model, np.ascontiguousarray(x[rws][te], np.float32))
                    return out[:, 0] if kind_ == "binary" else out

                fit = fit_probe(x_cur[rws][tr], y[tr], x_cur[rws][te], y[te], auroc, cfg, keep_model=True)
                refit = fit_probe(rt["x_aligned"][rws][tr], y[tr], rt["x_aligned"][rws][te], y[te], auroc, cfg,
                                  keep_model=True)
                s = {"current": auroc(apply(fit["model"], x_cur), y[te])["auroc"],
                     "unaligned": auroc(apply(fit["model"], rt["x_new"]), y[te])["auroc"],
                     "aligned": auroc(apply(fit["model"], rt["x_aligned"]), y[te])["auroc"],
                     "retrained probe": auroc(apply(refit["model"], rt["x_aligned"]), y[te])["auroc"]}
                rows.append({"task": task, "probe": probe, "seed": rt["seed"], "mode": rt["mode"], **s,
                             **{f"kept {k}": (s[k] - 0.5) / (s["current"] - 0.5) if s["current"] > 0.5 else None
                                for k in ("unaligned", "aligned", "retrained probe")}})
                print(json.dumps(rows[-1]), file=sys.stderr)

    def mean(mode: str, probe: str, key: str) -> float:
        vals = [r[key] for r in rows if r["mode"] == mode and r["probe"] == probe and r[key] is not None]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {
        "command": " ".join(sys.argv), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"), "lakehouse": a.lakehouse, "as_of": as_of.isoformat(),
        "users": int(len(ids)), "current": current, "epochs": a.epochs, "warm_epochs": a.warm_epochs,
        "retrains": [{k: v for k, v in r.items() if not k.startswith("x_")} for r in retrains],
        "mean": {f"{mode}/{probe}": {k: mean(mode, probe, k) for k in (
            "current", "unaligned", "aligned", "retrained probe", "kept unaligned", "kept aligned",
            "kept retrained probe")} for mode in ("warm", "cold") for probe in ("logreg", "mlp")},
        "rows": rows, "seconds": round(time.time() - t0, 1),
    }
    text = json.dumps(summary, indent=2, default=str)
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
