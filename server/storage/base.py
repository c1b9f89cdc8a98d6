"""The blob store protocol shared by every storage backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from server.storage.bodies import BodyCache


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

    def local_files(self, keys: Sequence[str]) -> list[tuple[str, int] | None] | None:
        """Each blob's file on this machine and its size (None: missing), for responses the
        server sends from the file itself; None when the store keeps no such files."""

    def kept_bodies(self) -> BodyCache | None:
        """Whole WADO-RS bodies kept as files beside the blobs (``server/storage/bodies.py``),
        forgotten when one of their blobs is deleted or quarantined; None: not kept."""

    def quarantine(self, key: str, reason: str) -> Path | None:
        """Move ``key`` aside with ``reason`` noted (never deleted); None if it was gone."""

    def delete(self, key: str) -> None:
        """Remove a blob no index row references (callers make sure of that)."""

    def keys(self) -> Iterator[str]: ...

    def clean_spool(self, older_than_seconds: float = 0) -> int: ...

    def ready(self) -> str | None:
        """None when blobs can be read and written now, else what is wrong (no secrets)."""
