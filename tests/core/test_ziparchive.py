"""The streaming ZIP writer: readable by zipfile and by Info-ZIP's unzip, ZIP64 when needed,
memory bounded by the chunk size."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.ziparchive import CHUNK, ZipStream


def _archive(entries: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    stream = ZipStream()
    for name, data in entries:
        yield from stream.add_bytes(name, data)
    yield from stream.close()


def test_more_than_65535_entries_get_zip64_end_records() -> None:
    count = 70_000
    body = b"".join(_archive((f"{n:06d}.dcm", n.to_bytes(4, "little")) for n in range(count)))
    assert b"PK\x06\x06" in body[-200:]  # ZIP64 end of central directory record
    archive = zipfile.ZipFile(io.BytesIO(body))
    names = archive.namelist()
    assert len(names) == count
    assert archive.read("069999.dcm") == (69_999).to_bytes(4, "little")


def test_a_large_entry_is_streamed_in_chunks_no_bigger_than_the_chunk_size() -> None:
    stream = ZipStream()
    piece = b"\x5a" * (CHUNK // 4)
    sizes = [len(c) for c in stream.add_file("big.dcm", 64 * len(piece), iter([piece] * 64))]
    sizes += [len(c) for c in stream.close()]
    assert max(sizes) <= CHUNK + len(piece)  # never the whole entry at once
    assert sum(sizes) > 64 * len(piece)


def test_info_zip_unzip_accepts_the_archive(tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("Info-ZIP unzip is not installed")
    path = tmp_path / "a.zip"
    path.write_bytes(b"".join(_archive(iter([("x/1.dcm", b"one"), ("2.dcm", b"two" * 1000)]))))
    tested = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout
