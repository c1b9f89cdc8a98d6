"""Domain errors raised by core and services; mapped to HTTP in ``server.api.errors``.

::

    GatewayError
    ├── BadRequest                 a client's request cannot be understood (400)
    │   ├── InvalidQuery           a QIDO parameter is unknown, unsupported or malformed
    │   ├── InvalidUID             a UID in a path or parameter is not a valid UID
    │   ├── MalformedMultipart     a multipart body is not well-formed
    │   └── NoDataset              a store names no dataset and there is no default one
    ├── Unauthorized               no valid bearer token (401, WWW-Authenticate)
    ├── Forbidden                  a valid token without the scope the operation needs (403)
    ├── TooManyAttempts            too many failed client authentications (429, Retry-After)
    │   └── TooManyRequests        too many concurrent jobs of one caller (429, Retry-After)
    ├── UnsupportedMediaType       the request's Content-Type is not accepted (415)
    ├── NotAcceptable              nothing in Accept can be produced (406)
    ├── PayloadTooLarge            the body exceeds the configured limit (413)
    ├── NotFound                   the addressed study/series/instance/frame does not exist (404)
    │   └── Gone                   the addressed resource was deleted (410)
    ├── MethodNotAllowed           the interaction is not offered for this resource (405)
    ├── Conflict                   the request conflicts with stored state (409)
    │   └── PreconditionFailed     If-Match / conditional create did not hold (412)
    ├── Unprocessable              well-formed but invalid content, e.g. a FHIR resource (422)
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


class NoDataset(BadRequest):
    """A store names no dataset and ``GATEWAY_DEFAULT_DATASET`` is not set: nothing is stored
    (a study outside every dataset would be visible to nobody)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "no dataset: store into /datasets/{id}/dicom-web/studies, or set"
            " GATEWAY_DEFAULT_DATASET to the dataset that /dicom-web/studies stores into"
        )


class Unauthorized(GatewayError):
    """RFC 6750 3.1 invalid_token: answered 401 with a WWW-Authenticate challenge."""


class Forbidden(GatewayError):
    """RFC 6750 3.1 insufficient_scope: answered 403."""


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


class TooManyAttempts(GatewayError):
    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyRequests(TooManyAttempts):
    def __init__(self, message: str, retry_after: int = 10) -> None:
        super().__init__(message, retry_after)


class Gone(NotFound):
    pass


class MethodNotAllowed(GatewayError):
    pass


class PreconditionFailed(Conflict):
    pass


class Unprocessable(GatewayError):
    pass


STATUS: list[tuple[type[GatewayError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (TooManyAttempts, 429),
    (Gone, 410),
    (PreconditionFailed, 412),
    (MethodNotAllowed, 405),
    (Unprocessable, 422),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (NotAcceptable, 406),
    (NotFound, 404),
    (Conflict, 409),
    (ServiceUnavailable, 503),
    (BadRequest, 400),
    (GatewayError, 400),
]


def status_for(exc: GatewayError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500
