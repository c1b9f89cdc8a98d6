"""Request bodies: the caller is authenticated before a byte of the body is read, and no body
is read past its route's limit (declared Content-Length, and counted while a chunked body
streams). One middleware, so no route can forget either.

=================================================  =========================  ==============
route                                              anonymous caller           limit
=================================================  =========================  ==============
``/oauth/token``                                   yes (it authenticates      64 KiB
                                                   clients from the body)
``/oauth/logout``, ``/oauth/dev-login``            yes (sign-out, sign-in     64 KiB
                                                   forms of browsers)
``POST /fhir/{type}/_search``, ``/$validate``      yes (reads only)           FHIR limit
``POST /api/datasets/eucaimSearch``                the route checks its own   1 MiB
                                                   Secret or bearer token
every other FHIR body (create, update, batch)      401 before reading         FHIR limit
STOW (``.../dicom-web/studies[/{study}]``)          401 before reading         STOW limit
anything else                                      401 before reading         1 MiB
=================================================  =========================  ==============

A token that does not verify is a 401 before reading on every route. What the caller may then
do (e.g. store into this dataset) is decided by the route, within the limit.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.deps import principal
from server.api.errors import domain_response
from server.errors import GatewayError, PayloadTooLarge, Unauthorized

if TYPE_CHECKING:
    from server.settings import Settings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
TOKEN_ENDPOINT = "/oauth/token"
FEDERATION_SEARCH = "/api/datasets/eucaimSearch"
# Routes that check their own credentials before reading the body: the token endpoint
# (client authentication in the body or a Basic header) and the EUCAIM search (its
# ``Authorization: Secret`` header, or a bearer token, and a 404 when not configured).
# Forms a browser sends without a bearer token: sign-out (RFC 7009) and the development login.
OAUTH_FORMS = frozenset({TOKEN_ENDPOINT, "/oauth/logout", "/oauth/dev-login"})
SELF_AUTHENTICATING = OAUTH_FORMS | {FEDERATION_SEARCH}
TOKEN_LIMIT = 64 * 1024  # two JWTs of at most 16 KiB each and a few form fields
OTHER_LIMIT = 1024**2
_ANONYMOUS_READS = re.compile(r"^/fhir/[A-Za-z]+/(?:_search|\$validate)/?$")
_STOW = re.compile(r"^(?:/datasets/[^/]+)?/dicom-web/studies(?:/[^/]+)?/?$")


def body_limit(settings: Settings, path: str) -> int:
    if path in OAUTH_FORMS:
        return TOKEN_LIMIT
    if path == "/fhir" or path.startswith("/fhir/"):
        return settings.fhir.max_body_bytes
    if _STOW.match(path):
        return settings.stow.max_body_bytes
    return OTHER_LIMIT


_FHIR_RESOURCE = {"type": "object", "required": ["resourceType"],
                  "properties": {"resourceType": {"type": "string"}}}  # fmt: skip
_FORM = {"type": "object", "additionalProperties": {"type": "string"}}


def request_body(path: str) -> dict[str, Any]:
    """The OpenAPI requestBody of a body-taking route (the media types it reads)."""
    if path == TOKEN_ENDPOINT:
        grant = {"type": "object", "required": ["grant_type"],
                 "properties": {"grant_type": {"type": "string"}, "scope": {"type": "string"}},
                 "additionalProperties": {"type": "string"}}  # fmt: skip
        content = {"application/x-www-form-urlencoded": {"schema": grant}}
    elif path in OAUTH_FORMS:
        content = {"application/x-www-form-urlencoded": {"schema": _FORM}}
    elif path == FEDERATION_SEARCH:
        content = {"application/json": {"schema": {"type": "object", "required": ["ast"],
                                                   "properties": {"ast": {"type": "object"}}}}}  # fmt: skip
    elif path.endswith("/_search"):
        content = {"application/x-www-form-urlencoded": {"schema": _FORM}}
    elif path == "/fhir" or path.startswith("/fhir/"):
        content = {"application/fhir+json": {"schema": _FHIR_RESOURCE}}
    else:  # STOW: multipart/related; type="application/dicom" (PS3.18 10.5.1)
        content = {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}
    return {"required": True, "content": content}


def describe_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """Add the requestBody of every POST/PUT/PATCH operation to an OpenAPI document."""
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method.upper() in BODY_METHODS:
                operation.setdefault("requestBody", request_body(path))
    return document


def anonymous_may_send(path: str) -> bool:
    return path in OAUTH_FORMS or bool(_ANONYMOUS_READS.match(path))


def _too_large(limit: int, declared: int | None = None) -> PayloadTooLarge:
    size = f"({declared} bytes) " if declared is not None else ""
    return PayloadTooLarge(f"the request body {size}exceeds the limit of {limit} bytes")


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        request = Request(scope)
        try:
            self._authorise(request, path)
            limit = body_limit(self.settings, path)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(limit, int(declared))
        except GatewayError as exc:
            await domain_response(request, exc)(scope, receive, send)
            return
        await self._capped(scope, receive, send, request, limit)

    def _authorise(self, request: Request, path: str) -> None:
        if path in SELF_AUTHENTICATING:
            return  # the route authenticates before reading the body (capped all the same)
        caller = principal(request)  # a token that does not verify: Unauthorized here
        if caller.anonymous and not anonymous_may_send(path):
            raise Unauthorized("a bearer token is required to send a request body here")

    async def _capped(
        self, scope: Scope, receive: Receive, send: Send, request: Request, limit: int
    ) -> None:
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except PayloadTooLarge as exc:  # raised where no handler of the app could answer it
            if started:
                raise
            await domain_response(request, exc)(scope, receive, send)
