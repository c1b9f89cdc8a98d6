"""The HTTP/1.1 protocol ``serve`` runs: uvicorn's httptools protocol plus zero-copy sends.

The ASGI ``http.response.zerocopysend`` extension lets an application hand the server an
open file (and an offset and count) instead of bytes. uvicorn does not implement it; this
subclass advertises it in ``scope["extensions"]`` and answers it with the event loop's
``sendfile``: on asyncio's selector loop that is ``os.sendfile`` from the page cache to the
socket, without the bytes entering Python. Where the loop or transport cannot do that (a
TLS transport, uvloop, which has no ``sendfile``) the bytes are read and written instead,
so the message always works; ``gateway_http_file_bytes_total{mode}`` counts which way
every byte went.

Only responses with a ``Content-Length`` may use it (chunked framing would need the bytes
in hand). The rest of the cycle (keep-alive, flow control, length checks) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from server.metrics import observe_file_bytes

log = logging.getLogger("gateway.serving")
ZEROCOPY = "http.response.zerocopysend"
PROTOCOL = "server.serving:ZeroCopyHttpToolsProtocol"  # uvicorn's ``http`` option
LOOP = "asyncio"  # the loop whose sendfile is native (uvloop has none)


class ZeroCopyCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, answering ``http.response.zerocopysend`` too."""

    async def send(self, message: Any) -> None:
        if message["type"] != ZEROCOPY:
            await super().send(message)
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
        loop = asyncio.get_running_loop()
        try:
            try:
                sent = await loop.sendfile(self.transport, file, offset, count, fallback=False)
                mode = "sendfile"
            except (asyncio.SendfileNotAvailableError, NotImplementedError, AttributeError):
                self.transport.write(os.pread(file.fileno(), count, offset))
                sent, mode = count, "copy"
        except (ConnectionError, RuntimeError) as exc:  # RuntimeError: transport closing
            log.debug("client went away during a file body: %s", exc)
            self.disconnected = True
            self.transport.close()
            return False
        if sent != count:  # the file shrank under us: the promised length cannot be kept
            raise RuntimeError(f"file body ended after {sent} of {count} bytes")
        observe_file_bytes(mode, count)
        return True


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
