"""The BlobStore contract (server/storage/base.py), the same tests on every store."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from server.errors import NotFound
from server.storage.base import BlobStore
from tests.storage.contract.conftest import PART

pytestmark = pytest.mark.index_independent


def key_of(data: bytes, name: str = "x") -> str:
    uid = hashlib.sha256(name.encode()).hexdigest()
    return f"{uid}.{hashlib.sha256(data).hexdigest()[:16]}.dcm"


def spooled(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"spool-{hashlib.sha256(data).hexdigest()[:8]}-{len(data)}"
    path.write_bytes(data)
    return path


def put(store: BlobStore, tmp_path: Path, data: bytes, name: str = "x") -> str:
    key = key_of(data, name)
    store.put_file(key, spooled(tmp_path, data))
    store.sync()
    return key


def read_all(store: BlobStore, key: str) -> bytes:
    with store.open(key) as f:
        return f.read()


def test_a_put_blob_reads_back_identical_and_its_spool_file_is_consumed(
    store: BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    source = spooled(tmp_path, data)
    key = key_of(data)
    store.put_file(key, source)
    store.sync()
    assert not source.exists()
    assert store.exists(key)
    assert store.size(key) == len(data)
    assert read_all(store, key) == data
    assert store.path(key).read_bytes() == data


def test_a_blob_bigger_than_one_upload_part_reads_back_identical(
    store: BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(2 * PART + 12345)  # three parts on S3
    key = put(store, tmp_path, data)
    assert store.size(key) == len(data)
    assert hashlib.sha256(read_all(store, key)).digest() == hashlib.sha256(data).digest()
    incomplete = getattr(store, "incomplete_uploads", lambda: [])()
    assert incomplete == []


def test_ranged_reads_return_exactly_the_bytes_asked_for(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    key = put(store, tmp_path, data)
    with store.open(key) as f:
        f.seek(123_456)
        assert f.read(1000) == data[123_456:124_456]
        assert f.tell() == 124_456
        assert f.read(10) == data[124_456:124_466]  # continues where the last read stopped
        f.seek(-50, os.SEEK_END)
        assert f.read(1000) == data[-50:]  # clipped at the end
        assert f.read(10) == b""
        f.seek(0)
        assert f.read(4) == data[:4]


def test_a_missing_blob_does_not_exist_and_reading_it_fails_clearly(
    store: BlobStore, tmp_path: Path
) -> None:
    key = key_of(b"never stored")
    assert not store.exists(key)
    with pytest.raises(NotFound):
        store.open(key)
    with pytest.raises(FileNotFoundError):
        store.size(key)
    with pytest.raises(FileNotFoundError):
        store.path(key).read_bytes()
    assert store.quarantine(key, "gone") is None


def test_keys_list_exactly_the_blobs_stored_and_delete_removes_one(
    store: BlobStore, tmp_path: Path
) -> None:
    blobs = [os.urandom(1000 + n) for n in range(5)]
    keys = {put(store, tmp_path, data, name=str(n)) for n, data in enumerate(blobs)}
    assert set(store.keys()) == keys
    gone = sorted(keys)[0]
    store.delete(gone)
    store.delete(gone)  # removing a blob that is already gone is no error
    assert not store.exists(gone)
    assert set(store.keys()) == keys - {gone}


def test_invalid_keys_are_refused_before_any_write(store: BlobStore, tmp_path: Path) -> None:
    for bad in ("", "../escape", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            store.put_file(bad, spooled(tmp_path, b"data"))
    assert list(store.keys()) == []


def test_quarantine_moves_a_blob_out_of_the_listing_without_deleting_it(
    store: BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(5000)
    key = put(store, tmp_path, data)
    where = store.quarantine(key, "content does not match its hash")
    assert where is not None
    assert not store.exists(key)
    assert key not in set(store.keys())
    assert key in str(where)


def test_putting_the_same_content_again_keeps_one_intact_blob(
    store: BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(20_000)
    key = put(store, tmp_path, data)
    assert put(store, tmp_path, data) == key
    assert list(store.keys()) == [key]
    assert read_all(store, key) == data


def test_a_put_that_cannot_read_its_source_raises_oserror_and_leaves_nothing(
    store: BlobStore, tmp_path: Path
) -> None:
    key = key_of(b"missing source")
    with pytest.raises(OSError):
        store.put_file(key, tmp_path / "no-such-spool")
    assert not store.exists(key)
    assert list(store.keys()) == []


def test_readers_never_see_a_partial_blob_while_a_big_one_is_written(
    store: BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(3 * PART)
    key = key_of(data)
    source = spooled(tmp_path, data)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.append(store.size(key))
            except FileNotFoundError:
                seen.append(-1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        store.put_file(key, source)
        store.sync()
    finally:
        done.set()
        watcher.join()
    assert seen, "the watcher never looked"
    assert set(seen) <= {-1, len(data)}, "a reader saw a blob of another size"
    assert store.size(key) == len(data)


def test_ready_reports_a_usable_store(store: BlobStore) -> None:
    assert store.ready() is None


def test_local_files_are_the_blobs_bytes_or_none_for_a_store_without_local_files(
    store: BlobStore, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    key = put(store, tmp_path, data)
    missing = key_of(b"never stored", "gone")
    found = store.local_files([key, missing])
    if found is None:  # objects live elsewhere (S3): responses stream them instead
        return
    first, second = found
    assert first is not None and second is None
    path, size = first
    assert size == len(data) and Path(path).read_bytes() == data
