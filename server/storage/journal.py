"""Journal of blob writes and removals in flight, so a crash never needs a manual step.

Each process that writes owns ``journal/<owner>/`` and holds an exclusive ``flock`` on
its ``owner.lock`` for as long as it lives; the kernel drops the lock when the process
dies, even by ``kill -9``. Before a blob is moved into place (``put``) or an index
change makes one unreferenced (``drop``), an entry ``<key>.<op>`` is created; it is
removed once the blob and the index agree again.

At start-up every process looks for owners whose lock it can take (they are dead) and
settles their entries (``services/recovery.py``); entries of live processes are never
touched, so one worker's recovery cannot race another worker's writes. Entries a live
process could not settle (the index was unreachable) go to ``journal/unowned/``.
Upload spools live in the owner's folder too, so a dead process's half uploads go
with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Op = Literal["put", "drop"]
_UNOWNED = "unowned"
_LOCK = "owner.lock"


@dataclass(frozen=True)
class Entry:
    key: str
    op: Op


class WriteJournal:
    def __init__(self, root: Path) -> None:
        self.root = root / "journal"
        self.root.mkdir(parents=True, exist_ok=True)
        self._own: Path | None = None
        self._own_pid = -1
        self._lock_fd: int | None = None

    def _dir(self) -> Path:
        """This process's journal directory, created (and locked) on first use."""
        if self._own is None or self._own_pid != os.getpid():
            name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            making = self.root / f".{name}"  # locked before recoverers can see it
            making.mkdir()
            fd = os.open(making / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            own = making.rename(self.root / name)
            self._own, self._own_pid, self._lock_fd = own, os.getpid(), fd
        return self._own

    def spool_dir(self) -> Path:
        """A folder for one request's upload, removed with this process's journal if it dies."""
        directory = self._dir() / "spool" / uuid.uuid4().hex
        directory.mkdir(mode=0o700, parents=True)
        return directory

    def begin(self, key: str, op: Op) -> Entry:
        path = self._dir() / f"{key}.{op}"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        return Entry(key, op)

    def end(self, entry: Entry) -> None:
        if self._own is not None:
            (self._own / f"{entry.key}.{entry.op}").unlink(missing_ok=True)

    def abandon(self, entry: Entry, op: Op = "drop") -> None:
        """Hand an entry this process cannot settle to start-up recovery (as ``op``)."""
        unowned = self.root / _UNOWNED
        unowned.mkdir(exist_ok=True)
        os.close(os.open(unowned / f"{entry.key}.{op}", os.O_WRONLY | os.O_CREAT, 0o600))
        self.end(entry)

    def live_keys(self) -> set[str]:
        """Keys of every entry still open (any process, and unowned ones)."""
        keys: set[str] = set()
        for directory in self._owner_dirs(include_unowned=True):
            for path in _entries(directory):
                keys.add(path.key)
        return keys

    @contextlib.contextmanager
    def orphaned(self) -> Iterator[list[Entry] | None]:
        """Entries of dead owners and unowned ones, held against other recoverers.

        Dead owners' entries are first moved to ``unowned/``; the caller calls
        :meth:`settled` for each entry it resolved, the others wait for the next
        recovery. Yields None if another process is recovering right now.
        """
        unowned = self.root / _UNOWNED
        unowned.mkdir(exist_ok=True)
        fd = _try_lock(unowned / _LOCK)
        if fd is None:
            yield None
            return
        try:
            for directory in self._owner_dirs(include_unowned=False):
                dead = _try_lock(directory / _LOCK)
                if dead is None:
                    continue  # its process is alive
                try:
                    for entry in _entries(directory):
                        name = f"{entry.key}.{entry.op}"
                        os.replace(directory / name, unowned / name)
                    shutil.rmtree(directory, ignore_errors=True)
                finally:
                    os.close(dead)
            yield _entries(unowned)
        finally:
            os.close(fd)

    def settled(self, entry: Entry) -> None:
        (self.root / _UNOWNED / f"{entry.key}.{entry.op}").unlink(missing_ok=True)

    def _owner_dirs(self, *, include_unowned: bool) -> list[Path]:
        return [
            d
            for d in sorted(self.root.iterdir())
            if d.is_dir()
            and not d.name.startswith(".")
            and (include_unowned or d.name != _UNOWNED)
            and d != self._own
        ]

    def close(self) -> None:
        """Forget this process's directory if it is empty (a clean shutdown)."""
        if self._own is not None and self._own_pid == os.getpid():
            if not _entries(self._own):
                shutil.rmtree(self._own, ignore_errors=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
        self._own, self._lock_fd = None, None


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _entries(directory: Path) -> list[Entry]:
    out: list[Entry] = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            key, _, op = path.name.rpartition(".")
            if op in ("put", "drop") and key:
                out.append(Entry(key, op))  # type: ignore[arg-type]
    return out
