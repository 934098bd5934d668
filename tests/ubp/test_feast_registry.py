"""`ubp/feast_registry.py`: the registry file is replaced in one step, so a reader never parses half a registry."""

from __future__ import annotations

import threading

import pytest

from ubp.config import Settings


@pytest.fixture
def lake(tmp_path):
    return Settings(lakehouse=tmp_path / "lakehouse")


def test_registry_writes_are_atomic(lake):
    """Every registry write replaces the file in one step: a reader polling the file always parses a whole
    registry (Feast's own store truncates the file and writes it in place)."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    from ubp import feast_store, spaces
    from ubp.feast_registry import STORE_TYPE, AtomicFileRegistryStore, _umask

    assert STORE_TYPE == feast_store.ATOMIC_REGISTRY_STORE
    store = feast_store.apply(lake, "sqlite")
    assert isinstance(store.registry._registry_store, AtomicFileRegistryStore)
    path = lake.feast_dir / "registry.db"
    want = len(RegistryProto.FromString(path.read_bytes()).feature_services)
    assert want == len(spaces.served_spaces(lake))  # one service per vector space
    bad: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            try:
                n = len(RegistryProto.FromString(data).feature_services)
            except Exception as exc:  # noqa: BLE001
                bad.append(f"{type(exc).__name__} at {len(data)} bytes")
                continue
            if n != want:
                bad.append(f"{n} services at {len(data)} bytes")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(200):
            store.registry.commit()
    finally:
        stop.set()
        reader.join()
    assert not bad, bad[:5]
    assert not list(lake.feast_dir.glob(".registry.db.*.tmp"))  # no temp files left behind
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # a new file's usual permissions, not mkstemp's 0600
