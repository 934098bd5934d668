"""Stage functions of the GRU-autoencoder user model: train, embed (Spark batch inference), export.

`train_user_model` pins the current version of silver `user_sequences`, trains in a work directory derived from
(config, seed, table version, vocabulary) so that the same call after a kill resumes, and publishes a registry
version (kind "user"): config.json, model.json (vocabulary + training table version), metrics.jsonl,
weights.safetensors, loss.png. Calling it again for the same inputs returns the same version (idempotent) unless
`force=True`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger

log = get_logger("ubp.stages.user_model")
KIND = "user"


def _vocab_sizes(settings: Settings, vocab_version: str) -> dict[str, int]:
    from ubp import reader
    from ubp.tables import FIRST_TOKEN_ID

    sizes = reader.vocab_sizes(settings.table_path("vocabularies"), vocab_version)
    for f in ("event_type", "sku", "category", "price", "url", "query", "day", "week"):
        sizes.setdefault(f, FIRST_TOKEN_ID)  # a field with no values yet: reserved ids only
    return sizes


def _run_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_user_model(
    settings: Settings,
    preset: str = "small",
    max_epochs: int | None = None,
    seed: int = 0,
    promote: str = "if_none",
    *,
    overrides: dict[str, Any] | None = None,
    val_fraction: float = 0.1,
    force: bool = False,
    throttle_s: float = 0.0,
    show_progress: bool = True,
    max_batches: int | None = None,
    init_from: str | None = None,
) -> dict:
    """Train the GRU-AE on the current `user_sequences` version; return {"version", "metrics": {"val_loss", ...}}.

    promote: "if_none" (promote only when no CURRENT user model exists), "always", "never".
    """
    from models.common import dist_info
    from models.gru_ae import GRUAEConfig
    from models.train_user import TrainJob, train
    from ubp import reader, registry

    if promote not in ("if_none", "always", "never"):
        raise UbpError(f"promote must be if_none, always or never, not {promote!r}")
    path = settings.table_path("user_sequences")
    table_version = reader.table_version(path)  # pinned: every epoch reads this snapshot
    n_rows = reader.count_rows(path, table_version)
    if n_rows == 0:
        raise UbpError(f"{path} has no users: run `ubp sequences` first")
    vocab_version = reader.sequences_vocab_version(path, table_version)
    try:
        config = GRUAEConfig.preset(preset, _vocab_sizes(settings, vocab_version), **(overrides or {}))
    except (ValueError, TypeError) as exc:
        raise UbpError(str(exc)) from exc
    if max_epochs is not None:
        config.max_epochs = int(max_epochs)
    init_weights = None
    if init_from is not None:  # warm start (fine-tune) from a trained version: same vocabulary and shapes only
        src = registry.version_dir(settings, KIND, init_from)
        src_manifest = json.loads((src / "model.json").read_text())
        reader.check_vocab_version(src_manifest["vocab_version"], vocab_version)
        src_cfg = json.loads((src / "config.json").read_text())
        shape_keys = ("vocab_sizes", "input_fields", "target_fields", "emb_dim", "hidden", "n_layers")
        if any(src_cfg.get(k) != config.to_dict().get(k) for k in shape_keys):
            raise UbpError(f"--init-from {init_from}: its config differs from preset {preset!r} in shape; "
                           "warm start needs the same architecture")
        init_weights = str(src / "weights.safetensors")
    key = _run_key({"config": config.to_dict(), "seed": seed, "table": str(path), "table_version": table_version,
                    "vocab": vocab_version, "val_fraction": val_fraction, "max_batches": max_batches,
                    "init_from": init_from})
    work = settings.cache_dir / "train_user" / key
    done = work / "DONE.json"
    if done.exists() and not force:
        prev = json.loads(done.read_text())
        if (registry.kind_dir(settings, KIND) / prev["version"]).is_dir():
            log.info("user model for these inputs already trained: %s", prev["version"])
            return {**prev, "reused": True}
    if force and work.exists() and dist_info().is_main:
        shutil.rmtree(work)
    log.info("training GRU-AE %s on %s v%d (%d users, vocab %s) in %s", preset, path, table_version, n_rows,
             vocab_version, work)
    t0 = time.perf_counter()
    job = TrainJob(config=config, sequences_path=str(path), table_version=table_version, vocab_version=vocab_version,
                   work_dir=work, seed=seed, val_fraction=val_fraction, throttle_s=throttle_s,
                   show_progress=show_progress, max_batches=max_batches, init_weights=init_weights)
    result = train(job)
    if result["rank"] != 0:
        return {"stage": "train-user-model", "rank": result["rank"]}
    best = next((r for r in result["history"] if r["epoch"] == result["best_epoch"]), result["history"][-1])
    version, vdir = registry.new_version(settings, KIND, tag=preset)
    shutil.copy(work / "best.safetensors", vdir / "weights.safetensors")
    (vdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    for name in ("metrics.jsonl", "loss.png"):
        if (work / name).exists():
            shutil.copy(work / name, vdir / name)
    metrics = {"val_loss": best.get("val_loss"), "train_loss": best.get("train_loss"),
               "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
               "stopped_early": result["stopped_early"],
               **{k: v for k, v in best.items() if k.startswith("val_acc_")}}
    manifest = {
        "kind": KIND, "version": version, "preset": preset, "seed": seed, "vocab_version": vocab_version,
        "training_table": {"name": "user_sequences", "path": str(path), "version": table_version, "rows": n_rows},
        "val_fraction": val_fraction, "init_from": init_from, "metrics": metrics, "work_dir": str(work),
        "world_size": result["world_size"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    (vdir / "model.json").write_text(json.dumps(manifest, indent=2, default=str))
    current = registry.current_version(settings, KIND)
    promoted = promote == "always" or (promote == "if_none" and current is None)
    if promoted:
        registry.promote(settings, KIND, version, reason=f"train-user-model promote={promote}")
    else:
        registry.log_decision(settings, KIND, {"version": version, "promoted": False,
                                               "reason": f"promote={promote}, CURRENT={current}"})
    out = {"stage": "train-user-model", "rows": {"user_sequences": n_rows}, "version": version,
           "promoted": promoted, "metrics": metrics, "table_version": table_version,
           "vocab_version": vocab_version, "resumed_from": result["resumed_from"], "model_dir": str(vdir),
           "world_size": result["world_size"]}
    done.write_text(json.dumps({k: v for k, v in out.items() if k != "resumed_from"}, default=str))
    return out


def embed_users(settings: Settings, model_version: str | None = None, batch_size: int = 512,
                load_log: str | None = None, engine: str = "arrow") -> dict:
    """Spark batch inference: `user_sequences` -> gold `user_profiles` for one model version (None = CURRENT).
    Idempotent per (model_version, as_of): those rows are replaced, nothing else is touched."""
    from spark_jobs.embed_users import run as run_embed
    from ubp import registry

    version = model_version or registry.require_current(settings, KIND)
    model_dir = registry.version_dir(settings, KIND, version)
    return run_embed(settings, model_dir, version, batch_size=batch_size, load_log=load_log, engine=engine)


def export(settings: Settings, out: str | Path, table: str = "user_profiles", clients: str | Path | None = None,
           model_version: str | None = None, as_of: datetime | None = None) -> dict:
    """Write the challenge submission format from a profile table (see `ubp.export`)."""
    from ubp.export import export_challenge

    return export_challenge(settings, out, table=table, clients=clients, model_version=model_version, as_of=as_of)
