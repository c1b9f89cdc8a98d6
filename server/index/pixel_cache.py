"""A bounded per-process cache of stored pixel indexes (frame tables), keyed by blob key.

A whole-slide level's frame table is hundreds of kilobytes (one length per tile); an
index backend that keeps it inside the instance's document would ship it on every frame
request. A blob key is never reused for other content (``core.blobkeys.new_blob_key``),
and the pixel index is a function of the blob's bytes, so an entry can never be stale:
whether the instance still exists, and which blob it points at now, is read from the
index on every request (by primary key), and only the immutable table comes from here.
A deleted or replaced instance leaves an unreachable entry that ages out of the LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class PixelIndexCache:
    """Least-recently-used ``blob key -> pixel index bytes (or None)``, bounded in bytes."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes | None] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, blob_key: str) -> tuple[bool, bytes | None]:
        """(found, value): ``found`` is False when the key is not cached."""
        with self._lock:
            if blob_key not in self._entries:
                return False, None
            self._entries.move_to_end(blob_key)
            return True, self._entries[blob_key]

    def put(self, blob_key: str, value: bytes | None) -> None:
        size = len(value or b"")
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(blob_key, None)
            self._bytes -= len(old or b"")
            self._entries[blob_key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped or b"")

    def forget(self, blob_keys: list[str]) -> None:
        """Drop entries of blobs this process deleted (memory only: they are unreachable)."""
        with self._lock:
            for key in blob_keys:
                self._bytes -= len(self._entries.pop(key, None) or b"")

    def __len__(self) -> int:
        return len(self._entries)
