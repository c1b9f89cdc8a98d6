"""Request-scoped access to the composed gateway, and the DICOMweb root URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:
    from server.app import Gateway


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def dicomweb_root(request: Request) -> str:
    settings = request.app.state.gateway.settings
    base = settings.public_base_url or str(request.base_url)
    return base.rstrip("/") + "/dicom-web"
