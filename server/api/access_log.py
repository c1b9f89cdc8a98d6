"""One access-log line per HTTP request, and the request id that ties it to the audit trail.

Pure ASGI (streamed responses pass through untouched). The request id is the caller's
``X-Request-ID`` when it is a short token of safe characters (a proxy's or a client's own
id, so logs of both sides join), else a new random one; it is answered in ``X-Request-ID``,
put in ``scope["state"]["request_id"]`` for the audit record, and written on the log line.

The line names the route *template* (``/dicom-web/studies/{study}``), never the raw path or
the query string: UIDs, patient ids and search values stay out of operational logs (the
audit trail, which is access-controlled, keeps them).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import tracing
from server.metrics import observe_request

log = logging.getLogger("gateway.access")
HEADER = "X-Request-ID"
_BODY = ("http.response.body", "gateway.http.response.files")  # the latter: server/serving.py
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _SAFE_ID.fullmatch(text):
                return text
            break
    return secrets.token_hex(16)


def route_template(scope: Scope) -> str:
    """The path with every path parameter put back as ``{name}`` (prefixes included, which
    the matched route object alone does not know); unmatched requests by outcome only."""
    raw = str(scope.get("path", ""))
    if scope.get("route") is None:
        for static in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
            if raw == static or raw.startswith(static + "/"):
                return static
        return "(unmatched)"
    template = raw
    params = (scope.get("path_params") or {}).items()
    for name, value in sorted(params, key=lambda item: -len(str(item[1]))):
        if str(value):  # whole segments only; a {path:path} value may span several
            template = re.sub(rf"(?<=/){re.escape(str(value))}(?=/|$)", f"{{{name}}}", template)
    return template


def caller(scope: Scope) -> str:
    state: dict[str, Any] = scope.get("state") or {}
    principal = state.get("principal")
    party = getattr(principal, "party", None)
    client_id = getattr(party, "client_id", None) or state.get("audit_client")
    return str(client_id) if client_id else "-"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        if tracing.enabled():
            await self._traced(scope, receive, send, rid)
        else:
            await self._logged(scope, receive, send, rid)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        """The request as a server span (parent: an incoming ``traceparent``)."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = str(scope.get("method"))
        with tracing.span(
            f"{method}", kind="server", parent=tracing.extract(headers),
            **{"http.request.method": method, "gateway.request_id": rid},
        ) as span:  # fmt: skip
            try:
                await self._logged(scope, receive, send, rid)
            finally:
                route = route_template(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                status = scope["state"].get("_status")
                if status is not None:
                    span.set_attribute("http.response.status_code", status)

    async def _logged(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = time.perf_counter()
        seen = {"status": 500, "bytes": 0, "logged": False}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
                scope["state"]["_status"] = seen["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            elif message["type"] in _BODY:
                seen["bytes"] = int(seen["bytes"]) + (
                    len(message.get("body", b"")) if "body" in message else message["count"]
                )
                if not message.get("more_body", False):
                    try:
                        await send(message)
                    finally:
                        self._log(scope, rid, seen, started)  # the time includes the body
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if not seen["logged"]:
                self._log(scope, rid, seen, started)

    @staticmethod
    def _log(scope: Scope, rid: str, seen: dict[str, Any], started: float) -> None:
        seen["logged"] = True
        seconds = time.perf_counter() - started
        ms = seconds * 1000
        route = route_template(scope)
        observe_request(route, str(scope.get("method")), int(seen["status"]), seconds)
        log.info(
            "%s %s %d %.1fms %dB client=%s rid=%s",
            scope.get("method"),
            route,
            seen["status"],
            ms,
            seen["bytes"],
            caller(scope),
            rid,
            extra={
                "http": {
                    "method": scope.get("method"),
                    "route": route,
                    "status": seen["status"],
                    "duration_ms": round(ms, 1),
                    "bytes": seen["bytes"],
                    "client_id": caller(scope),
                    "request_id": rid,
                }
            },
        )
