"""The Feast feature store of a lakehouse: render its config, build the `FeatureStore`, apply the definitions.

Design: `feature_repo/feature_store.yaml` is a plain Feast config (`${UBP_LAKEHOUSE}` and `${UBP_DELTA_JARS}` are
expanded by Feast from the environment), so `feast -c feature_repo plan|apply|ui` use it as is. ubp derives its
effective config from it (absolute lakehouse paths, the chosen online store, the Delta jars from
`ubp.jars.ensure_delta_jars()`, which Feast's Spark offline store must put on its session): `render_config` writes
it to `<lakehouse>/_feast/feature_store.yaml` (SQLite online store, the default) or
`<lakehouse>/_feast/feature_store.redis.yaml` (Redis). Online reads (`get_store(read_only=True)`) build the same
config in memory without jars: no file is written and Maven is never needed. Each online store gets its own
registry file (`registry.db`, `registry.redis.db`), because the registry also records what was materialized where.

The registry file is written atomically (`registry_store_type: ubp.feast_registry.AtomicFileRegistryStore`: a
temp file replaced over the registry) and every logical feature view is registered as two slot views that a publish
switches between in one registry write (`ubp.feast_slots`); `apply` keeps the served slots as recorded.
`UBP_FEAST_CACHE_TTL_S` overrides the registry's `cache_ttl_seconds` (how long a reader may keep a registry, which
is also how long a publish waits before rewriting the slot it switched away from) for publisher and readers alike.

Switch to Redis with `online="redis"` (CLI: `ubp publish --online redis`) or env `UBP_FEAST_ONLINE=redis`; the
address comes from `UBP_REDIS_URL` (Feast's connection string, `host:port[,db=N,password=...]`, default
`127.0.0.1:6379`). The Redis password never reaches a file: the rendered yaml says `password=${UBP_REDIS_PASSWORD}`
and Feast expands environment variables when it loads a feature_store.yaml. The password is taken from
`UBP_REDIS_PASSWORD`, or from `UBP_REDIS_URL` (then copied into this process's `UBP_REDIS_PASSWORD`). The rendered
yaml also works with Feast's own CLI: `feast -c feature_repo -f <lakehouse>/_feast/feature_store.yaml apply`.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from ubp.config import Settings
from ubp.errors import UbpError
from ubp.feast_slots import REGISTRY_FILES
from ubp.log import get_logger

log = get_logger(__name__)


def _quiet_feast() -> None:
    """Feast's Spark source/offline store warn "experimental" on every object (and their module resets the
    RuntimeWarning filter to "once" on import, so ours goes in after it); its registry logs every cache refresh."""
    import feast.infra.offline_stores.contrib.spark_offline_store.spark  # noqa: F401

    warnings.filterwarnings("ignore", message=r"The spark (data source API|offline store) is an experimental")
    logging.getLogger("feast").setLevel(logging.WARNING)

REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"
ONLINE_KINDS = ("sqlite", "redis")


def online_kind(online: str | None = None) -> str:
    kind = (online or os.environ.get("UBP_FEAST_ONLINE") or "sqlite").lower()
    if kind not in ONLINE_KINDS:
        raise UbpError(f"online store must be one of {', '.join(ONLINE_KINDS)}, got {kind!r}")
    return kind


def redis_url() -> str:
    """Feast's Redis connection string from `UBP_REDIS_URL`: `host:port[,db=N,password=...]`, or a
    `redis://[:password@]host:port[/db]` URL (converted)."""
    url = os.environ.get("UBP_REDIS_URL", "127.0.0.1:6379")
    return to_feast_redis(url)


REDIS_PASSWORD_ENV = "UBP_REDIS_PASSWORD"


def redis_yaml_connection() -> str:
    """The connection string to write into a yaml: the address from `UBP_REDIS_URL` without its password, plus
    `password=${UBP_REDIS_PASSWORD}` when a password is in use (Feast expands it from the environment on load).

    A password given inside `UBP_REDIS_URL` is moved to `UBP_REDIS_PASSWORD` of this process, so the store loaded
    here authenticates; other processes (e.g. the `feast` CLI) need `UBP_REDIS_PASSWORD` exported.
    """
    parts = [p for p in redis_url().split(",") if p.strip()]
    secret = [p.split("=", 1)[1] for p in parts if p.strip().lower().startswith("password=")]
    parts = [p for p in parts if not p.strip().lower().startswith("password=")]
    if secret:
        os.environ[REDIS_PASSWORD_ENV] = secret[-1]
    if os.environ.get(REDIS_PASSWORD_ENV):
        parts.append(f"password=${{{REDIS_PASSWORD_ENV}}}")
    return ",".join(parts)


def to_feast_redis(url: str) -> str:
    """`redis://[user:password@]host:port[/db][,opts]` -> Feast's `host:port[,db=N,password=...]`; others unchanged."""
    from urllib.parse import unquote, urlsplit

    if not url.startswith(("redis://", "rediss://")):
        return url
    head, _, opts = url.partition(",")
    u = urlsplit(head)
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"]
    db = u.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts + ([opts] if opts else []))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] if text else type(exc).__name__


SQLITE_PAGE_SIZE = 16_384


def create_sqlite_db(path: Path) -> None:
    """Create the SQLite online store file before Feast does, with 16 KiB pages instead of SQLite's 4 KiB: a user is
    4 rows of ~0.6-1.1 KB (128-256 floats), and bigger pages cut the B-tree work of a publish (fewer page
    splits per row). An existing file is left as it is."""
    import sqlite3

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        conn.execute("VACUUM")  # writes the header: the page size sticks
    finally:
        conn.close()


LAKEHOUSE_VAR = "${UBP_LAKEHOUSE}"
ATOMIC_REGISTRY_STORE = "ubp.feast_registry.AtomicFileRegistryStore"  # = ubp.feast_registry.STORE_TYPE
CACHE_TTL_ENV = "UBP_FEAST_CACHE_TTL_S"


def _cache_ttl_override() -> int | None:
    raw = os.environ.get(CACHE_TTL_ENV, "").strip()
    if not raw:
        return None
    try:
        ttl = int(raw)
    except ValueError:
        ttl = 0
    if ttl < 1:
        raise UbpError(f"{CACHE_TTL_ENV} must be a whole number of seconds >= 1, got {raw!r}")
    return ttl


def effective_config(settings: Settings, online: str | None = None, template: Path | None = None, *,
                     jars: bool = True) -> dict[str, Any]:
    """The repo's feature_store.yaml for this lakehouse and online store, as a dict: absolute paths, the online
    store block, and the Delta jars (`jars=False`: none, so no Maven; enough for online reads).

    Only `${UBP_LAKEHOUSE}` is filled in here; other `${VAR}`s (the Redis password) stay for Feast to expand.
    """
    import yaml

    kind = online_kind(online)
    template = template or REPO_DIR / "feature_store.yaml"
    feast_dir = settings.feast_dir
    try:
        cfg = yaml.safe_load(template.read_text().replace(LAKEHOUSE_VAR, str(settings.lakehouse)))
        if not isinstance(cfg, dict) or not isinstance(cfg.get("registry"), dict):
            raise ValueError("no `registry:` mapping")
        offline = cfg.get("offline_store")
        spark = isinstance(offline, dict) and offline.get("type") == "spark"
        spark_conf = offline.setdefault("spark_conf", {}) if spark else {}
    except (yaml.YAMLError, ValueError, AttributeError, OSError) as exc:
        raise UbpError(f"bad feature_store.yaml {template}: {_one_line(exc)}") from exc
    registry = cfg["registry"]
    if kind == "sqlite":
        cfg["online_store"] = {"type": "sqlite", "path": str(feast_dir / "online.db")}
    else:
        cfg["online_store"] = {"type": "redis", "connection_string": redis_yaml_connection()}
    registry["path"] = str(feast_dir / REGISTRY_FILES[kind])
    if registry.get("registry_type", "file") == "file":  # the switch of a publish is one atomic registry write
        registry.setdefault("registry_store_type", ATOMIC_REGISTRY_STORE)
    ttl = _cache_ttl_override()
    if ttl is not None:
        registry["cache_ttl_seconds"] = ttl
    if jars and spark:
        from ubp.jars import ensure_delta_jars

        spark_conf["spark.jars"] = ",".join(ensure_delta_jars())
    else:
        spark_conf.pop("spark.jars", None)
    return cfg


def render_config(settings: Settings, online: str | None = None, template: Path | None = None) -> Path:
    """Write the effective feature_store.yaml for this lakehouse and online store; return its path."""
    import yaml

    kind = online_kind(online)
    cfg = effective_config(settings, kind, template)
    feast_dir = settings.feast_dir
    feast_dir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        create_sqlite_db(feast_dir / "online.db")
    out = feast_dir / ("feature_store.yaml" if kind == "sqlite" else "feature_store.redis.yaml")
    out.write_text(f"# written by ubp from {REPO_DIR.name}/feature_store.yaml; edit that one\n"
                   + yaml.safe_dump(cfg, sort_keys=False))
    return out


def get_store(settings: Settings, online: str | None = None, template: Path | None = None, *,
              read_only: bool = False) -> Any:
    """A `FeatureStore` for this lakehouse. Feast config errors become one-line UbpErrors.

    `read_only`: for online reads. The config is built in memory without the Delta jars: nothing is written, Maven
    is never called, so a reader needs neither write access to the lakehouse nor a jar cache.
    """
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    _quiet_feast()
    if read_only:
        cfg = effective_config(settings, online, template, jars=False)
        if cfg["online_store"]["type"] == "redis":  # what Feast would expand when loading the yaml
            cfg["online_store"]["connection_string"] = os.path.expandvars(cfg["online_store"]["connection_string"])
        try:
            config = RepoConfig(**cfg)
            config.repo_path = settings.feast_dir
            return FeatureStore(repo_path=str(settings.feast_dir), config=config)
        except Exception as exc:
            raise UbpError(f"bad Feast config for {settings.feast_dir}: {_one_line(exc)}") from exc
    yaml_path = render_config(settings, online, template)
    try:
        return FeatureStore(repo_path=str(settings.feast_dir), fs_yaml_file=yaml_path)
    except Exception as exc:
        raise UbpError(f"bad Feast config {yaml_path}: {_one_line(exc)}") from exc


def definitions(settings: Settings, records: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Entities, sources, feature views and services of `feature_repo/`, built for this lakehouse.

    `views`: the logical views (not registered themselves); `slot_views`: their slot views, what Feast registers,
    tagged with `records` (`ubp.feast_slots.SlotRecord` per logical view; default: slot a served); `services`:
    pointing at the served slots."""
    _quiet_feast()
    from ubp.feast_slots import complete, pin_service, served_names, slot_views
    from ubp.feature_repo.data_sources import make_sources, view_specs
    from ubp.feature_repo.entities import item, user
    from ubp.feature_repo.feature_services import make_feature_services
    from ubp.feature_repo.features import make_feature_views

    specs = view_specs(settings)  # the vector spaces' registry, read once
    sources = make_sources(settings, specs)
    views = make_feature_views(sources, specs)
    records = complete(views, records or {})
    served = served_names(records)
    return {
        "entities": {"user": user, "item": item},
        "sources": sources,
        "views": views,
        "slot_views": slot_views(views, records),
        "services": {name: pin_service(s, served) for name, s in make_feature_services(views).items()},
        "records": records,
    }


def load_repo(repo_dir: Path) -> list[Any]:
    """Parse a Feast repo folder like `feast apply` does (all its .py files); errors as one-line UbpErrors."""
    from feast.repo_operations import parse_repo

    repo_dir = Path(repo_dir)
    if not repo_dir.is_dir():
        raise UbpError(f"feature repo {repo_dir} does not exist")
    try:
        contents = parse_repo(repo_dir)
    except Exception as exc:
        raise UbpError(f"bad feature repo {repo_dir}: {_one_line(exc)}") from exc
    objs: list[Any] = []
    for group in (contents.entities, contents.data_sources, contents.feature_views, contents.feature_services):
        objs.extend(group)
    return objs


def check_view_columns(views: list[Any]) -> None:
    """Every feature view's columns must exist in its Delta table; say which one is missing, in one line."""
    from deltalake import DeltaTable

    for fv in views:
        path = getattr(fv.batch_source, "path", None) or (fv.tags or {}).get("delta_path")
        if not path:
            continue
        if not (Path(path) / "_delta_log").is_dir():
            continue  # not built yet: publish skips it; apply still registers the view
        have = {f.name for f in DeltaTable(path).schema().fields}
        src = fv.batch_source
        want = [*fv.join_keys, src.timestamp_field, *(f.name for f in fv.features)]
        if src.created_timestamp_column:
            want.append(src.created_timestamp_column)
        missing = [c for c in want if c not in have]
        if missing:
            raise UbpError(f"feature view {fv.name!r} needs column(s) {missing} that Delta table {path} lacks")


def apply(
    settings: Settings,
    online: str | None = None,
    repo_dir: Path | None = None,
) -> Any:
    """`feast apply` for this lakehouse: register the definitions and create the online tables. Returns the store.

    The slot views keep the served slots recorded in the registry and the services keep pointing at them
    (`ubp.feast_slots.pin`): applying never switches what is served."""
    from ubp import feast_slots

    store = get_store(settings, online)
    records = feast_slots.registry_records(store.registry, store.project)
    if repo_dir is not None:
        objs = load_repo(repo_dir)
    else:
        defs = definitions(settings, records)
        objs = [*defs["entities"].values(), *defs["sources"].values(), *defs["slot_views"].values(),
                *defs["services"].values()]
    views = [o for o in objs if type(o).__name__ == "FeatureView"]
    logical = {v.tags[feast_slots.TAG_VIEW] for v in views if feast_slots.TAG_VIEW in v.tags}
    objs = feast_slots.pin(objs, feast_slots.complete(sorted(logical), records))
    views = [o for o in objs if type(o).__name__ == "FeatureView"]
    check_view_columns(views)
    try:
        # our own column check above replaces Feast's validation, which starts a Spark query per view
        store.apply(objs, partial=False, skip_feature_view_validation=True)
    except UbpError:
        raise
    except Exception as exc:
        raise UbpError(f"feast apply failed: {_one_line(exc)}") from exc
    log.info("feast apply: %d objects into %s", len(objs), store.config.registry.path)
    return store
