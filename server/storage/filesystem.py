"""Filesystem blob store: ``<data_dir>/blobs/<aa>/<bb>/<key>``, written by temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from server.errors import NotFound


class FilesystemBlobStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self._trash = root / "trash"
        self._spool = root / "spool"
        self._fsync = fsync
        for d in (self.blobs, self._trash, self._spool):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if "/" in key or "\\" in key or key.startswith(".") or not key:
            raise ValueError(f"invalid blob key {key!r}")
        return self.blobs / key[:2] / key[2:4] / key

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if self._fsync:
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(source, target)
        if self._fsync:
            self._fsync_dir(target.parent)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise NotFound("the instance's stored data is missing") from exc

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def trash(self, key: str) -> None:
        source = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            os.replace(source, self._trash / f"{key}.{uuid.uuid4().hex}")

    def purge_trash(self) -> int:
        count = 0
        for entry in self._trash.iterdir():
            entry.unlink(missing_ok=True)
            count += 1
        return count

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for first in sorted(self.blobs.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if second.is_dir():
                    for blob in sorted(second.iterdir()):
                        yield blob.name

    def spool_dir(self) -> Path:
        directory = self._spool / uuid.uuid4().hex
        directory.mkdir(parents=True)
        return directory

    def clean_spool(self, older_than_seconds: float = 0) -> int:
        now, count = time.time(), 0
        for entry in self._spool.iterdir():
            if now - entry.stat().st_mtime >= older_than_seconds:
                shutil.rmtree(entry, ignore_errors=True)
                count += 1
        return count
