"""The whole pipeline in one call (`ubp run`), the stage runner the Airflow DAGs use, and model promotion.

Every step is a stage function from `ubp/stages/*`, listed once in `ubp/stage_registry.py`; this module runs them in
the registry's order, decides when to (re)train and
whether a freshly trained model replaces the serving one, and writes a short report. Importing it is cheap (no
pyspark, torch or feast at module import), so the DAG files and the CLI can import it at parse time.

It is also the entry point of a stage submitted with `spark-submit` (see `main`), so cluster runs call exactly
the same functions as in-process runs.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ubp import registry, stage_registry
from ubp.config import Settings
from ubp.errors import UbpError
from ubp.log import get_logger

log = get_logger(__name__)

# stage name -> (module, function), from the stage registry. The names are also the Airflow task ids.
STAGES: dict[str, tuple[str, str]] = {s.name: (s.module, s.attr) for s in stage_registry.STAGES}
# Stages that run Spark jobs (in spark-submit mode the DAGs send their Spark tasks to the cluster).
SPARK_STAGES: tuple[str, ...] = tuple(s.name for s in stage_registry.STAGES if s.spark)
# Validation metric compared at promotion, per model kind; direction is inferred from the name (see below).
DEFAULT_METRIC: dict[str, str] = {"user": "val_loss", "item": "best_val_ndcg@10"}
DEFAULT_THRESHOLD = 0.01  # a candidate may be at most 1% worse than the serving model and still be promoted
_LOWER_IS_BETTER = ("loss", "error", "perplexity", "mse", "mae")


# ---------------------------------------------------------------------------------------------------------------
# stage registry
# ---------------------------------------------------------------------------------------------------------------
def stage_function(name: str) -> Callable[..., dict]:
    """The stage function behind a stage name (imported lazily: importing a stage module is cheap anyway)."""
    if name not in STAGES:
        raise UbpError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
    module_name, func_name = STAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise UbpError(f"stage {name!r} is not available: module {module_name} is missing") from exc
        raise
    try:
        return getattr(module, func_name)
    except AttributeError as exc:
        raise UbpError(f"stage {name!r} is not available: {module_name}.{func_name} is missing") from exc


def _accepts(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def run_stage(settings: Settings, name: str, **kwargs: Any) -> dict:
    """Run one stage by name with logging and timing.

    Keyword arguments whose value is None are dropped when the stage does not take them (so callers can pass
    optional knobs such as `as_of=None` uniformly); any other argument the stage does not take is an error.
    """
    fn = stage_function(name)
    call: dict[str, Any] = {}
    for key, value in kwargs.items():
        if _accepts(fn, key):
            call[key] = value
        elif value is not None:
            raise UbpError(f"stage {name!r} does not take the option {key!r}")
    log.info("stage %s: start %s", name, {k: _jsonable(v) for k, v in call.items()})
    t0 = time.perf_counter()
    result = fn(settings, **call)
    seconds = round(time.perf_counter() - t0, 2)
    result = dict(result or {})
    result.setdefault("stage", name)
    result.setdefault("rows", {})
    result["seconds"] = seconds
    log.info("stage %s: done in %.1fs rows=%s", name, seconds, result.get("rows"))
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def parse_as_of(value: str | datetime | None) -> datetime | None:
    """ISO date or datetime (naive means UTC) -> aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise UbpError(f"--as-of expects an ISO date or datetime (e.g. 2025-06-01), got {value!r}") from exc
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---------------------------------------------------------------------------------------------------------------
# promotion
# ---------------------------------------------------------------------------------------------------------------
def version_metrics(settings: Settings, kind: str, version: str) -> dict:
    """Validation metrics a training run stored with its version, flattened into one dict.

    Sources, later ones filling gaps: `metrics.json`; the `metrics` entry of `model.json` (user model manifest);
    the `metrics` entry and the validation numbers of the `train` entry of `config.json` (item model info).
    """
    path = registry.version_dir(settings, kind, version)
    out: dict[str, Any] = {}

    def load(name: str) -> dict:
        f = path / name
        try:
            data = json.loads(f.read_text()) if f.is_file() else {}
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    for key, value in load("metrics.json").items():
        out.setdefault(key, value)
    for name in ("model.json", "config.json"):
        data = load(name)
        for key, value in (data.get("metrics") or {}).items() if isinstance(data.get("metrics"), dict) else ():
            out.setdefault(key, value)
        train = data.get("train")
        if isinstance(train, dict):
            for key, value in train.items():
                if "val" in key and not isinstance(value, (dict, list)):
                    out.setdefault(key, value)
    return out


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def _metric_value(metrics: dict, metric: str) -> float | None:
    value = metrics.get(metric)
    if value is None and isinstance(metrics.get("best"), dict):  # some trainers nest the best epoch's numbers
        value = metrics["best"].get(metric)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def compare_models(
    settings: Settings, kind: str, candidate_version: str, threshold: float = DEFAULT_THRESHOLD,
    metric: str | None = None,
) -> dict:
    """Would `candidate_version` be promoted over the serving model? No side effects.

    `worse_by` is the candidate's relative degradation of `metric` versus the current model (positive = worse);
    the candidate passes when `worse_by <= threshold`. With no current model, any candidate with the metric passes.
    """
    metric = metric or DEFAULT_METRIC.get(kind, "val_loss")
    registry.version_dir(settings, kind, candidate_version)
    current = registry.current_version(settings, kind)
    cand_value = _metric_value(version_metrics(settings, kind, candidate_version), metric)
    out: dict[str, Any] = {
        "kind": kind, "candidate": candidate_version, "current": current, "metric": metric,
        "lower_is_better": lower_is_better(metric), "threshold": threshold,
        "candidate_value": cand_value, "current_value": None, "worse_by": None,
    }
    if current == candidate_version:
        return {**out, "promote": False, "reason": "candidate is already the current model"}
    if current is None:
        return {**out, "promote": True, "reason": "no current model"}
    if cand_value is None:
        return {**out, "promote": False, "reason": f"candidate has no finite validation {metric!r}"}
    cur_value = _metric_value(version_metrics(settings, kind, current), metric)
    if metric == "val_loss" and kind.split("-")[0] == registry.USER_KIND:  # re-score both on the same users + data
        from ubp.stages.train_user_model import fair_scores

        fair = fair_scores(settings, kind, candidate_version, current)
        out["scored_on"] = fair
        if fair.get("comparable"):
            cand_value, cur_value = _metric_value(fair, "candidate"), _metric_value(fair, "current")
            out["candidate_value"] = cand_value
    out["current_value"] = cur_value
    if cur_value is None:
        return {**out, "promote": True, "reason": f"current model has no validation {metric!r} to compare"}
    diff = (cand_value - cur_value) if out["lower_is_better"] else (cur_value - cand_value)
    worse_by = diff / max(abs(cur_value), 1e-12)
    out["worse_by"] = round(worse_by, 6)
    if worse_by > threshold:
        reason = (f"candidate {metric}={cand_value:.6g} is {worse_by:.2%} worse than current {cur_value:.6g} "
                  f"(threshold {threshold:.2%}); keeping {current}")
        return {**out, "promote": False, "reason": reason}
    reason = (f"candidate {metric}={cand_value:.6g} vs current {cur_value:.6g} "
              f"({-worse_by:+.2%} better; threshold {threshold:.2%})")
    return {**out, "promote": True, "reason": reason}


def promote_if_not_worse(
    settings: Settings, kind: str, candidate_version: str, threshold: float = DEFAULT_THRESHOLD,
    metric: str | None = None,
) -> dict:
    """Point CURRENT at the candidate unless its validation metric is worse than the serving model's by more than
    `threshold` (relative). Either way the decision and its reason go to `<models>/<kind>/promotions.jsonl`."""
    decision = compare_models(settings, kind, candidate_version, threshold=threshold, metric=metric)
    if decision["candidate"] == decision["current"]:  # e.g. training reused an already-serving version
        log.info("%s model %s is already current", kind, candidate_version)
        return {**decision, "promoted": False, "serving": decision["current"]}
    record = {k: decision[k] for k in ("metric", "candidate_value", "current_value", "worse_by", "threshold")}
    if decision["promote"]:
        registry.promote(settings, kind, candidate_version, reason=decision["reason"])
        log.info("%s model %s promoted: %s", kind, candidate_version, decision["reason"])
    else:
        registry.log_decision(settings, kind, {
            "version": candidate_version, "promoted": False, "reason": decision["reason"],
            "kept": decision["current"], **record,
        })
        log.warning("%s model %s NOT promoted: %s", kind, candidate_version, decision["reason"])
    return {**decision, "promoted": bool(decision["promote"]), "serving": registry.current_version(settings, kind)}


# ---------------------------------------------------------------------------------------------------------------
# the whole pipeline
# ---------------------------------------------------------------------------------------------------------------
def _train(settings: Settings, kind: str, stage: str, retrain: bool, threshold: float, steps: list[dict],
           decisions: list[dict], **kwargs: Any) -> None:
    current = registry.current_version(settings, kind)
    if current is not None and not retrain:
        log.info("%s model %s is current; not retraining (use --retrain)", kind, current)
        steps.append({"stage": stage, "skipped": f"current {kind} model {current} kept (no --retrain)",
                      "rows": {}})
        return
    result = run_stage(settings, stage, promote="never", **kwargs)
    steps.append(result)
    version = result.get("version")
    if not version:
        raise UbpError(f"{stage} returned no model version")
    decisions.append(promote_if_not_worse(settings, kind, version, threshold=threshold))


def run_pipeline(
    settings: Settings,
    raw_dir: str | Path | None,
    retrain: bool = False,
    as_of: datetime | None = None,
    publish: bool = True,
    user_members: tuple[str, ...] | None = None,
    user_max_epochs: int | None = None,
    item_variant: str = "delta",
    item_max_epochs: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    train_users: int | None = None,
) -> dict:
    """Run every stage in the registry's order (`ubp.stage_registry.run_order`) and return a report.

    ingest (when `raw_dir` is given) -> sequences -> aggregates -> per GRU-AE member (`user_members`, default
    `models.members.DEFAULT_MEMBERS`): train it (when none is serving or `retrain`) and embed users -> item
    content -> item model (same rule) -> item vectors -> ensemble -> publish.
    A retrained model only replaces the serving one when its validation metric is not worse than `threshold`.
    `train_users`: the models train on a stable hashed sample of about this many users (at scale); every user is
    still embedded.
    Every stage is idempotent for the same inputs, so re-running the pipeline changes nothing.
    """
    t0 = time.perf_counter()
    steps: list[dict] = []
    decisions: list[dict] = []
    raw = None
    if raw_dir is not None:
        raw = Path(raw_dir).expanduser()
        if not raw.is_dir():
            raise UbpError(f"raw data folder {raw} does not exist")
    from ubp.models.members import DEFAULT_MEMBERS

    members = tuple(user_members or DEFAULT_MEMBERS)
    options: dict[str, dict[str, Any]] = {
        "ingest": {"raw_dir": raw},
        "train_user_model": {"max_epochs": user_max_epochs, "seed": seed, "init_from": "current",
                             "train_users": train_users},
        "train_item_model": {"variant": item_variant, "max_epochs": item_max_epochs, "seed": seed,
                             "train_users": train_users},
    }
    for stage in stage_registry.run_order():
        if (stage.name == "ingest" and raw is None) or (stage.name == "publish" and not publish):
            continue
        kwargs = {**options.get(stage.name, {}), **({"as_of": as_of} if stage.as_of else {})}
        for member in members if stage.per_member else (None,):
            kw = {**kwargs, **({"member": member} if member else {})}
            if stage.model:
                kind = registry.user_kind(member) if member else stage.model
                _train(settings, kind, stage.name, retrain, threshold, steps, decisions, **kw)
            else:
                steps.append(run_stage(settings, stage.name, **kw))
    return build_report(settings, steps, decisions, seconds=time.perf_counter() - t0, published_flag=publish)


def build_report(settings: Settings, steps: list[dict], decisions: list[dict], seconds: float,
                 published_flag: bool) -> dict:
    """What ran, rows per table (as the stages reported them), serving models, where the outputs are."""
    rows: dict[str, Any] = {}
    published: dict[str, Any] = {}
    for step in steps:
        name = str(step.get("stage", "")).replace("-", "_")
        if name == "publish":  # rows written to the online store per feature view (0 when nothing changed)
            published.update(step.get("rows") or {})
        elif not name.startswith("train"):  # training steps report sample counts, not table rows
            rows.update(step.get("rows") or {})
    from ubp.tables import TABLES

    outputs = {name: str(settings.table_path(name)) for name in TABLES}
    return _jsonable({
        "stage": "pipeline",
        "rows": rows,
        "steps": [
            {k: v for k, v in step.items() if k in ("stage", "seconds", "rows", "version", "skipped")}
            for step in steps
        ],
        "models": {kind: registry.current_version(settings, kind) for kind in ("user", "item")},
        "decisions": [{k: d.get(k) for k in ("kind", "candidate", "promoted", "reason")} for d in decisions],
        "published": published_flag,
        "published_rows": published,
        "seconds": round(seconds, 1),
        "lakehouse": str(settings.lakehouse),
        "outputs": outputs,
        "models_dir": str(settings.models_dir),
        "feast_dir": str(settings.feast_dir),
        "logs": str(settings.logs_dir / "ubp.log"),
        "how_to_read": [
            f"ubp --lakehouse {settings.lakehouse} demo-readback   # one profile + a cold item's neighbours from Feast",
            "python: from ubp.stages.publish import profile; profile(Settings(lakehouse=...), client_id)",
            f"Delta/SQL: spark.read.format('delta').load('{settings.table_path('user_profiles_ensemble')}')",
        ],
    })


def format_report(report: dict) -> str:
    """Plain-text rendering of `run_pipeline`'s report for the terminal."""
    lines = [f"ubp run finished in {report.get('seconds')}s  (lakehouse {report.get('lakehouse')})", "", "steps:"]
    for step in report.get("steps", []):
        extra = step.get("skipped") or (f"version {step['version']}" if step.get("version") else "")
        seconds = f"{step['seconds']:>7.1f}s" if step.get("seconds") is not None else " " * 8
        lines.append(f"  {step['stage']:<18}{seconds}  {extra}")
    lines += ["", "rows per table:"]
    for table, count in report.get("rows", {}).items():
        lines.append(f"  {table:<26}{count}")
    if report.get("published_rows"):
        lines += ["", "written to the Feast online store (changed entities only):"]
        for view, count in report["published_rows"].items():
            lines.append(f"  {view:<26}{count}")
    lines += ["", "serving models:"]
    for kind, version in report.get("models", {}).items():
        lines.append(f"  {kind:<6}{version}")
    for d in report.get("decisions", []):
        lines.append(f"  {d['kind']} candidate {d['candidate']}: {'promoted' if d['promoted'] else 'kept current'}"
                     f" ({d['reason']})")
    outputs = report.get("outputs", {})
    lines += ["", "outputs:"]
    for table in ("user_profiles_ensemble", "user_profiles", "user_aggregates", "item_vectors"):
        if table in outputs:
            lines.append(f"  {table:<26}{outputs[table]}")
    lines.append(f"  {'models':<26}{report.get('models_dir')}")
    lines.append(f"  {'feast':<26}{report.get('feast_dir')}" + ("" if report.get("published") else "  (not published)"))
    lines.append(f"  {'log':<26}{report.get('logs')}")
    lines += ["", "read a profile:"] + [f"  {h}" for h in report.get("how_to_read", [])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# spark-submit entry point: `spark-submit ubp/stages/pipeline.py --stage sequences --lakehouse ... --as-of ...`
# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one ubp stage (used by spark-submit from Airflow).")
    parser.add_argument("--stage", required=True, choices=sorted(STAGES))
    parser.add_argument("--lakehouse", required=True)
    parser.add_argument("--as-of", default=None, help="ISO datetime (UTC) for stages that take an as-of")
    parser.add_argument("--kwargs", default="{}", help="JSON object of extra stage options")
    parser.add_argument("--result", default=None, help="write the stage's summary JSON here")
    args = parser.parse_args(argv)
    from ubp.log import setup_logging

    settings = Settings(lakehouse=args.lakehouse)
    setup_logging(settings.logs_dir)
    kwargs = json.loads(args.kwargs)
    if args.as_of:
        kwargs["as_of"] = parse_as_of(args.as_of)
    result = run_stage(settings, args.stage, **kwargs)
    text = json.dumps(_jsonable(result))
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
