"""Domain errors raised by core and services; mapped to HTTP in ``server.api.errors``.

::

    GatewayError
    ├── BadRequest                 a client's request cannot be understood (400)
    │   ├── InvalidQuery           a QIDO parameter is unknown, unsupported or malformed
    │   ├── InvalidUID             a UID in a path or parameter is not a valid UID
    │   └── MalformedMultipart     a multipart body is not well-formed
    ├── UnsupportedMediaType       the request's Content-Type is not accepted (415)
    ├── NotAcceptable              nothing in Accept can be produced (406)
    ├── PayloadTooLarge            the body exceeds the configured limit (413)
    ├── NotFound                   the addressed study/series/instance/frame does not exist (404)
    ├── Conflict                   the request conflicts with stored state (409)
    └── ServiceUnavailable         a backend cannot serve now (503)

Anything else escaping a service is a bug and becomes a 500.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of all domain errors; ``message`` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    pass


class InvalidQuery(BadRequest):
    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class InvalidUID(BadRequest):
    pass


class MalformedMultipart(BadRequest):
    pass


class UnsupportedMediaType(GatewayError):
    pass


class NotAcceptable(GatewayError):
    pass


class PayloadTooLarge(GatewayError):
    pass


class NotFound(GatewayError):
    pass


class Conflict(GatewayError):
    pass


class ServiceUnavailable(GatewayError):
    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
