"""Per-process caches of what retrieval reads from a remote index on every request.

:class:`PixelIndexCache`: the stored pixel indexes (frame tables), keyed by blob key.

A whole-slide level's frame table is hundreds of kilobytes (one length per tile); an
index backend that keeps it inside the instance's document would ship it on every frame
request. A blob key is never reused for other content (``core.blobkeys.new_blob_key``),
and the pixel index is a function of the blob's bytes, so an entry can never be stale:
whether the instance still exists, and which blob it points at now, is read from the
index on every request (by primary key), and only the immutable table comes from here.
A deleted or replaced instance leaves an unreachable entry that ages out of the LRU.

:class:`ShortLived`: answers that can change (an instance still exists, under this blob
key; a study's dataset), reused for a few seconds at most. A write or delete through this
process clears it; one through another replica is seen once the entry is that old.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
ENTRY_OVERHEAD = 100  # an OrderedDict entry, its key object and a small value, roughly


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

    @staticmethod
    def _cost(blob_key: str, value: bytes | None) -> int:
        """Bytes an entry holds: its value, its key and the entry itself (so that the
        many ``None`` entries of instances without a table are bounded too)."""
        return len(value or b"") + len(blob_key) + ENTRY_OVERHEAD

    def put(self, blob_key: str, value: bytes | None) -> None:
        size = self._cost(blob_key, value)
        if size > self.max_bytes:
            return
        with self._lock:
            if blob_key in self._entries:
                self._bytes -= self._cost(blob_key, self._entries.pop(blob_key))
            self._entries[blob_key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                key, dropped = self._entries.popitem(last=False)
                self._bytes -= self._cost(key, dropped)

    def forget(self, blob_keys: list[str]) -> None:
        """Drop entries of blobs this process deleted (memory only: they are unreachable)."""
        with self._lock:
            for key in blob_keys:
                if key in self._entries:
                    self._bytes -= self._cost(key, self._entries.pop(key))

    def __len__(self) -> int:
        return len(self._entries)


class ShortLived(Generic[K, V]):
    """``key -> value`` kept ``seconds`` (0: nothing is kept), at most ``size`` entries."""

    def __init__(self, seconds: float, size: int = 4096) -> None:
        self.seconds, self.size = seconds, size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        if self.seconds <= 0:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] < time.monotonic():
                del self._entries[key]
                return None
            return found[1]

    def put(self, key: K, value: V) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (time.monotonic() + self.seconds, value)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
