"""The per-process frame-table cache stays within its byte bound, whatever it holds."""

from __future__ import annotations

from server.index.pixel_cache import PixelIndexCache


def test_entries_without_a_frame_table_are_bounded_too() -> None:
    # ordinary instances have no frame table: their None entries must still count
    cache = PixelIndexCache(max_bytes=64 * 1024)
    for n in range(100_000):
        cache.put(f"blob-{n:064d}", None)
    assert len(cache) < 1_000
    assert cache.get(f"blob-{99_999:064d}") == (True, None)  # the latest stays


def test_tables_are_evicted_oldest_first_and_forgotten() -> None:
    cache = PixelIndexCache(max_bytes=10_000)
    for n in range(10):
        cache.put(f"k{n}", bytes(2_000))
    assert cache.get("k0") == (False, None) and cache.get("k9")[0]
    cache.forget(["k9"])
    assert cache.get("k9") == (False, None)
    cache.put("big", bytes(20_000))  # larger than the bound: not kept
    assert cache.get("big") == (False, None)
