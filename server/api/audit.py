"""The one audit point: every data access and every refused attempt becomes an AuditEvent.

Pure ASGI, so streamed responses pass through untouched; the event is queued when
the response starts (the log writes in the background, in batches).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.security.audit import AccessRecord, AuditLog
from server.security.model import Principal

log = logging.getLogger("gateway.audit")
AUDITED = (
    "/dicom-web",
    "/wado",
    "/datasets/",
    "/fhir",
    "/oauth/token",
    "/oauth/logout",
    "/api/datasets/eucaimSearch",
)
NOT_AUDITED = ("/fhir/metadata", "/fhir/.well-known")
_ACTIONS = {"GET": "read", "POST": "create", "PUT": "update", "DELETE": "delete"}


def audited(path: str) -> bool:
    return path.startswith(AUDITED) and not path.startswith(NOT_AUDITED)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, audit_log: AuditLog) -> None:
        self.app = app
        self.audit_log = audit_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not audited(scope["path"]):
            await self.app(scope, receive, send)
            return
        status = {"code": 500, "recorded": False}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["recorded"] = True
                self._record(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if not status["recorded"]:
                self._record(scope, 500)

    def _record(self, scope: Scope, http_status: int) -> None:
        try:
            self.audit_log.record(access_record(scope, http_status))
        except Exception:  # auditing must never break a response; the failure is logged
            log.exception("could not queue an audit event for %s", scope.get("path"))


def access_record(scope: Scope, http_status: int) -> AccessRecord:
    state: dict[str, Any] = scope.get("state") or {}
    principal: Principal | None = state.get("principal")
    note: dict[str, Any] = state.get("audit_note") or {}
    datasets = tuple(note.get("datasets", ()))
    grants = principal.grants if principal is not None else {}
    agreements = tuple(
        sorted(
            {
                g.agreement
                for d, g in grants.items()
                if g.agreement and (not datasets or d in datasets)
            }
        )
    )
    purposes = {g.purpose for g in grants.values() if g.purpose and g.agreement in agreements}
    party = principal.party if principal is not None else None
    client = scope.get("client")
    return AccessRecord(
        action=str(note.get("action") or _action(scope)),
        outcome=0 if http_status < 400 else (8 if http_status >= 500 else 4),
        http_status=http_status,
        method=str(scope.get("method", "")),
        path=str(scope.get("path", "")),
        query=(scope.get("query_string") or b"").decode("latin-1") or None,
        source_address=client[0] if client else None,
        client_id=party.client_id if party else (state.get("audit_client")),
        subject=party.subject if party else None,
        issuer=party.issuer if party else None,
        agreements=agreements,
        purpose=sorted(purposes)[0] if purposes else None,
        datasets=datasets,
        entities=tuple(note.get("entities", ())),
        deidentified=tuple(note.get("deidentified", ())),
        request_id=state.get("request_id"),
        bases=principal.bases(datasets) if principal is not None else (),
    )


def _action(scope: Scope) -> str:
    method, path = str(scope.get("method", "")), str(scope.get("path", ""))
    if method == "GET" and path.endswith(("/studies", "/series", "/instances")):
        return "search"
    if method == "GET" and path == "/wado":
        return "retrieve"
    if method == "GET" and "/dicom-web/" in path:
        return "metadata" if path.endswith("/metadata") else "retrieve"
    if (method == "POST" and path.endswith("/studies")) or (
        "/studies/" in path and method == "POST"
    ):
        return "store"
    if method == "GET" and path.startswith("/fhir/") and path.count("/") == 2:
        return "search"
    return _ACTIONS.get(method, "read")
