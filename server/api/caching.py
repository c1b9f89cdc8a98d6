"""``Cache-Control: no-store`` on every response except a few public documents.

Responses of this gateway carry patient data, tokens or facts about who may see what; no
browser, proxy or viewer cache may keep them (RFC 9111 5.2.2.5; RFC 6749 5.1 for tokens).
Only documents that are the same for everyone and hold no data may be cached: key sets,
discovery and capability documents, the API description, the FAIR Data Point (``/fdp``,
public catalogue metadata, which sets its own ``Cache-Control: public, max-age``), and the
viewer's static files (``/viewer``, which sets its own; its configuration is ``no-store``).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_DOCUMENTS = ("/oauth/jwks", "/.well-known/", "/fhir/metadata", "/fhir/.well-known/",
                    "/docs", "/redoc", "/openapi.json", "/fdp", "/viewer")  # fmt: skip


def cacheable(path: str) -> bool:
    return path.startswith(PUBLIC_DOCUMENTS)


class NoStoreMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or cacheable(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_no_store)
