"""Streaming ``multipart/related`` reader and writer (RFC 2387, PS3.18 8.6.1.2).

The reader spools each part to its own file while hashing it, so a request of
any size costs constant memory, and work linear in the body (one pass of the
parser, one file per part, at most ``max_parts`` parts). The request is accepted only if the whole body
is well formed: a body cut short or missing its close delimiter raises
:class:`MalformedMultipart` and the caller discards every spooled part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from server.errors import MalformedMultipart, PayloadTooLarge

# RFC 2046 5.1.1: bchars, not ending with a space. The RFC allows 1 to 70 of them, but
# interoperable servers send longer ones (Orthanc's STOW client: two UUIDs joined by "-",
# 73 characters), so up to MAX_BOUNDARY are accepted; anything longer is refused (400).
MAX_BOUNDARY = 200
_BCHARS = "0-9A-Za-z'()+_,\\-./:=?"
_BOUNDARY = re.compile(rf"^[{_BCHARS} ]{{0,{MAX_BOUNDARY - 1}}}[{_BCHARS}]$")


def check_boundary(boundary: str) -> str:
    """RFC 2046 5.1.1 bchars, 1 to ``MAX_BOUNDARY`` long; MalformedMultipart (400) otherwise."""
    if len(boundary) > MAX_BOUNDARY:
        raise MalformedMultipart(
            f"the multipart boundary is {len(boundary)} characters long; at most "
            f"{MAX_BOUNDARY} are accepted (RFC 2046 allows 70)"
        )
    if not _BOUNDARY.match(boundary):
        raise MalformedMultipart(
            "the multipart boundary must be RFC 2046 bchars (letters, digits, '()+_,-./:=? "
            "and inner spaces), not ending with a space"
        )
    return boundary


@dataclass
class SpooledPart:
    path: Path
    content_type: str
    size: int
    sha256: str | None  # None: not taken (``digest=False``)


class MultipartSpooler:
    """Feed body chunks; parts land as files in ``directory``."""

    def __init__(
        self,
        boundary: str,
        directory: Path,
        max_bytes: int,
        max_parts: int = 10000,
        *,
        digest: bool = True,
    ) -> None:
        check_boundary(boundary)
        self.directory = directory
        self.parts: list[SpooledPart] = []
        self._max = max_bytes
        self._max_parts = max_parts
        self._received = 0
        self._file: BinaryIO | None = None
        self._hash: Any = None
        self._digest = digest  # take each part's sha256 while spooling it
        self._size = 0
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._ended = False
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_end": self._end,
        }
        self._parser = MultipartParser(
            boundary.encode("latin-1"), callbacks, max_header_count=32, max_header_size=16384
        )

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._max:
            raise PayloadTooLarge(f"the request body exceeds the limit of {self._max} bytes")
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedMultipart(f"malformed multipart body: {exc}") from exc

    def finish(self) -> list[SpooledPart]:
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise MalformedMultipart(f"malformed multipart body: {exc}") from exc
        if not self._ended:
            raise MalformedMultipart(
                "the multipart body ended before its close delimiter (truncated request?)"
            )
        if not self.parts:
            raise MalformedMultipart("the multipart body contains no parts")
        return self.parts

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- parser callbacks ------------------------------------------------
    def _part_begin(self) -> None:
        if len(self.parts) >= self._max_parts:
            raise PayloadTooLarge(
                f"the request has more than {self._max_parts} parts "
                "(GATEWAY_STOW__MAX_PARTS); send the instances in several requests"
            )
        self._headers = {}
        self._size = 0
        self._hash = hashlib.sha256() if self._digest else None
        path = self.directory / f"part-{len(self.parts):06d}"
        self._file = path.open("wb")
        self._path = path

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        assert self._file is not None
        self._file.write(chunk)
        if self._hash is not None:
            self._hash.update(chunk)
        self._size += len(chunk)

    def _part_end(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        content_type = self._headers.get("content-type", "application/dicom")
        digest = self._hash.hexdigest() if self._hash is not None else None
        self.parts.append(SpooledPart(self._path, content_type, self._size, digest))

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field = b""
        self._value = b""

    def _end(self) -> None:
        self._ended = True


def write_part_header(boundary: str, content_type: str, length: int | None = None) -> bytes:
    """PS3.18 8.6.1.2: the delimiter and headers that open one part."""
    head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode("latin-1")


def close_delimiter(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def iter_file(f: BinaryIO, chunk_size: int = 1 << 20, length: int | None = None) -> Iterator[bytes]:
    remaining = length
    while remaining is None or remaining > 0:
        size = chunk_size if remaining is None else min(chunk_size, remaining)
        chunk = f.read(size)
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def coalesce(pieces: Iterable[bytes], at_least: int) -> Iterator[bytes]:
    """The same bytes in chunks of ``at_least`` bytes or more (the last may be shorter).

    A server iterates a synchronous body in a worker thread, one hand-off to the event
    loop per chunk: many small chunks (a part header, an instance of 130 kB, a metadata
    record of 2 kB) cost more in hand-offs than in bytes. A piece that is big enough on
    its own passes through without a copy.
    """
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        if not batch and len(piece) >= at_least:
            yield piece
            continue
        batch.append(piece)
        size += len(piece)
        if size >= at_least:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)
