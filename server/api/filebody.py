"""Responses whose body is framing bytes and whole stored files, its length known up front.

With a ``Content-Length`` the server writes each body message as it is (no chunked
framing, which copies every chunk). Where the server offers the gateway's
``gateway.http.response.files`` extension (``server/serving.py``: ``serve`` with
``GATEWAY_ZERO_COPY``, plain TCP), the whole body is one message and every file goes by
``os.sendfile``, Python never touching its bytes; elsewhere (TLS, another ASGI server,
the test client) the files are read in a worker thread and streamed.

A file that vanished or changed size after the length was computed cannot keep the promise
of the header: the response is abandoned (the connection closes, so the client sees a short
body, never a wrong one) and the error logged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from server.core.multipart import coalesce
from server.services.retrieve import BATCH, CHUNK, StoredFile
from server.serving import FILES, file_changed

Piece = bytes | StoredFile


def body_length(pieces: Sequence[Piece]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p.size for p in pieces)


def file_body_response(scope: Scope, pieces: Sequence[Piece], media_type: str) -> Response:
    """The body of ``pieces`` with its Content-Length: zero-copy if the server offers it."""
    headers = {"Content-Length": str(body_length(pieces))}
    if FILES in (scope.get("extensions") or {}):
        return FilesResponse(pieces, media_type, headers)
    return StreamingResponse(coalesce(read_pieces(pieces), BATCH), media_type=media_type,
                             headers=headers)  # fmt: skip


def _chunks(piece: StoredFile) -> Iterator[bytes]:
    """A file in pieces of at most ``CHUNK`` bytes (a big instance never whole in memory)."""
    try:
        f = open(piece.path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise file_changed(piece.path) from None
    with f:
        left = piece.size
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                raise file_changed(piece.path)
            left -= len(data)
            yield data
        if f.read(1):
            raise file_changed(piece.path)


def read_pieces(pieces: Sequence[Piece]) -> Iterator[bytes]:
    """The body's bytes, files read (the path without zero-copy)."""
    for piece in pieces:
        if isinstance(piece, bytes):
            yield piece
        else:
            yield from _chunks(piece)


class FilesResponse(Response):
    """The whole body as one ``gateway.http.response.files`` message (server/serving.py)."""

    def __init__(self, pieces: Sequence[Piece], media_type: str, headers: dict[str, str]):
        self.pieces = pieces  # StoredFile is a (path, size) tuple, as the server wants
        self.count = body_length(pieces)
        super().__init__(None, 200, headers, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": FILES, "pieces": self.pieces, "count": self.count})
