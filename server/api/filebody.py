"""Responses whose body is framing bytes and whole stored files, its length known up front.

With a ``Content-Length`` the server writes each body message as it is (no chunked
framing, which copies every chunk). Where the server offers the ASGI
``http.response.zerocopysend`` extension (``server/serving.py``), each file goes by a
zero-copy send and Python never touches its bytes; elsewhere (another ASGI server, the
test client) the files are read in a worker thread and streamed.

A file that vanished or changed size after the length was computed cannot keep the promise
of the header: the response is abandoned (the connection closes, so the client sees a short
body, never a wrong one) and the error logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from server.core.multipart import coalesce
from server.services.retrieve import BATCH, CHUNK, StoredFile
from server.serving import ZEROCOPY

log = logging.getLogger("gateway.retrieve")
INLINE = 16 * 1024  # files this small are read and sent with the framing around them

Piece = bytes | StoredFile


class FileBodyChanged(RuntimeError):
    """A stored file is gone or has another size than when the response was planned."""


def body_length(pieces: Sequence[Piece]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)


def file_body_response(scope: Scope, pieces: Sequence[Piece], media_type: str) -> Response:
    """The body of ``pieces`` with its Content-Length: zero-copy if the server offers it."""
    headers = {"Content-Length": str(body_length(pieces))}
    if ZEROCOPY in (scope.get("extensions") or {}):
        return ZeroCopyResponse(pieces, media_type, headers)
    return StreamingResponse(coalesce(read_pieces(pieces), BATCH), media_type=media_type,
                             headers=headers)  # fmt: skip


def _changed(piece: StoredFile) -> FileBodyChanged:
    log.error("stored file %s changed during a response; response abandoned", piece.path.name)
    return FileBodyChanged(piece.path.name)


def _read(piece: StoredFile) -> bytes:
    """A small file whole (ZeroCopyResponse inlines those)."""
    try:
        with open(piece.path, "rb") as f:
            data = f.read(piece.size + 1)
    except FileNotFoundError:
        data = b""
    if len(data) != piece.size:
        raise _changed(piece)
    return data


def _chunks(piece: StoredFile) -> Iterator[bytes]:
    """A file in pieces of at most ``CHUNK`` bytes (a big instance never whole in memory)."""
    try:
        f = open(piece.path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise _changed(piece) from None
    with f:
        left = piece.size
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise _changed(piece)
            left -= len(data)
            yield data
        if f.read(1):
            raise _changed(piece)


def read_pieces(pieces: Sequence[Piece]) -> Iterator[bytes]:
    """The body's bytes, files read (the path without zero-copy)."""
    for piece in pieces:
        if isinstance(piece, bytes):
            yield piece
        else:
            yield from _chunks(piece)


class ZeroCopyResponse(Response):
    """Framing bytes as body messages, each file as one ``zerocopysend`` message."""

    def __init__(self, pieces: Sequence[Piece], media_type: str, headers: dict[str, str]):
        self.pieces = pieces
        super().__init__(None, 200, headers, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pending: list[bytes] = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                pending.append(piece)
            elif piece.size <= INLINE:
                pending.append(_read(piece))
            else:
                await self._send_file(send, piece, b"".join(pending))
                pending = []
        await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})

    @staticmethod
    async def _send_file(send: Send, piece: StoredFile, before: bytes) -> None:
        try:
            f = open(piece.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            f = None
        try:
            if f is None or os.fstat(f.fileno()).st_size != piece.size:
                raise _changed(piece)
            if before:
                await send({"type": "http.response.body", "body": before, "more_body": True})
            await send({"type": ZEROCOPY, "file": f, "offset": 0, "count": piece.size,
                        "more_body": True})  # fmt: skip
        finally:
            if f is not None:
                f.close()
