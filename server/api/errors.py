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

log = logging.getLogger("gateway.api")

STATUS: list[tuple[type[errors.GatewayError], int]] = [
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.NotAcceptable, 406),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.ServiceUnavailable, 503),
    (errors.BadRequest, 400),
    (errors.GatewayError, 400),
]


def status_for(exc: errors.GatewayError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    body = {"status": status, "message": message, **(extra or {})}
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


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.GatewayError)
    async def _domain(request: Request, exc: errors.GatewayError) -> Response:
        status = status_for(exc)
        extra = {}
        if isinstance(exc, errors.InvalidQuery) and exc.parameter:
            extra["parameter"] = exc.parameter
        response = error_response(status, exc.message, extra)
        if isinstance(exc, errors.ServiceUnavailable):
            response.headers["Retry-After"] = str(exc.retry_after)
        log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc.message)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, f"invalid request {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> Response:
        return error_response(400, "the client disconnected before the request body was complete")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail))
