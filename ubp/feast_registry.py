"""Feast's file registry, written atomically: the registry file is replaced in one step, never rewritten in place.

Feast's `FileRegistryStore` opens the registry file with "wb" (truncate) and writes the new proto into it, so a
reader that loads the file meanwhile can get an empty or cut-off registry, and a process killed mid-write leaves
one. The switch of a publish (`ubp.feast_slots.switch`) is one registry write, so that write must be atomic:
`AtomicFileRegistryStore` writes the new proto to a temporary file next to the registry, fsyncs it and
`os.replace`s it over the registry (atomic on POSIX), then fsyncs the folder. A reader opens either the old file or
the new one, whole. Everything else is Feast's `FileRegistryStore` (Feast's registry still recognises it as a file
registry: the cache's modification-time check works as before).

ubp's effective feature_store.yaml selects it (`registry_store_type`, see `ubp.feast_store.effective_config`), so
`ubp publish`, ubp's readers and `feast -f <lakehouse>/_feast/feature_store.yaml ...` all use it.
"""

from __future__ import annotations

import os
import stat
import tempfile
import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.utils import _utc_now

STORE_TYPE = f"{__name__}.AtomicFileRegistryStore"  # the value of `registry.registry_store_type`


def write_atomic(path: os.PathLike | str, data: bytes) -> None:
    """Write `data` to `path` in one step: temp file in the same folder, fsync, `os.replace`, fsync the folder."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    try:  # the file keeps its permissions (mkstemp creates 0600; a reader may run as another user)
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", buffering=0) as fh:
            fh.write(data)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFileRegistryStore(FileRegistryStore):
    """Feast's file registry store whose writes replace the file atomically (see the module doc)."""

    def _write_registry(self, registry_proto) -> None:
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        write_atomic(self._filepath, registry_proto.SerializeToString())
