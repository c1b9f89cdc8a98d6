"""Request-scoped access to the composed gateway, and the DICOMweb root URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from server.security.model import Principal

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
        found = gateway(request).authenticate(request.headers.get("authorization"))
        request.state.principal = found
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
