"""Data files are 0600 and folders 0700, whatever umask the gateway was started with.

Blobs and databases hold patient data. The process umask is set to 077 before any
component opens a file, so every file the gateway (and SQLite, for its -wal/-shm
files) creates afterwards is private to the service account; the data directory and
its top-level entries made by earlier versions are tightened at start-up too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def restrict_data_dir(data_dir: Path) -> None:
    os.umask(0o077)
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(data_dir)
    for entry in data_dir.iterdir():
        _tighten(entry)
        if entry.is_dir() and not entry.is_symlink():
            for child in entry.iterdir():  # e.g. keys/, journal owners, blobs/<aa>
                _tighten(child)


def _tighten(path: Path) -> None:
    with contextlib.suppress(OSError):  # not ours (a mounted volume's root): leave it
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            if stat.S_IMODE(mode) & 0o077:
                path.chmod(DIR_MODE)
        elif stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
            path.chmod(FILE_MODE)


@contextlib.contextmanager
def file_lock(lock_file: Path) -> Iterator[None]:
    """An exclusive lock between processes sharing ``lock_file``'s folder (POSIX flock;
    no lock where there is none). The lock file is created 0600 and left in place."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
