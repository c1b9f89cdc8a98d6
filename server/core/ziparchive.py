"""A ZIP archive written as a stream (APPNOTE 6.3.10), for study and series downloads.

Python's :mod:`zipfile` writes to an unseekable output: each entry gets a data
descriptor after its data (sizes and CRC-32 are not known up front), and ZIP64
records are added when an entry or the archive passes 4 GiB or 65,535 entries.
:class:`ZipStream` collects what zipfile writes and hands it out in chunks, so a
response costs the size of one chunk whatever the archive's size. Entries are
stored, not deflated: DICOM pixel data is mostly compressed already, and storing
keeps the download as fast as the disk.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

CHUNK = 1 << 20


class _Sink:
    """An unseekable file zipfile writes into; the bytes are taken out by the generator."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        if data:
            self.parts.append(bytes(data))
            self.size += len(data)
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return out


class ZipStream:
    """Write entries one after another; :meth:`add_file` and :meth:`close` yield the output."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", zipfile.ZIP_STORED, allowZip64=True)
        now = time.localtime()
        self._when = (now.tm_year, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)

    def add_bytes(self, name: str, data: bytes) -> Iterator[bytes]:
        yield from self.add_file(name, len(data), [data])

    def add_file(self, name: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """One stored entry of ``size`` bytes (decides ZIP64 for the entry) from ``chunks``."""
        info = zipfile.ZipInfo(name, date_time=self._when)
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = size
        info.external_attr = 0o644 << 16
        with self._zip.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as entry:
            for chunk in chunks:
                entry.write(chunk)
                if self._sink.size >= CHUNK:
                    yield self._sink.take()
        if self._sink.size:
            yield self._sink.take()

    def close(self) -> Iterator[bytes]:
        """The central directory (with ZIP64 end records when needed)."""
        self._zip.close()
        yield self._sink.take()


def file_chunks(f: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    while data := f.read(chunk):
        yield data
