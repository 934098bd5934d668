"""Light helpers shared by the ubp DAG files: configuration, table assets, the stage-task wrapper.

Parsing must stay cheap (all DAG files < 2 s, no torch / pyspark / feast): this module imports only the standard
library, `airflow.sdk` and the stdlib-only core of ubp (`ubp.config`, `ubp.tables`, `ubp.stage_registry`). Stage
code is imported inside the tasks. It is listed in `.airflowignore`, so the DAG processor does not parse it as a DAG file.

Configuration, highest precedence first:
  runtime knobs  - the run's Param (trigger form / `dag_run.conf`) -> Airflow Variable `ubp_<name>` ->
                   environment variable `UBP_<NAME>` -> the default in `RUNTIME_DEFAULTS`
  parse-time     - environment only (they shape the graph or the asset URIs): see `PARSE_DEFAULTS`
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, Param

from ubp.config import DEFAULT_LAKEHOUSE, Settings
from ubp.registry import DEFAULT_USER_MEMBERS, PRIMARY_USER_MEMBER, user_kind  # noqa: F401  (DAGs: c.user_kind)
from ubp.stage_registry import STAGES, views_fed_by
from ubp.tables import TABLES

# ---------------------------------------------------------------------------------------------------------------
# parse-time configuration (environment of the DAG processor and the workers)
# ---------------------------------------------------------------------------------------------------------------
PARSE_DEFAULTS: dict[str, str] = {
    "UBP_LAKEHOUSE": DEFAULT_LAKEHOUSE,  # lakehouse root: asset URIs and the runtime default
    "UBP_SPARK_MODE": "local",  # local: Spark stages run in the task process; submit: SparkSubmitOperator
    "UBP_SPARK_CONN_ID": "spark_default",  # Airflow connection used by spark-submit (master, deploy mode...)
    "UBP_TRAIN_QUEUE": "default",  # executor queue of training tasks (e.g. a GPU worker queue)
    "UBP_TRAIN_POOL": "default_pool",  # pool of training tasks (limit concurrent GPU jobs)
    "UBP_AIRFLOW_RETRIES": "3",  # retries of every task
    "UBP_AIRFLOW_RETRY_DELAY_S": "300",  # first retry delay; doubles each retry (exponential backoff), max 1 h
}


def parse_env(name: str) -> str:
    return os.environ.get(name) or PARSE_DEFAULTS[name]


SPARK_MODE = parse_env("UBP_SPARK_MODE").strip().lower()
if SPARK_MODE not in ("local", "submit"):
    raise ValueError(f"UBP_SPARK_MODE must be 'local' or 'submit', got {SPARK_MODE!r}")
TRAIN_QUEUE = parse_env("UBP_TRAIN_QUEUE")
TRAIN_POOL = parse_env("UBP_TRAIN_POOL")
# The spark-submit application: the stage runner in ubp/stages/pipeline.py, found without importing it.
SPARK_ENTRY = str(Path(__import__("ubp").__file__).parent / "stages" / "pipeline.py")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ubp",
    "retries": int(parse_env("UBP_AIRFLOW_RETRIES")),
    "retry_delay": timedelta(seconds=float(parse_env("UBP_AIRFLOW_RETRY_DELAY_S"))),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(hours=1),
}
START_DATE = datetime(2025, 1, 1, tzinfo=UTC)

# ---------------------------------------------------------------------------------------------------------------
# assets: one per Delta table (file://<lakehouse>/<layer>/<table>) and one per model kind (its registry folder)
# ---------------------------------------------------------------------------------------------------------------
ASSET_SETTINGS = Settings(lakehouse=parse_env("UBP_LAKEHOUSE"))


def table_asset(name: str) -> Asset:
    """The Asset of a lakehouse table, by its contract name in `ubp.tables`."""
    table = TABLES[name]
    return Asset(uri=f"file://{ASSET_SETTINGS.table_path(name)}", name=f"ubp.{table.layer}.{name}", group="ubp")


def model_asset(kind: str) -> Asset:
    """Updated when a model of `kind` ("user" | "item") is promoted to CURRENT."""
    return Asset(uri=f"file://{ASSET_SETTINGS.models_dir / kind}", name=f"ubp.model.{kind}", group="ubp")


def changes_alias(task_id: str) -> AssetAlias:
    """The outlet of a stage task: through it the task emits an event for each table it actually changed (a static
    outlet would emit on every run, e.g. `products` on a day without a catalog file, re-running `item_vectors`)."""
    return AssetAlias(name=f"ubp.changes.{task_id}", group="ubp")


USER_MEMBERS: tuple[str, ...] = DEFAULT_USER_MEMBERS  # one training group and one embed task per member


def embed_task_id(member: str) -> str:
    """`embed_users` for the served member, `embed_users_<member>` for the others."""
    return "embed_users" if member == PRIMARY_USER_MEMBER else f"embed_users_{member}"


def any_model_asset(*kinds: str):
    """An asset condition that fires when any of these models is promoted."""
    cond = model_asset(kinds[0])
    for kind in kinds[1:]:
        cond = cond | model_asset(kind)
    return cond


def assets(*names: str) -> list[Asset]:
    return [table_asset(n) for n in names]


# Which tables each stage writes (the task's outlets), from the stage registry.
STAGE_OUTLETS: dict[str, tuple[str, ...]] = {s.name: s.writes for s in STAGES if s.writes}

# ---------------------------------------------------------------------------------------------------------------
# runtime configuration: Param -> Variable ubp_<name> -> env UBP_<NAME> -> default
# ---------------------------------------------------------------------------------------------------------------
RUNTIME_DEFAULTS: dict[str, Any] = {
    "lakehouse": DEFAULT_LAKEHOUSE,  # lakehouse root
    "raw_dir": None,  # raw drop folder ingested daily; None: <lakehouse>/_landing
    "feast_online": None,  # Feast online store: sqlite | redis; None: sqlite (UBP_REDIS_URL for redis)
    "spark_master": None,  # None: local[2] (or the master spark-submit sets)
    "user_max_epochs": None,  # None: the preset's
    "item_variant": "delta",  # item model variant
    "item_max_epochs": None,
    "promote_threshold": 0.01,  # relative validation-metric degradation still accepted at promotion
    "as_of": None,  # override the as-of (ISO datetime); None: the run's data interval end
}
_CASTS: dict[str, Any] = {"user_max_epochs": int, "item_max_epochs": int, "promote_threshold": float}


# JSON schema of each Param: the trigger form and `dag_run.conf` are checked against it when a run is created
# (null / empty = Variable, env or default; `validate_config` checks the resolved values at the start of a run).
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "lakehouse": {"type": ["null", "string"]},
    "raw_dir": {"type": ["null", "string"]},
    "feast_online": {"type": ["null", "string"], "enum": [None, "", "sqlite", "redis"]},
    "spark_master": {"type": ["null", "string"]},
    "user_max_epochs": {"type": ["null", "integer"], "minimum": 1},
    "item_variant": {"type": ["null", "string"]},
    "item_max_epochs": {"type": ["null", "integer"], "minimum": 1},
    "promote_threshold": {"type": ["null", "number"], "minimum": 0},
    "as_of": {"type": ["null", "string"]},
}


def params(*names: str) -> dict[str, Param]:
    """Params (trigger-form fields) for the given knobs, typed; null means 'Variable, env or default'."""
    docs = {
        "lakehouse": "Lakehouse root. Empty: Variable ubp_lakehouse, env UBP_LAKEHOUSE, ./lakehouse.",
        "raw_dir": "Landing folder (flat, or one <YYYY-MM-DD> folder per day). Empty: Variable ubp_raw_dir, env "
                   "UBP_RAW_DIR, <lakehouse>/_landing.",
        "feast_online": "Online store sqlite|redis. Empty: Variable ubp_feast_online, env UBP_FEAST_ONLINE, sqlite.",
        "spark_master": "Spark master. Empty: Variable ubp_spark_master, env UBP_SPARK_MASTER, local[2].",
        "user_max_epochs": "Epoch cap. Empty: Variable ubp_user_max_epochs, env, the preset's.",
        "item_variant": "Item model variant. Empty: Variable ubp_item_variant, env UBP_ITEM_VARIANT, delta.",
        "item_max_epochs": "Epoch cap. Empty: Variable ubp_item_max_epochs, env, the trainer's.",
        "promote_threshold": "Accepted relative degradation. Empty: Variable ubp_promote_threshold, env, 0.01.",
        "as_of": "ISO datetime. Empty: the run's data interval end (idempotent re-runs and backfills).",
    }
    return {n: Param(None, description=docs[n], **PARAM_SCHEMAS[n]) for n in names}


def conf(params_: dict | None, name: str) -> Any:
    """Resolve one runtime knob (see the module docstring). Called inside tasks and templates only."""
    value = (params_ or {}).get(name)
    if value in (None, ""):
        from airflow.sdk import Variable

        value = Variable.get(f"ubp_{name}", default=None)
    if value in (None, ""):
        value = os.environ.get(f"UBP_{name.upper()}")
    if value in (None, ""):
        value = RUNTIME_DEFAULTS[name]
        if name == "raw_dir":
            value = str(Path(conf(params_, "lakehouse")) / "_landing")
    if value is not None and name in _CASTS:
        value = _CASTS[name](value)
    return value


def settings_of(context: dict) -> Settings:
    p = context.get("params")
    return Settings(lakehouse=conf(p, "lakehouse"), master=conf(p, "spark_master"))


def as_of_of(context: dict) -> datetime:
    """The run's as-of: the `as_of` knob, else the data interval end (scheduled runs and backfills), else the
    logical date, else (asset-triggered runs) the start of the run's day, so any re-run of a day is idempotent."""
    explicit = conf(context.get("params"), "as_of")
    if explicit:
        from ubp.stages.pipeline import parse_as_of

        return parse_as_of(explicit)
    value = context.get("data_interval_end") or context.get("logical_date")
    if value is None:
        run_after = context["dag_run"].run_after
        value = datetime(run_after.year, run_after.month, run_after.day, tzinfo=UTC)
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def as_of_template(params_: dict | None, data_interval_end: Any, logical_date: Any, dag_run: Any) -> str:
    """Jinja macro for spark-submit arguments: the same as-of as `as_of_of`."""
    ctx = {"params": params_, "data_interval_end": data_interval_end, "logical_date": logical_date,
           "dag_run": dag_run}
    return as_of_of(ctx).isoformat()


# ---------------------------------------------------------------------------------------------------------------
# stage options per stage, and the task wrapper
# ---------------------------------------------------------------------------------------------------------------
AS_OF_STAGES = tuple(s.name for s in STAGES if s.as_of)


LANDING_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def landing_dir(raw_dir: str, as_of: datetime | None) -> str:
    """The folder a run ingests. Landing layout: `<raw_dir>/<YYYY-MM-DD>/<input>.parquet|<input>/` with one folder
    per day, and a run reads only the day that ends at its as-of (the data interval), so the daily run does not
    re-read the whole history. A flat `raw_dir` (no dated folder in it) is read whole, as before."""
    root = Path(raw_dir)
    if as_of is None or not root.is_dir():
        return str(root)
    if not any(p.is_dir() and LANDING_DAY.match(p.name) for p in root.iterdir()):
        return str(root)
    day = (as_of - timedelta(microseconds=1)).strftime("%Y-%m-%d")  # as-of 2025-07-02 00:00 -> 2025-07-01
    return str(root / day)


def stage_kwargs(stage: str, params_: dict | None, as_of: datetime | None = None) -> dict[str, Any]:
    """Stage options that come from configuration (the as-of is added separately; ingest uses it to pick the
    landing day)."""
    if stage == "ingest":
        return {"raw_dir": landing_dir(conf(params_, "raw_dir"), as_of)}
    if stage == "train_user_model":  # the member comes from the task (one task group per member)
        return {"max_epochs": conf(params_, "user_max_epochs"), "promote": "never", "init_from": "current"}
    if stage == "train_item_model":
        return {"variant": conf(params_, "item_variant"), "max_epochs": conf(params_, "item_max_epochs"),
                "promote": "never"}
    return {}


class InjectedFailure(RuntimeError):
    """Raised by `run_stage_task` when the test hook UBP_INJECT_FAILURE asks for it (`ubp/hooks.py`)."""


def _injection(task_id: str, try_number: int) -> str | None:
    """UBP_INJECT_FAILURE="task_id[:before|after],...": fail that task's FIRST try before the stage runs or after
    it committed (default after: the retry must then find the work done and change nothing)."""
    if try_number != 1:
        return None
    from ubp.hooks import current

    for item in filter(None, (s.strip() for s in current().inject_failure.split(","))):
        name, _, when = item.partition(":")
        if name == task_id:
            return when or "after"
    return None


def run_stage_task(stage: str, context: dict, **extra: Any) -> dict:
    """Body of every stage task: resolve settings and options, run the stage function, return its summary; then
    emit an asset event (through the task's `changes_alias`) for each table the stage actually changed."""
    from ubp.stages.pipeline import _jsonable, run_stage

    ti = context["ti"]
    settings = settings_of(context)
    as_of = as_of_of(context)
    kwargs = {**stage_kwargs(stage, context.get("params"), as_of if stage == "ingest" else None), **extra}
    if stage in AS_OF_STAGES:
        kwargs["as_of"] = as_of
    if stage == "ingest" and not Path(kwargs["raw_dir"]).is_dir():
        from ubp.errors import UbpError

        raise UbpError(f"raw folder {kwargs['raw_dir']} does not exist: set the raw_dir Param or Variable ubp_raw_dir"
                       " (a dated landing folder needs the day of the run's data interval)")
    before = _versions_before(settings, stage, context)
    injected = _injection(ti.task_id, ti.try_number)
    if injected == "before":
        raise InjectedFailure(f"injected failure before {stage} (try {ti.try_number})")
    result = run_stage(settings, stage, **kwargs)
    if injected == "after":
        raise InjectedFailure(f"injected failure after {stage} committed (try {ti.try_number})")
    changed = changed_tables(settings, stage, before)
    events = context.get("outlet_events")
    if events is not None and STAGE_OUTLETS.get(stage):
        alias = changes_alias(ti.task_id)
        for name in changed:
            events[alias].add(table_asset(name))
    print(f"{stage}: changed tables {changed or 'none'} (asset events for these only)")
    return {**_jsonable(result), "changed_tables": changed}


def _versions_before(settings: Settings, stage: str, context: dict) -> dict[str, int | None]:
    """The Delta version of each table the stage writes, as the run's FIRST try found it: kept in a file under
    `<lakehouse>/_logs/airflow/`, so a retry after a committed-then-failed try still reports the change."""
    from ubp.delta_log import latest_version

    names = STAGE_OUTLETS.get(stage, ())
    if not names:
        return {}
    ti, run_id = context["ti"], context.get("run_id") or "manual"
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(ti, "dag_id", "dag")
    started = getattr(context.get("dag_run"), "start_date", None)  # a new run of the same run_id: a new baseline
    run_key = f"{run_id}-{started.timestamp():.0f}" if started else str(run_id)
    mark = (settings.logs_dir / "airflow" / str(dag_id) / run_key.replace("/", "_").replace(":", "_")
            / f"{ti.task_id}.before.json")
    if mark.is_file():
        return json.loads(mark.read_text())
    before = {n: latest_version(settings.table_path(n)) for n in names}
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps(before))
    return before


def changed_tables(settings: Settings, stage: str, before: dict[str, int | None]) -> list[str]:
    """The tables of `stage` whose data changed since the versions in `before`."""
    from ubp.delta_log import data_changed

    return [n for n in STAGE_OUTLETS.get(stage, ()) if data_changed(settings.table_path(n), before.get(n))]


def submit_args(stage: str, task_id: str, **extra: Any) -> list[str]:
    """spark-submit application arguments (templated) for a stage; mirrors `run_stage_task`."""
    lake = "{{ ubp_conf(params, 'lakehouse') }}"
    as_of = "ubp_as_of(params, data_interval_end, logical_date, dag_run)"
    args = ["--stage", stage, "--lakehouse", lake,
            "--kwargs", "{{ ubp_stage_kwargs('" + stage + "', params, " + json.dumps(extra) + ", " + as_of + ") }}",
            "--result", lake + "/_logs/airflow/{{ dag.dag_id }}/{{ run_id }}/" + task_id + ".json"]
    if stage in AS_OF_STAGES:
        args += ["--as-of", "{{ " + as_of + " }}"]
    return args


def spark_jars() -> str:
    """The jars a spark-submit task ships with the job (`--jars`, comma-separated): `UBP_DELTA_JARS` of the worker,
    else the Delta jars of `ubp.jars` (cached; fetched once with Maven). Resolved when the task runs."""
    from ubp.jars import ensure_delta_jars

    return os.environ.get("UBP_DELTA_JARS") or ",".join(ensure_delta_jars())


def spark_python() -> str:
    """The Python of the spark-submit driver and of the executors' Python workers (`spark.pyspark.python`), one with
    ubp installed: `UBP_SPARK_PYTHON` of the worker, else the interpreter running the task. Resolved at run time."""
    import sys

    return os.environ.get("UBP_SPARK_PYTHON") or sys.executable


# spark-submit's --conf of every Spark stage task (templated: resolved on the worker when the task runs). Resources
# (executor memory and cores, shuffle partitions, ...) come from the cluster's spark-defaults.conf (SPARK_CONF_DIR).
SUBMIT_CONF: dict[str, str] = {"spark.pyspark.python": "{{ ubp_spark_python() }}"}

USER_MACROS: dict[str, Any] = {
    "ubp_conf": conf,
    "ubp_spark_jars": spark_jars,
    "ubp_spark_python": spark_python,
    "ubp_as_of": as_of_template,
    "ubp_stage_kwargs": lambda stage, p, extra=None, as_of=None: json.dumps(
        {**stage_kwargs(stage, p, datetime.fromisoformat(as_of) if as_of else None), **(extra or {})}),
}

# What every ubp DAG shares: one run at a time, no backfill of missed intervals, retries, the Jinja macros.
DAG_DEFAULTS: dict[str, Any] = {
    "start_date": START_DATE,
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
    "user_defined_macros": USER_MACROS,
}


def spark_stage(stage: str, task_id: str | None = None, **extra: Any):
    """A task running a Spark stage: in the task process (default) or via SparkSubmitOperator
    (UBP_SPARK_MODE=submit, connection UBP_SPARK_CONN_ID). Outlets are the tables the stage writes; `extra` are
    fixed stage options (e.g. the GRU-AE member of an `embed_users` task)."""
    from airflow.sdk import task

    task_id = task_id or stage
    outlets = assets(*STAGE_OUTLETS.get(stage, ()))  # spark-submit: no Python after the stage, every table
    if SPARK_MODE == "submit":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        return SparkSubmitOperator(
            task_id=task_id, application=SPARK_ENTRY, conn_id=parse_env("UBP_SPARK_CONN_ID"),
            name=f"ubp-{task_id}", application_args=submit_args(stage, task_id, **extra), outlets=outlets,
            jars="{{ ubp_spark_jars() }}", conf=dict(SUBMIT_CONF),  # Delta shipped with the job; ubp's Python
        )

    @task(task_id=task_id, outlets=stage_outlets(stage, task_id))
    def _stage(**context: Any) -> dict:
        return run_stage_task(stage, context, **extra)

    return _stage()


def stage_outlets(stage: str, task_id: str) -> list[AssetAlias]:
    """A Python stage task's outlet: its `changes_alias` when the stage writes tables (events per changed table)."""
    return [changes_alias(task_id)] if STAGE_OUTLETS.get(stage) else []


def python_stage(stage: str, task_id: str | None = None, **task_kwargs: Any):
    """A task running a non-Spark stage (training, publishing) in the task process."""
    from airflow.sdk import task

    @task(task_id=task_id or stage, outlets=stage_outlets(stage, task_id or stage), **task_kwargs)
    def _stage(**context: Any) -> dict:
        return run_stage_task(stage, context)

    return _stage()


def check_config(params_: dict | None, names: tuple[str, ...], as_of: datetime | None = None) -> dict[str, Any]:
    """Resolve the run's knobs (Param -> Variable -> env -> default) and check them all; the problems raise ONE
    UbpError line, before any Spark stage starts. Returns the resolved values (the task's XCom, for the log)."""
    from ubp.errors import UbpError

    values: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        try:
            values[name] = conf(params_, name)
        except (TypeError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    online = values.get("feast_online")
    if "feast_online" in values and str(online or "sqlite").lower() not in ("sqlite", "redis"):
        problems.append(f"feast_online must be sqlite or redis, got {online!r}")
    for name in ("user_max_epochs", "item_max_epochs"):
        if values.get(name) is not None and values[name] < 1:
            problems.append(f"{name} must be >= 1, got {values[name]}")
    if values.get("promote_threshold") is not None and values["promote_threshold"] < 0:
        problems.append(f"promote_threshold must be >= 0, got {values['promote_threshold']}")
    if values.get("as_of"):
        try:
            datetime.fromisoformat(str(values["as_of"]))
        except ValueError:
            problems.append(f"as_of must be an ISO date or datetime, got {values['as_of']!r}")
    if not str(values.get("lakehouse") or "").strip() and "lakehouse" in names:
        problems.append("lakehouse is empty")
    if "raw_dir" in values and not problems:
        folder = landing_dir(values["raw_dir"], as_of)
        if not Path(folder).is_dir():
            problems.append(f"raw folder {folder} does not exist")
        values["landing"] = folder
    if problems:
        raise UbpError("invalid configuration: " + "; ".join(problems))
    return values


def validate_config(*names: str):
    """The first task of a DAG: `check_config` of its knobs, so a bad value fails in seconds, not after Spark."""
    from airflow.sdk import task

    @task(task_id="validate_config")  # retried like the others: a late landing folder may still arrive
    def _validate(**context: Any) -> dict:
        try:
            as_of = as_of_of(context)
        except Exception:  # noqa: BLE001  (a bad as_of is reported by check_config, with the other problems)
            as_of = None
        return check_config(context.get("params"), names, as_of)

    return _validate()


# Publish options per DAG: which feature views a DAG pushes to the online store (the user side or the item side).
PUBLISH_KWARGS: dict[str, dict[str, Any]] = {
    "user": {"views": views_fed_by("aggregates", "embed_users", "ensemble")},
    "item": {"views": views_fed_by("item_vectors")},
}


def publish_stage(which: str, task_id: str = "publish"):
    """Publish the committed gold tables of one side ("user" | "item") to Feast's online store."""
    from airflow.sdk import task

    @task(task_id=task_id)
    def _publish(**context: Any) -> dict:
        extra = {**PUBLISH_KWARGS[which], "online": conf(context.get("params"), "feast_online")}
        return run_stage_task("publish", context, **extra)

    return _publish()


def training_chain(kind: str, stage: str, **extra: Any):
    """train (queue/pool for GPUs) -> evaluate (candidate vs serving) -> promote (short-circuit: stops here when
    the candidate is worse) -> model_promoted (updates the model asset). Returns the train task. `extra`: fixed
    stage options (the GRU-AE member)."""
    from airflow.sdk import task

    @task(task_id=stage, queue=TRAIN_QUEUE, pool=TRAIN_POOL)
    def train(**context: Any) -> dict:
        return run_stage_task(stage, context, **extra)

    @task(task_id="evaluate")
    def evaluate(result: dict, **context: Any) -> dict:
        from ubp.stages.pipeline import _jsonable, compare_models

        threshold = conf(context.get("params"), "promote_threshold")
        return _jsonable(compare_models(settings_of(context), kind, result["version"], threshold=threshold))

    @task.short_circuit(task_id="promote")
    def promote(result: dict, **context: Any) -> bool:
        from ubp.stages.pipeline import promote_if_not_worse

        threshold = conf(context.get("params"), "promote_threshold")
        decision = promote_if_not_worse(settings_of(context), kind, result["version"], threshold=threshold)
        print(f"{kind} model {result['version']}: promoted={decision['promoted']} ({decision['reason']})")
        return bool(decision["promoted"])

    @task(task_id="model_promoted", outlets=[model_asset(kind)])
    def model_promoted(result: dict, **context: Any) -> str:
        space = result.get("space") or {}
        if space.get("new_space") and space.get("reason") != "first space of the family":
            print(f"NEW VECTOR SPACE {space.get('space_id')} for {kind} model {result['version']} "
                  f"({space.get('reason')}): downstream models pinned to the old service keep the old space")
        context["outlet_events"][model_asset(kind)].extra = {  # the asset event says which space it serves
            "version": result["version"], "space_id": space.get("space_id"),
            "new_space": bool(space.get("new_space")), "space_reason": space.get("reason")}
        return result["version"]

    trained = train()
    evaluated = evaluate(trained)
    decided = promote(trained)
    evaluated >> decided >> model_promoted(trained)
    return trained
