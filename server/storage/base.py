"""The blob store protocol shared by every storage backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Move ``source`` (a spooled file on the same volume) to ``key`` atomically."""

    def sync(self) -> None:
        """Make every blob put so far durable; called before the index commit."""

    def exists(self, key: str) -> bool: ...

    def open(self, key: str) -> BinaryIO: ...

    def path(self, key: str) -> Path:
        """A local path for readers that need one (pydicom decoding)."""

    def size(self, key: str) -> int: ...

    def trash(self, key: str) -> None:
        """Move ``key`` out of sight (first step of a delete); :meth:`purge_trash` ends it."""

    def purge_trash(self) -> int: ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterator[str]: ...

    def spool_dir(self) -> Path:
        """A directory on the same volume for request spooling."""

    def clean_spool(self, older_than_seconds: float = 0) -> int: ...
