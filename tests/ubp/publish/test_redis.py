"""The Redis writer (`ubp/publish/redis.py`) on a real redis-server: replies counted on the raw socket or by
redis-py's parser, a refused write reported, and the Redis cases failing rather than skipping in CI."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from publish_fixtures import redis_url  # noqa: F401  (fixture)


@pytest.mark.redis
@pytest.mark.parametrize("raw_socket", [True, False], ids=["raw-socket", "redis-py-parser"])
def test_redis_writer_counts_replies_and_reports_refusals(redis_url, raw_socket):  # noqa: F811
    """Replies are counted on the raw socket (or, on an untested redis-py, read by redis-py's parser): a refused HSET
    (WRONGTYPE) is reported, the rest are written, and the pooled connection stays in step for the next command."""
    from feast.value_type import ValueType

    from ubp.errors import UbpError
    from ubp.publish import RedisWriter, ViewLayout, encode_entity_keys, redis_client

    client = redis_client(f"{redis_url.split(',')[0]},db=14")
    client.flushdb()
    view = ViewLayout(name="v", path="/nowhere", join_key="client_id", timestamp_field="as_of", created_field=None,
                      features=(("vec", ValueType.FLOAT_LIST), ("n", ValueType.INT64)))
    w = RedisWriter(client, "ubp", view, chunk=7)  # several chunks per write
    assert w.raw_socket  # the installed redis-py is the tested one
    w.raw_socket = raw_socket
    keys = np.arange(50, dtype=np.int64)
    batch = pa.table({"vec": pa.array([[float(k)] * 3 for k in keys], pa.list_(pa.float32())),
                      "n": pa.array(keys * 3, pa.int64())})
    ts = np.full(50, 1_700_000_000_000_000, dtype=np.int64)
    bad = encode_entity_keys(keys[10:11], "client_id", b"ubp")[0]
    client.set(bad, b"not a hash")
    with pytest.raises(UbpError, match="redis refused 1 of 50 writes: -?WRONGTYPE"):
        w.write(keys, ts, None, batch)
    assert client.ping() and client.dbsize() == 50  # 49 hashes + the string
    client.delete(bad)
    w.write(keys, ts, None, batch)
    assert client.dbsize() == 50 and all(client.hlen(k) == 3 for k in encode_entity_keys(keys, "client_id", b"ubp"))
    client.flushdb()


def test_redis_cases_fail_rather_than_skip_in_ci(monkeypatch):
    """Under CI=true a Redis test whose server is missing or unreachable fails; it is never skipped silently."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from publish_fixtures import _free_port, skip_unless_ci

    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "CI": "true", "UBP_REDIS_URL": f"127.0.0.1:{_free_port()}",  # nobody listens there
           "PYTHONPATH": str(repo)}
    test = f"{Path(__file__).relative_to(repo).as_posix()}::test_redis_writer_counts_replies_and_reports_refusals"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout[-2000:]
    assert "is unreachable" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:]

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        skip_unless_ci("no redis-server binary")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        skip_unless_ci("no redis-server binary")
