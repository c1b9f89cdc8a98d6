"""The HTTP/1.1 protocol ``serve`` runs: uvicorn's httptools protocol plus zero-copy bodies.

uvicorn answers ASGI body messages by copying bytes into its transport. For the WADO-RS
bodies that are framing bytes around whole stored files, this subclass offers a private
extension, ``gateway.http.response.files`` (in ``scope["extensions"]`` on plain TCP, not
behind TLS): the application sends *one* message listing the body's pieces (bytes, or a
path with its expected size) and the server sends them all, each file by ``os.sendfile``
from the page cache to the socket, its bytes never in Python.

The pieces are pumped by a worker thread, so that a file read from disk (a cold page
cache) never stalls the event loop: the thread writes until the socket is full, waits up
to a moment for room (``poll``, the GIL released), and when the client reads slowly hands
the wait back to the event loop (``add_writer``) instead of holding a thread. One message
instead of two per part also spares the part the trip through every middleware; both
were the cost of the gateway's earlier per-file zero-copy messages (a part of a
300-instance series cost ~0.1 ms of Python). TCP_CORK is on while a response lasts, so
framing and file bytes leave in full segments (nginx's ``tcp_nopush``).

Only responses with a ``Content-Length`` may use it. A file that is gone or shorter than
the message says cannot keep that promise: the send raises, the application's response
fails and uvicorn closes the connection (a short body, never a wrong one). Stored blobs are
named by their content's hash, so a file does not grow under its name; the sizes were read
(``stat``) just before, and no extra ``fstat`` per file is paid here.
``gateway_http_file_bytes_total{mode}`` counts the bytes sent so. The rest of the cycle
(keep-alive, flow control, length checks) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from server.metrics import observe_file_bytes

log = logging.getLogger("gateway.serving")
FILES = "gateway.http.response.files"
PROTOCOL = "server.serving:ZeroCopyHttpToolsProtocol"  # uvicorn's ``http`` option
PATIENCE = 0.05  # s of waiting for room a pump run may spend before the event loop takes over
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gateway-sendfile")

Piece = bytes | tuple[str, int]  # framing bytes, or (path, size) of a whole file


class FileChanged(RuntimeError):
    """A file of the body is gone or has another size than the response promised (the
    response is abandoned: the connection closes, a short body, never a wrong one)."""


class _Pump:
    """Where a body's send stands: piece ``index``, ``offset`` bytes into it."""

    def __init__(self, sock: int, pieces: Sequence[Piece]) -> None:
        self.sock = sock
        self.pieces = pieces
        self.index = 0
        self.offset = 0
        self.fd = -1
        self.file_bytes = 0
        self.stop = threading.Event()  # set when the client is gone

    def run(self) -> bool:
        """Send until done (True) or until ``PATIENCE`` seconds in all were spent waiting for
        room (False); in a thread. The bound is on the whole run, not each wait, so a client
        that reads a trickle at a time cannot hold a thread of the pool."""
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT)
        deadline = time.monotonic() + PATIENCE
        while not self.step():
            if self.stop.is_set():
                raise ConnectionResetError("client went away")
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return False  # a slow reader: the event loop waits, not this thread
        return True

    def step(self) -> bool:
        """Send what the socket takes now; True when the whole body is out."""
        pieces, sock = self.pieces, self.sock
        while self.index < len(pieces):
            piece = pieces[self.index]
            try:
                if isinstance(piece, bytes):
                    self.offset += os.write(sock, memoryview(piece)[self.offset :])
                    size = len(piece)
                else:
                    path, size = piece
                    if self.fd < 0:
                        self.fd = _open(path)
                    n = os.sendfile(sock, self.fd, self.offset, size - self.offset)
                    if n == 0:  # shorter than promised
                        raise file_changed(path)
                    self.offset += n
                    self.file_bytes += n
            except BlockingIOError:
                return False
            if self.offset < size:
                continue
            self.close_file()
            self.index += 1
            self.offset = 0
        return True

    def close_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise file_changed(path) from None


def file_changed(path: str) -> FileChanged:
    """The error (logged) for a stored file gone or changed while its response is sent."""
    name = os.path.basename(path)
    log.error("stored file %s changed during a response; response abandoned", name)
    return FileChanged(name)


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, answering ``gateway.http.response.files`` too."""

    corked = False
    pump: _Pump | None = None
    waiter: asyncio.Future[None] | None = None

    async def send(self, message: Any) -> None:
        if message["type"] != FILES:
            await super().send(message)
            if self.corked and (self.response_complete or self.disconnected):
                self._cork(False)  # the last bytes go now
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"'{FILES}' outside a started, unfinished response")
        if self.chunked_encoding:
            raise RuntimeError(f"'{FILES}' needs a Content-Length response")
        pieces: Sequence[Piece] = message["pieces"]
        total = sum(len(p) if isinstance(p, bytes) else p[1] for p in pieces)
        if total > self.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if self.scope["method"] != "HEAD" and total:
            if not await self._send_pieces(pieces):
                return
            self.expected_content_length -= total
        more_body = bool(message.get("more_body", False))
        await super().send({"type": "http.response.body", "body": b"", "more_body": more_body})
        if self.corked and (self.response_complete or self.disconnected):
            self._cork(False)

    async def _send_pieces(self, pieces: Sequence[Piece]) -> bool:
        """The pieces to the client; False if it went away."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            raise RuntimeError(f"'{FILES}' needs a socket")
        if not self.corked:
            self._cork(True)
        await self._drained()  # what uvicorn wrote before must leave first
        if self.disconnected:
            return False
        pump = self.pump = _Pump(os.dup(sock.fileno()), pieces)
        loop = asyncio.get_running_loop()
        try:
            while not await loop.run_in_executor(_pool, pump.run):
                await self._writable(pump.sock)
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: transport closing
            if isinstance(exc, FileChanged):
                raise
            log.debug("client went away during a file body: %s", exc)
            self.disconnected = True
            self.transport.close()
            return False
        finally:
            self.pump = None
            pump.close_file()
            os.close(pump.sock)
            observe_file_bytes("sendfile", pump.file_bytes)
        return True

    def _cork(self, on: bool) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is None or self.transport.is_closing():
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
            self.corked = on

    async def _drained(self) -> None:
        """Until the transport's write buffer is empty (uvicorn's flow control, low water 0)."""
        transport = self.transport
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)  # pauses writing while not empty
        try:
            while transport.get_write_buffer_size() and not self.disconnected:
                await self.flow.drain()
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=high, low=low)

    async def _writable(self, fd: int) -> None:
        """Until the socket (our duplicate of its descriptor: the loop refuses to watch the
        transport's own) has room, or the client is gone."""
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        loop.add_writer(fd, _wake, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(fd)
            self.waiter = None
        if self.disconnected:
            raise ConnectionResetError("client went away")

    def gone(self) -> None:
        """The connection was lost: a pump or a wait in progress gives up."""
        if self.pump is not None:
            self.pump.stop.set()
        if self.waiter is not None:
            _wake(self.waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests may answer with whole files."""

    plain = True  # no TLS on this connection: files may go by sendfile

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.plain = transport.get_extra_info("ssl_object") is None and (
            transport.get_extra_info("socket") is not None
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.plain:
            self.scope["extensions"] = {FILES: {}}

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        # The cycle's task starts on the next loop turn, so its class can still change.
        if self.cycle is not previous and type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = ZeroCopyCycle

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        cycle = self.cycle
        if isinstance(cycle, ZeroCopyCycle):
            cycle.gone()
