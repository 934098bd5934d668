"""Helpers for the Feast / publish tests: tiny gold Delta tables in the contract schemas and a real Redis server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

AS_OF_1 = datetime(2024, 1, 1, tzinfo=UTC)
AS_OF_2 = datetime(2024, 2, 1, tzinfo=UTC)
CREATED = datetime(2024, 2, 2, 12, 0, 0, tzinfo=UTC)
DIM = 8
ENSEMBLE_DIM = 12  # another vector space than the GRU profiles (DIM): a mix-up shows in the length alone


def profile_rows(clients, as_of, model_version="gru-v1", dim=DIM, seed=0, space_id="user_profile_v1"):
    rng = np.random.default_rng(seed)
    return [
        (int(c), [float(x) for x in rng.normal(size=dim).astype(np.float32)], model_version, space_id, as_of,
         int(10 * c + as_of.month), CREATED)
        for c in clients
    ]


def write_table(spark, settings, name, rows, mode="overwrite"):
    from ubp.tables import TABLES

    df = spark.createDataFrame(rows, TABLES[name].spark_schema())
    df.write.format("delta").mode(mode).save(str(settings.table_path(name)))


def make_gold(spark, settings, clients=range(1, 7), skus=range(100, 110), dim=DIM, ensemble=True):
    """user_profiles (two as-of versions), user_profiles_ensemble (one as-of, ENSEMBLE_DIM, its own values),
    user_aggregates, item_vectors (some cold)."""
    rows = profile_rows(clients, AS_OF_1, seed=1) + profile_rows(clients, AS_OF_2, seed=2)
    write_table(spark, settings, "user_profiles", rows)
    if ensemble:
        ens = profile_rows(clients, AS_OF_2, model_version="ensemble-v1", dim=ENSEMBLE_DIM, seed=7,
                           space_id="user_profile_ensemble_v1")
        write_table(spark, settings, "user_profiles_ensemble", ens)
    agg = [(int(c), AS_OF_2, int(c) * 3, [float(c), 1.0, 2.0], "names-v1") for c in clients]
    write_table(spark, settings, "user_aggregates", agg)
    rng = np.random.default_rng(3)
    items = [
        (int(s), [float(x) for x in rng.normal(size=dim).astype(np.float32)], i % 3 == 0, "sasrec-v1",
         "item_vector_v1", "minilm", AS_OF_2, CREATED)
        for i, s in enumerate(skus)
    ]
    write_table(spark, settings, "item_vectors", items)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_ci() -> bool:
    """CI sets CI=true (.ci/run starts redis-server and exports UBP_REDIS_URL)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_unless_ci(reason: str) -> None:
    """Skip a Redis test on a laptop without Redis; under CI fail instead: the byte-exact Redis cases must run."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}: the Redis tests must run in CI (.ci/run starts redis-server)")
    pytest.skip(reason)


def redis_reachable(url: str) -> str | None:
    """None when Redis at Feast connection string `url` answers PING, else why not."""
    from ubp.publish import redis_client

    try:
        redis_client(url).ping()
    except Exception as exc:  # noqa: BLE001  (any reason is reported)
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def redis_url():
    """UBP_REDIS_URL when set (CI), else a private redis-server on a free port, stopped afterwards."""
    url = os.environ.get("UBP_REDIS_URL")
    if url:
        from ubp.feast_store import to_feast_redis

        url = to_feast_redis(url)  # host:port[,...] (a redis:// URL is converted)
        why = redis_reachable(url)
        if why is not None:
            pytest.fail(f"UBP_REDIS_URL={os.environ['UBP_REDIS_URL']} is unreachable ({why})")
        yield url
        return
    with private_redis_server() as port:
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def private_redis_server(password: str | None = None) -> Iterator[int]:
    """A private redis-server on a free port (with `requirepass` when a password is given), stopped afterwards;
    skipped without a redis-server binary (failed under CI)."""
    import redis

    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if binary is None:
        skip_unless_ci("no redis-server binary (apt-get install redis-server) and no UBP_REDIS_URL")
    port = _free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args + (["--requirepass", password] if password else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def online_dump(store) -> dict:
    """Everything the online store holds for project `ubp`: SQLite rows per table, or Redis hashes per key."""
    cfg = store.config.online_store
    if cfg.type == "sqlite":
        import sqlite3

        con = sqlite3.connect(cfg.path)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
        con.close()
        return out
    from ubp.publish import redis_client

    client = redis_client(cfg.connection_string)
    return {k: client.hgetall(k) for k in client.scan_iter(match=b"*ubp")}


def clear_online(store) -> None:
    cfg = store.config.online_store
    if cfg.type == "sqlite":
        import sqlite3

        con = sqlite3.connect(cfg.path)
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            con.execute(f'DELETE FROM "{t}"')
        con.commit()
        con.close()
    else:
        from ubp.publish import redis_client

        redis_client(cfg.connection_string).flushdb()


def latest_rows_pandas(path, view):
    """The rows Feast serves (latest as_of, then created_at, per key), straight from Delta, as pandas."""
    from deltalake import DeltaTable

    df = DeltaTable(str(path or view.path)).to_pandas()
    for col, value in view.where:  # one vector space's rows
        df = df[df[col] == value]
    order = [view.join_key, view.timestamp_field] + ([view.created_field] if view.created_field else [])
    return df.sort_values(order).groupby(view.join_key, as_index=False).tail(1).reset_index(drop=True)
