"""The HTTP/1.1 protocol ``serve`` runs: uvicorn's httptools protocol plus zero-copy sends.

The ASGI ``http.response.zerocopysend`` extension lets an application hand the server an
open file (and an offset and count) instead of bytes. uvicorn does not implement it; this
subclass advertises it in ``scope["extensions"]`` and answers it with ``os.sendfile``
from the page cache to the socket, without the bytes entering Python: once the transport's
write buffer is empty (uvicorn's flow control, low water mark 0), on a duplicate of the
socket's descriptor, waiting for room with the event loop (uvloop or asyncio). uvloop has
no ``loop.sendfile``, and asyncio's loop (whose ``sendfile`` is native) made every other
request slower (series metadata p50 12 -> 46 ms in the WADO bench), hence this. Where the
transport is TLS the bytes are read and written instead, so the message always works;
``gateway_http_file_bytes_total{mode}`` counts which way every byte went.

Only responses with a ``Content-Length`` may use it (chunked framing would need the bytes
in hand). The rest of the cycle (keep-alive, flow control, length checks) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from server.metrics import observe_file_bytes

log = logging.getLogger("gateway.serving")
ZEROCOPY = "http.response.zerocopysend"
PROTOCOL = "server.serving:ZeroCopyHttpToolsProtocol"  # uvicorn's ``http`` option


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, answering ``http.response.zerocopysend`` too."""

    corked = (
        False  # TCP_CORK on: framing and file bytes leave in full segments (nginx's tcp_nopush)
    )

    async def send(self, message: Any) -> None:
        if message["type"] != ZEROCOPY:
            await super().send(message)
            if self.corked and (self.response_complete or self.disconnected):
                self._cork(False)  # the last bytes go now
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started or self.response_complete:
            raise RuntimeError(f"'{ZEROCOPY}' outside a started, unfinished response")
        if self.chunked_encoding:
            raise RuntimeError(f"'{ZEROCOPY}' needs a Content-Length response")
        more_body = bool(message.get("more_body", False))
        if self.scope["method"] != "HEAD":
            file = message["file"]
            offset = int(message.get("offset") or 0)
            count = message.get("count")
            if count is None:
                count = os.fstat(file.fileno()).st_size - offset
            if count > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            if not await self._sendfile(file, offset, count):
                return
            self.expected_content_length -= count
        await super().send({"type": "http.response.body", "body": b"", "more_body": more_body})

    async def _sendfile(self, file: Any, offset: int, count: int) -> bool:
        """``count`` bytes of ``file`` from ``offset`` to the client; False if it went away."""
        transport = self.transport
        sock = transport.get_extra_info("socket")
        try:
            if sock is None or transport.get_extra_info("ssl_object") is not None:
                transport.write(os.pread(file.fileno(), count, offset))  # TLS: bytes in hand
                sent, mode = count, "copy"
            else:
                if not self.corked:
                    self._cork(True)
                await self._drained()  # what uvicorn wrote before must leave first
                if self.disconnected:
                    raise ConnectionResetError("client went away")
                sent = await self._sendfile_to(sock.fileno(), file.fileno(), offset, count)
                mode = "sendfile"
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: transport closing
            log.debug("client went away during a file body: %s", exc)
            self.disconnected = True
            transport.close()
            return False
        if sent != count:  # the file shrank under us: the promised length cannot be kept
            raise RuntimeError(f"file body ended after {sent} of {count} bytes")
        observe_file_bytes(mode, count)
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

    async def _sendfile_to(self, sock: int, fd: int, offset: int, count: int) -> int:
        """``os.sendfile`` on the (non-blocking) socket, waiting for room when it is full.

        On a duplicate of the socket's descriptor: the event loop refuses to watch the
        transport's own, and a number of ours cannot be closed and reused by another
        connection while this waits."""
        sent = 0
        own = os.dup(sock)
        try:
            while sent < count:
                try:
                    n = os.sendfile(own, fd, offset + sent, count - sent)
                except BlockingIOError:
                    await self._writable(own)
                    continue
                if n == 0:  # end of file
                    break
                sent += n
        finally:
            os.close(own)
        return sent

    async def _writable(self, fd: int) -> None:
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

    waiter: asyncio.Future[None] | None = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose requests may answer with ``zerocopysend``."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {ZEROCOPY: {}}

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        # The cycle's task starts on the next loop turn, so its class can still change.
        if self.cycle is not previous and type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = ZeroCopyCycle

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        cycle = self.cycle
        if isinstance(cycle, ZeroCopyCycle) and cycle.waiter is not None:
            _wake(cycle.waiter)  # a send waiting for room in the socket gives up
