"""Filesystem blob store: ``<data_dir>/blobs/<aa>/<bb>/<key>``.

Writes are a rename of a spooled file (atomic on one volume). Durability is
given per batch by :meth:`FilesystemBlobStore.sync`: one ``syncfs(2)`` for the
whole volume where Linux offers it, else an fsync of every file and directory
written since the last sync. Callers sync before they commit the index, so an
acknowledged instance is on disk; a blob renamed but not yet synced when power
fails is at worst an unindexed blob whose content no longer matches its key,
which start-up recovery or ``check`` quarantines (``quarantine/``, never deleted).

Every file is created 0600 and every folder 0700 (see ``server/storage/permissions.py``).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from server.errors import NotFound
from server.metrics import metered
from server.storage.bodies import BodyCache


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_SYNCFS = _load_syncfs()


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked(key: str) -> str:
    """``key`` if it names a file inside the store (no separator, not hidden, not empty)."""
    if "/" in key or "\\" in key or key.startswith(".") or not key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


@metered("filesystem")
class FilesystemBlobStore:
    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        body_cache_bytes: int = 0,
        body_cache_min_free: float = 0.1,
    ) -> None:
        self.root = root
        self._bodies = BodyCache(root / "bodies", body_cache_bytes, body_cache_min_free)
        self.blobs = root / "blobs"
        self.quarantine_dir = root / "quarantine"
        self._spool = root / "spool"
        self._fsync = fsync
        self._lock = threading.Lock()
        self._unsynced: list[Path] = []
        self._made_dirs: set[Path] = set()
        for d in (self.blobs, self.quarantine_dir, self._spool):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def ready(self) -> str | None:
        for d in (self.blobs, self._spool):
            if not d.is_dir():
                return f"{d.name} folder missing"
            if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
                return f"{d.name} folder not writable"
        return None

    def path(self, key: str) -> Path:
        return self.blobs / _checked(key)[:2] / key[2:4] / key

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        if target.parent not in self._made_dirs:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made_dirs.add(target.parent)
        try:
            os.replace(source, target)
        except FileNotFoundError:  # the directory vanished (removed by hand): make it again
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(source, target)
        with self._lock:
            self._unsynced.append(target)

    def sync(self) -> None:
        """Make every blob put so far durable (see the module docstring)."""
        if not self._fsync:
            return
        with self._lock:
            pending, self._unsynced = self._unsynced, []
        if not pending:
            return
        if _SYNCFS is not None:
            fd = os.open(self.blobs, os.O_RDONLY)
            try:
                if _SYNCFS(fd) == 0:
                    return
            finally:
                os.close(fd)
        for path in {*pending, *(p.parent for p in pending)}:
            _fsync_path(path)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise NotFound("the instance's stored data is missing") from exc

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def local_files(self, keys: Sequence[str]) -> list[tuple[str, int] | None] | None:
        """Plain string paths, checked like :meth:`path` (which, being public, is metered:
        a series of thousands of files would pay that per file)."""
        found: list[tuple[str, int] | None] = []
        base = str(self.blobs)
        stat = os.stat
        for key in keys:
            path = f"{base}/{_checked(key)[:2]}/{key[2:4]}/{key}"
            try:
                found.append((path, stat(path).st_size))
            except FileNotFoundError:
                found.append(None)
        return found

    def kept_bodies(self) -> BodyCache | None:
        return self._bodies if self._bodies.enabled else None

    def quarantine(self, key: str, reason: str) -> Path | None:
        """Move a blob to ``quarantine/`` with a ``.reason`` note beside it; never deletes."""
        source = self.path(key)
        target = self.quarantine_dir / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            os.replace(source, target)
        except FileNotFoundError:
            return None
        finally:
            self._bodies.forget([key])  # no copy of its bytes stays in a kept body
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        return target

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        self._bodies.forget([key])  # nor in a kept body

    def keys(self) -> Iterator[str]:
        for first in sorted(self.blobs.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if second.is_dir():
                    for blob in sorted(second.iterdir()):
                        yield blob.name

    def clean_spool(self, older_than_seconds: float = 0) -> int:
        """Remove upload spools of earlier versions (now spools live in the write journal)."""
        now, count = time.time(), 0
        for entry in self._spool.iterdir():
            if now - entry.stat().st_mtime >= older_than_seconds:
                shutil.rmtree(entry, ignore_errors=True)
                count += 1
        return count
