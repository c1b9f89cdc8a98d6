"""The one mapping from domain errors to HTTP (PS3.18 8.6.3 status codes, Warning header)."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from server import errors
from server.core.fhir.outcome import operation_outcome
from server.errors import status_for

log = logging.getLogger("gateway.api")


FEDERATION_PATHS = ("/api/datasets/",)  # the EUCAIM mediator's error shape is added there


def error_response(
    status: int, message: str, extra: dict[str, str] | None = None, *, reference: bool = False
) -> Response:
    body: dict[str, object] = {"status": status, "message": message, **(extra or {})}
    if reference:  # chaimeleon-eu/dataset-service setErrorResponse: {"error", "status_code"}
        body.update(error=message, status_code=status)
    headers = {"Warning": f'299 gateway "{_header_safe(message)}"'}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _header_safe(text: str) -> str:
    return (
        text.encode("ascii", "replace")
        .decode()
        .replace('"', "'")
        .replace("\r", " ")
        .replace("\n", " ")[:300]
    )


def domain_response(request: Request, exc: errors.GatewayError) -> Response:
    """The response for a domain error, in the format of the route's standard."""
    status = status_for(exc)
    if isinstance(exc, errors.Unauthorized | errors.Forbidden):
        return _challenge(request, exc, status)
    if request.url.path.startswith("/fhir"):
        answer = outcome_response(status, exc.message, _issue_code(status))
        if isinstance(exc, errors.TooManyRequests):
            answer.headers["Retry-After"] = str(exc.retry_after)
        return answer
    extra = {}
    if isinstance(exc, errors.InvalidQuery) and exc.parameter:
        extra["parameter"] = exc.parameter
    response = error_response(
        status, exc.message, extra, reference=request.url.path.startswith(FEDERATION_PATHS)
    )
    if isinstance(exc, errors.ServiceUnavailable):
        response.headers["Retry-After"] = str(exc.retry_after)
    log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc.message)
    return response


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.GatewayError)
    async def _domain(request: Request, exc: errors.GatewayError) -> Response:
        return domain_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid request {where}: {first.get('msg', 'invalid')}"
        if request.url.path.startswith("/fhir"):
            return outcome_response(400, message, "invalid")
        return error_response(400, message)

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> Response:
        return error_response(400, "the client disconnected before the request body was complete")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/fhir"):
            return outcome_response(exc.status_code, str(exc.detail), _issue_code(exc.status_code))
        return error_response(exc.status_code, str(exc.detail))


_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-long",
                415: "not-supported", 422: "processing", 429: "throttled"}  # fmt: skip


def _issue_code(status: int) -> str:
    return _ISSUE_CODES.get(status, "exception")


def outcome_response(status: int, message: str, code: str = "invalid") -> Response:
    """FHIR R4 OperationOutcome for an error (FHIR R4 3.1.0.10 / 2.36)."""
    body = operation_outcome([("error" if status < 500 else "fatal", code, message)])
    return Response(orjson.dumps(body), status, media_type="application/fhir+json")


def _challenge(request: Request, exc: errors.GatewayError, status: int) -> Response:
    """RFC 6750 3: 401 invalid_token / 403 insufficient_scope with a WWW-Authenticate header."""
    code = "invalid_token" if status == 401 else "insufficient_scope"
    header = f'Bearer realm="imaging-gateway", error="{code}", error_description="{_header_safe(exc.message)}"'
    if request.url.path.startswith("/fhir"):
        response = outcome_response(status, exc.message, _issue_code(status))
    else:
        response = error_response(
            status, exc.message, reference=request.url.path.startswith(FEDERATION_PATHS)
        )
    response.headers["WWW-Authenticate"] = header
    return response
