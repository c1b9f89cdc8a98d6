"""Request-scoped access to the composed gateway, and the DICOMweb root URL."""

from __future__ import annotations

import base64
import binascii
import math
from typing import TYPE_CHECKING

from starlette.requests import Request

from server.errors import TooManyAttempts, Unauthorized
from server.security.model import Principal

MAX_CLIENT_ID = 200  # a caller-chosen id is bounded before it is used or stored

if TYPE_CHECKING:
    from server.app import Gateway


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def dicomweb_root(request: Request) -> str:
    settings = request.app.state.gateway.settings
    base = settings.public_base_url or str(request.base_url)
    return base.rstrip("/") + "/dicom-web"


def principal(request: Request) -> Principal:
    """The caller of this request (validated once, kept on the request for the audit)."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        header = request.headers.get("authorization")
        if header and header[:6].lower() == "basic " and dicomweb_path(request.url.path):
            found = _basic(request, header)
        else:
            found = gateway(request).authenticate(header)
        request.state.principal = found
    return found


def dicomweb_path(path: str) -> bool:
    """DICOMweb routes (``/dicom-web/...``, ``/datasets/{id}/dicom-web/...``, WADO-URI's
    ``/wado``): the only ones
    that accept HTTP Basic (never FHIR, never /oauth)."""
    if path.startswith("/dicom-web") or path == "/wado":
        return True
    parts = path.split("/", 4)
    return len(parts) >= 4 and parts[1] == "datasets" and parts[3] == "dicom-web"


def _basic(request: Request, header: str) -> Principal:
    """HTTP Basic with a client id and secret (RFC 7617), for clients registered with
    ``--http-basic``; failures count towards the same lockout as the token endpoint."""
    gw = gateway(request)
    request.state.basic_tried = True
    if not gw.settings.auth.enabled:
        return gw.authenticate(None)
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed HTTP Basic credentials") from None
    client_id, _, secret = decoded.partition(":")
    client_id = client_id[:MAX_CLIENT_ID]
    request.state.audit_client = client_id or None
    address = request.client.host if request.client else None
    wait = gw.throttle.retry_after(client_id or None, address)
    if wait is not None:
        raise TooManyAttempts("too many failed attempts", math.ceil(wait))
    found = gw.authenticator.basic_principal(client_id, secret) if client_id and secret else None
    if found is None:
        gw.throttle.failed(client_id or None, address)
        raise Unauthorized("unknown client, wrong secret, or HTTP Basic not enabled for it")
    gw.throttle.succeeded(client_id)
    return found


def audit_note(
    request: Request,
    *,
    datasets: tuple[str, ...] = (),
    entities: tuple[str, ...] = (),
    deidentified: tuple[tuple[str, str], ...] = (),
) -> None:
    """Tell the audit what this request touched (datasets, studies, resources, instances
    stored with their de-identification records)."""
    note = getattr(request.state, "audit_note", None) or {"datasets": (), "entities": ()}
    note["datasets"] = tuple(dict.fromkeys((*note["datasets"], *datasets)))
    note["entities"] = tuple(dict.fromkeys((*note["entities"], *entities)))
    note["deidentified"] = (*note.get("deidentified", ()), *deidentified)
    request.state.audit_note = note
