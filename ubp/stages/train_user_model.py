"""Stage `train_user_model`: train one user-model member (a GRU autoencoder or a next-event transformer, as the
member's config says: `models.members`); also its torchrun entry.

`train_user_model(member=...)` pins the current version of silver `user_sequences`, trains in a work directory
derived from (config, seed, table version, vocabulary) so that the same call after a kill resumes, fits the
member's serving transform on the training users (`models.latent`), and publishes a registry version of kind
`user_kind(member)`: config.json, model.json (vocabulary, training table version, latent health), metrics.jsonl,
weights.safetensors, latent_transform.{safetensors,json}, loss.png. Calling it again for the same inputs returns
the same version (idempotent) unless `force=True`.

The first default member (`day_event`) is the served user model (kind "user": `user_profiles` in Feast, export,
the ensemble's `gru` block); every other member has its own kind `user-<member>` and its own CURRENT pointer.

Command-line entry for torchrun (DDP):
    torchrun --nproc_per_node 4 -m ubp.stages.train_user_model --lakehouse ./lakehouse --member week_all
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger
from ubp.registry import PRIMARY_USER_MEMBER, user_kind

log = get_logger(__name__)


def _vocab_sizes(settings: Settings, vocab_version: str, fields: set[str]) -> dict[str, int]:
    """Embedding-table size per field of the vocabulary, plus the name alphabet when `fields` read name codes (only
    then: the sizes are part of a model's shape, which a warm start compares with older versions')."""
    from ubp import reader
    from ubp.tables import FIRST_TOKEN_ID, NAME_VOCAB_SIZE

    sizes = reader.vocab_sizes(settings.table_path("vocabularies"), vocab_version)
    for f in ("event_type", "sku", "category", "price", "url", "query", "day", "week"):
        sizes.setdefault(f, FIRST_TOKEN_ID)  # a field with no values yet: reserved ids only
    if "name" in fields:
        sizes["name"] = NAME_VOCAB_SIZE  # tokens by arithmetic (code + FIRST_TOKEN_ID), no vocabulary
    return sizes


def _require_columns(path: Path, table_version: int, config: Any) -> None:
    """A one-line error when the pinned `user_sequences` lacks a column the member reads: a table built before the
    column joined the contract (e.g. `name`, read by `sku_text`) gains it on a full `ubp sequences` build."""
    from deltalake import DeltaTable

    from ubp.models.user_data import columns_for

    have = {f.name for f in DeltaTable(str(path), version=table_version).schema().fields}
    missing = [c for c in columns_for(config.input_fields + config.target_fields) if c not in have]
    if missing:
        raise UbpError(f"{path} has no column {', '.join(missing)} (built before it existed): rebuild it with "
                       "`ubp sequences`")


def _run_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_user_model(
    settings: Settings,
    member: str = PRIMARY_USER_MEMBER,
    max_epochs: int | None = None,
    seed: int = 0,
    promote: str = "if_none",
    *,
    overrides: dict[str, Any] | None = None,
    val_fraction: float = 0.1,
    force: bool = False,
    show_progress: bool = True,
    max_batches: int | None = None,
    init_from: str | None = None,
    full_size: bool = False,
    preset: str | None = None,
    train_users: int | None = None,
) -> dict:
    """Train one user-model member on the current `user_sequences` version; return {"version", "metrics", ...}.

    promote: "if_none" (promote only when the member has no CURRENT version), "always", "never".
    full_size: train a large member at its full size even without a GPU (default: its CPU size there).
    preset: the older name of `member`.
    train_users: train (and validate) on a stable hashed sample of about this many users (at scale: an epoch over
    1M users is hours on a CPU); None or more than the table holds = every user. Embedding still covers everyone.
    init_from: a version of the member to warm-start from, or "current" (the serving version when its vocabulary
    and shapes allow; else a cold start): a warm start keeps the new latents close to the served space.
    """
    import torch

    from ubp import reader, registry
    from ubp.models.common import dist_info
    from ubp.models.gru_ae import GRUAEConfig
    from ubp.models.members import member as member_spec
    from ubp.models.train_user import TrainJob, train

    member = preset or member
    if promote not in ("if_none", "always", "never"):
        raise UbpError(f"promote must be if_none, always or never, not {promote!r}")
    try:
        spec = member_spec(member)
    except ValueError as exc:
        raise UbpError(str(exc)) from exc
    kind = user_kind(member)
    scaled = bool(spec.cpu) and not full_size and not torch.cuda.is_available()
    path = settings.table_path("user_sequences")
    table_version = reader.table_version(path)  # pinned: every epoch reads this snapshot
    n_rows = reader.count_rows(path, table_version)
    if n_rows == 0:
        raise UbpError(f"{path} has no users: run `ubp sequences` first")
    vocab_version = reader.sequences_vocab_version(path, table_version)
    if train_users is not None and train_users < 1:
        raise UbpError(f"--train-users must be at least 1, got {train_users}")
    sample_fraction = 1.0 if train_users is None else min(1.0, train_users / n_rows)
    try:
        sized = {**spec.model, **(overrides or {})}
        config = GRUAEConfig.preset(member, _vocab_sizes(settings, vocab_version, {
            *sized.get("input_fields", ()), *sized.get("target_fields", ())}),
                                    **{**(spec.cpu if scaled else {}), **(overrides or {})})
    except (ValueError, TypeError) as exc:
        raise UbpError(str(exc)) from exc
    _require_columns(path, table_version, config)
    if max_epochs is not None:
        config.max_epochs = int(max_epochs)
    init_weights = None
    if init_from == "current":  # warm start from the serving version when its vocabulary and shapes allow
        init_from = registry.current_version(settings, kind)
        if init_from is not None:
            try:
                _check_warm_start(settings, kind, init_from, config, vocab_version, member)
            except UbpError as exc:
                log.info("cold start: %s", exc)
                init_from = None
    if init_from is not None:  # warm start (fine-tune) from a trained version: same vocabulary and shapes only
        init_weights = _check_warm_start(settings, kind, init_from, config, vocab_version, member)
    key = _run_key({"config": config.to_dict(), "seed": seed, "table": str(path), "table_version": table_version,
                    "vocab": vocab_version, "val_fraction": val_fraction, "max_batches": max_batches,
                    "init_from": init_from, **({"sample": sample_fraction} if sample_fraction < 1 else {})})
    work = settings.cache_dir / "train_user" / key
    done = work / "DONE.json"
    if done.exists() and not force:
        prev = json.loads(done.read_text())
        if (registry.kind_dir(settings, kind) / prev["version"]).is_dir():
            log.info("user model for these inputs already trained: %s", prev["version"])
            return {**prev, "reused": True}
    if force and work.exists() and dist_info().is_main:
        shutil.rmtree(work)
    log.info("training user-model member %s%s on %s v%d (%d users%s, vocab %s) in %s", member,
             " (CPU size)" if scaled else "", path, table_version, n_rows,
             f", a {sample_fraction:.2%} sample" if sample_fraction < 1 else "", vocab_version, work)
    t0 = time.perf_counter()
    job = TrainJob(config=config, sequences_path=str(path), table_version=table_version, vocab_version=vocab_version,
                   work_dir=work, seed=seed, val_fraction=val_fraction, sample_fraction=sample_fraction,
                   show_progress=show_progress, max_batches=max_batches, init_weights=init_weights)
    result = train(job)
    if result["rank"] != 0:
        return {"stage": "train-user-model", "rank": result["rank"]}
    best = next((r for r in result["history"] if r["epoch"] == result["best_epoch"]), result["history"][-1])
    version, vdir = registry.new_version(settings, kind, tag=member)
    shutil.copy(work / "best.safetensors", vdir / "weights.safetensors")
    (vdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    for name in ("metrics.jsonl", "loss.png"):
        if (work / name).exists():
            shutil.copy(work / name, vdir / name)
    health = _fit_serving(vdir, spec.post, path, table_version, val_fraction)
    space = _join_space(settings, kind, version, vdir, path, table_version, vocab_version)
    metrics = {"val_loss": best.get("val_loss"), "train_loss": best.get("train_loss"),
               "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
               "stopped_early": result["stopped_early"],
               **{k: v for k, v in best.items() if k.startswith("val_acc_")}}
    manifest = {
        "kind": kind, "version": version, "member": member, "preset": member, "seed": seed,
        "size": "cpu" if scaled else "full", "vocab_version": vocab_version, "latent_health": health,
        "training_table": {"name": "user_sequences", "path": str(path), "version": table_version, "rows": n_rows},
        "val_fraction": val_fraction, "sample_fraction": sample_fraction, "init_from": init_from, "metrics": metrics,
        "work_dir": str(work),
        "world_size": result["world_size"], "space": space,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    (vdir / "model.json").write_text(json.dumps(manifest, indent=2, default=str))
    current = registry.current_version(settings, kind)
    promoted = promote == "always" or (promote == "if_none" and current is None)
    if promoted:
        registry.promote(settings, kind, version, reason=f"train-user-model promote={promote}")
    else:
        registry.log_decision(settings, kind, {"version": version, "promoted": False,
                                               "reason": f"promote={promote}, CURRENT={current}"})
    out = {"stage": "train-user-model", "rows": {"user_sequences": n_rows}, "version": version,
           "member": member, "kind": kind, "latent_health": health, "space": space,
           "promoted": promoted, "metrics": metrics, "table_version": table_version,
           "vocab_version": vocab_version, "resumed_from": result["resumed_from"], "model_dir": str(vdir),
           "world_size": result["world_size"]}
    done.write_text(json.dumps({k: v for k, v in out.items() if k != "resumed_from"}, default=str))
    return out


def _check_warm_start(settings: Settings, kind: str, init_from: str, config: Any, vocab_version: str,
                      member: str) -> str:
    """The weights file to warm-start from; a one-line error when the version's vocabulary or shapes differ."""
    from ubp import reader, registry

    src = registry.version_dir(settings, kind, init_from)
    src_manifest = json.loads((src / "model.json").read_text())
    reader.check_vocab_version(src_manifest["vocab_version"], vocab_version)
    src_cfg = json.loads((src / "config.json").read_text())
    shape_keys = ("vocab_sizes", "input_fields", "target_fields", "emb_dim", "hidden", "n_layers", "arch", "n_heads")
    if any(src_cfg.get(k) != config.to_dict().get(k) for k in shape_keys):
        raise UbpError(f"--init-from {init_from}: its config differs from member {member!r} in shape; "
                       "warm start needs the same architecture")
    return str(src / "weights.safetensors")


def _fit_serving(vdir: Path, post: Any, path: Path, table_version: int, val_fraction: float) -> dict:
    """Fit the member's serving transform on the training users (not the validation ones), store it with the
    version, append the latent health to metrics.jsonl; returns {"raw": health, "served": health}."""
    import numpy as np
    import pyarrow as pa

    from ubp import reader
    from ubp.models.infer_user import fit_serving_transform, load_network
    from ubp.models.user_data import columns_for, is_val_user

    model = load_network(vdir, device="cpu")
    cols = columns_for(model.config.input_fields + model.config.target_fields)

    def train_users():
        for rb in reader.iter_batches(path, version=table_version, columns=cols, batch_size=4096):
            ids = rb.column("client_id").to_numpy(zero_copy_only=False)
            keep = ~is_val_user(ids, val_fraction) if val_fraction > 0 else np.ones(len(ids), bool)
            yield rb.filter(pa.array(keep))

    transform, raw, served = fit_serving_transform(model, train_users(), post)
    transform.save(vdir)
    health = {"raw": raw, "served": served, "served_dim": transform.dim}
    with open(vdir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"latent_health": health}) + "\n")
    log.info("latent health (raw): %s", {k: round(v, 4) for k, v in raw.items()})
    return health


def _join_space(settings: Settings, kind: str, version: str, vdir: Path, path: Path, table_version: int,
                vocab_version: str, max_users: int = 20_000) -> dict:
    """Align the new version to the serving one and put it in a vector space (`ubp/spaces.py`).

    Both models encode the same users of the pinned `user_sequences` version (a hashed three quarters of them fit
    the rotation, the rest measure the error); when the vocabularies differ, the serving model's rows in the gold table
    stand in for its vectors. A joined space stores the rotation in the new version's serving transform."""
    import numpy as np

    from ubp import reader, registry, spaces
    from ubp.models.infer_user import encode_batches, load_model, load_network, read_manifest
    from ubp.models.latent import LatentTransform, align
    from ubp.models.user_data import columns_for

    family = spaces.kind_family(kind)
    new_model = load_network(vdir, device="cpu")  # its manifest is written after this
    new_model.serving_transform = LatentTransform.load(vdir)
    dim = new_model.serving_transform.dim
    current = registry.current_version(settings, kind)
    if current is None or current == version:
        return spaces.assign(settings, family, version, dim=dim)
    cur_dir = registry.version_dir(settings, kind, current)
    from ubp.stages.embed_users import version_space

    cur_space = version_space(settings, kind, current, cur_dir)  # a version from before spaces founds one
    same_vocab = read_manifest(cur_dir).get("vocab_version") == vocab_version
    old_model = load_model(cur_dir, device="cpu")[0] if same_vocab else None
    cols = columns_for(new_model.config.input_fields + new_model.config.target_fields)
    if old_model is not None:
        cols = sorted(set(cols) | set(columns_for(old_model.config.input_fields + old_model.config.target_fields)))

    def sample():
        n = 0
        for rb in reader.iter_batches(path, version=table_version, columns=cols, batch_size=4096):
            part = rb.slice(0, max_users - n)
            n += part.num_rows
            if part.num_rows:
                yield part
            if n >= max_users:
                return

    batches = list(sample())
    new = {int(c): v for ids, _, z in encode_batches(new_model, iter(batches)) for c, v in zip(ids, z, strict=True)}
    if old_model is not None:
        old = {int(c): v for ids, _, z in encode_batches(old_model, iter(batches)) for c, v in zip(ids, z, strict=True)}
    else:
        old = reader.version_vectors(settings.table_path(spaces.family_table(family)), current, "client_id",
                                     "embedding", keys=new)
    common = np.array(sorted(set(new) & set(old)), dtype=np.int64)
    if len(common) < 2 * dim or len(old[int(common[0])]) != dim:
        why = f"{len(common)} users shared with {current}: too few to align {dim} dimensions (or another dimension)"
        log.warning("space: %s", why)
        return spaces.assign(settings, family, version, dim=dim, why=why)
    rotation, err = align(np.stack([new[int(c)] for c in common]), np.stack([old[int(c)] for c in common]), common)
    out = spaces.assign(settings, family, version, dim=dim, aligned_to=current, alignment_error=err)
    out = {**out, "users": int(len(common)), "same_vocab": same_vocab}
    if out["space_id"] == cur_space:
        t = new_model.serving_transform
        LatentTransform(t.mean, t.components, t.scale, t.row_norm, rotation=rotation, aligned_to=current).save(vdir)
    return out


def fair_scores(settings: Settings, kind: str, candidate: str, current: str) -> dict[str, Any]:
    """Validation loss of the candidate and of the serving version on the SAME users (the candidate's validation
    split) of the SAME `user_sequences` version (the candidate's training snapshot); cached in the candidate's
    directory per serving version. Versions with another vocabulary cannot read the snapshot: {"comparable": False}."""
    from ubp import registry
    from ubp.models.infer_user import load_network, read_manifest
    from ubp.models.train_user import validation_metrics

    cdir, sdir = registry.version_dir(settings, kind, candidate), registry.version_dir(settings, kind, current)
    cache = cdir / "promotion_scores.json"
    scores = json.loads(cache.read_text()) if cache.exists() else {}
    if current in scores:
        return scores[current]
    cman, sman = read_manifest(cdir), read_manifest(sdir)
    table = cman.get("training_table") or {}
    out: dict[str, Any] = {"table_version": table.get("version"), "val_fraction": cman.get("val_fraction", 0.1)}
    if not table.get("path") or not Path(table["path"], "_delta_log").is_dir():
        out.update(comparable=False, reason="the candidate's training snapshot is not readable")
    elif sman.get("vocab_version") != cman.get("vocab_version"):
        out.update(comparable=False, reason="the serving version has another vocabulary")
    else:
        for name, vdir in (("candidate", cdir), ("current", sdir)):
            m = validation_metrics(load_network(vdir, device="cpu"), table["path"], table["version"],
                                   out["val_fraction"])
            out[name] = m["val_loss"]
        out["comparable"] = True
    scores[current] = out
    cache.write_text(json.dumps(scores, indent=2))
    return out


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m ubp.stages.train_user_model` / `torchrun -m ubp.stages.train_user_model`: the same stage as the CLI."""
    import argparse

    from ubp.log import setup_logging
    from ubp.models.members import MEMBERS

    p = argparse.ArgumentParser(prog="ubp.stages.train_user_model", description="Train one user-model member (DDP-ready).")
    p.add_argument("--lakehouse", default=None)
    p.add_argument("--namespace", default="")
    p.add_argument("--member", "--preset", dest="member", default=PRIMARY_USER_MEMBER, choices=sorted(MEMBERS))
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--promote", default="if_none", choices=["if_none", "always", "never"])
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--train-users", type=int, default=None, help="train on a stable sample of about N users")
    p.add_argument("--full-size", action="store_true", help="large members at full size without a GPU too")
    p.add_argument("--set", action="append", default=[], help="config override key=value (e.g. batch_size=64)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    settings = Settings(lakehouse=a.lakehouse) if a.lakehouse else Settings()
    if a.namespace:
        settings = settings.with_namespace(a.namespace)
    setup_logging(settings.logs_dir)
    result = train_user_model(settings, member=a.member, max_epochs=a.epochs, seed=a.seed, promote=a.promote,
                              overrides=_parse_set(a.set), val_fraction=a.val_fraction,
                              show_progress=not a.no_progress, full_size=a.full_size, train_users=a.train_users)
    if result.get("version"):
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, default=str))


if __name__ == "__main__":
    main()
