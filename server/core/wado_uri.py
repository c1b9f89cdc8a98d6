"""WADO-URI request parameters (PS3.18 9.1, Table 9.1.2-1 and 9.1.2-2), parsed once.

``requestType=WADO`` with ``studyUID``, ``seriesUID`` and ``objectUID`` names one
instance; ``contentType`` (a list like an Accept header) chooses the DICOM file or a
rendered image. Parameters that only make sense for images (rows, columns, region,
windowCenter/windowWidth, frameNumber, imageQuality) are refused with
``application/dicom``, and ``transferSyntax`` is refused with an image; parameters the
gateway does not implement (anonymize, annotation, presentation states) are refused
rather than ignored, so a viewer never shows something other than what it asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from server.core.mediatypes import parse_accept
from server.core.rendering import MAX_VIEWPORT, RenderParams
from server.core.uids import check_uid
from server.errors import BadRequest, NotAcceptable

DICOM = "application/dicom"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
_IMAGE_ONLY = ("rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber",
               "imageQuality")  # fmt: skip
_UNSUPPORTED = ("anonymize", "annotation", "presentationUID", "presentationSeriesUID", "charset")
_KNOWN = frozenset(
    ("requestType", "studyUID", "seriesUID", "objectUID", "contentType", "transferSyntax",
     *_IMAGE_ONLY, *_UNSUPPORTED)
)  # fmt: skip


@dataclass(frozen=True)
class WadoUriRequest:
    study: str
    series: str
    sop: str
    content_type: str | None  # None: the default for the object (image/jpeg or application/dicom)
    transfer_syntax: str | None = None
    frame: int = 1
    rows: int | None = None
    columns: int | None = None
    region: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in 0..1
    window: tuple[float, float] | None = None  # center, width
    quality: int | None = None


def parse_wado_uri(query: Mapping[str, str]) -> WadoUriRequest:
    """PS3.18 9.1.2: the typed request, or BadRequest naming the parameter at fault."""
    unknown = sorted(k for k in query if k not in _KNOWN)
    if unknown:
        raise BadRequest(f"unknown WADO-URI parameter(s): {', '.join(unknown)[:200]}")
    if query.get("requestType") != "WADO":
        raise BadRequest("requestType=WADO is required (PS3.18 9.1.2.1.1)")
    for name in _UNSUPPORTED:
        if query.get(name):
            raise BadRequest(f"the WADO-URI parameter {name} is not supported by this gateway")
    uids = []
    for name, what in (("studyUID", "StudyInstanceUID"), ("seriesUID", "SeriesInstanceUID"),
                       ("objectUID", "SOPInstanceUID")):  # fmt: skip
        if not query.get(name):
            raise BadRequest(f"{name} is required (PS3.18 9.1.2.1)")
        uids.append(check_uid(query[name], what))
    content_type = _content_type(query.get("contentType"))
    image_params = [name for name in _IMAGE_ONLY if query.get(name) is not None]
    if content_type == DICOM and image_params:
        raise BadRequest(
            f"{', '.join(image_params)} apply to rendered images, not to contentType={DICOM}"
        )
    syntax = query.get("transferSyntax")
    if syntax is not None and content_type not in (DICOM, None):
        raise BadRequest(f"transferSyntax applies to contentType={DICOM} only")
    if syntax is not None and syntax != "*":
        syntax = check_uid(syntax, "transferSyntax")
    return WadoUriRequest(
        study=uids[0],
        series=uids[1],
        sop=uids[2],
        content_type=content_type,
        transfer_syntax=syntax,
        frame=_int(query, "frameNumber", 1, 1 << 31) or 1,
        rows=_int(query, "rows", 1, MAX_VIEWPORT),
        columns=_int(query, "columns", 1, MAX_VIEWPORT),
        region=_region(query.get("region")),
        window=_window(query.get("windowCenter"), query.get("windowWidth")),
        quality=_int(query, "imageQuality", 1, 100),
    )


def _content_type(value: str | None) -> str | None:
    """PS3.18 9.1.2.1.5: a list of media types in preference order; None for ``*/*`` or absent."""
    if not value:
        return None
    for r in parse_accept(value):
        if r.type == "*/*":
            return None
        if r.type == DICOM:
            return DICOM
        for media in IMAGE_TYPES:
            if r.matches(media):
                return media
    raise NotAcceptable(
        f"contentType {value[:80]!r} is not offered; use application/dicom, image/jpeg, "
        "image/png or image/gif"
    )


def _int(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        number = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {text[:40]!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {number}")
    return number


def _float(text: str, name: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {text[:40]!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be finite, got {text[:40]!r}")
    return number


def _region(value: str | None) -> tuple[float, float, float, float] | None:
    """PS3.18 9.1.2.2.4: ``x1,y1,x2,y2`` normalised to 0.0..1.0, top left to bottom right."""
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 4:
        raise BadRequest(f"region must be 'x1,y1,x2,y2' (0.0 to 1.0), got {value[:60]!r}")
    x1, y1, x2, y2 = (_float(p.strip(), "region") for p in parts)
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        raise BadRequest(f"region must satisfy 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1: {value!r}")
    return x1, y1, x2, y2


def _window(center: str | None, width: str | None) -> tuple[float, float] | None:
    """PS3.18 9.1.2.2.5/6: windowCenter and windowWidth come together; width at least 1."""
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise BadRequest("windowCenter and windowWidth must be given together")
    c, w = _float(center, "windowCenter"), _float(width, "windowWidth")
    if w < 1:
        raise BadRequest(f"windowWidth must be at least 1, got {w:g}")
    return c, w


def render_params(req: WadoUriRequest, media_type: str, rows: int, columns: int) -> RenderParams:
    """The WADO-URI image parameters as WADO-RS rendering parameters for a ``rows x columns``
    frame: the region becomes a pixel crop, rows/columns the box the result fits in."""
    window = (*req.window, "linear") if req.window else None
    viewport = None
    if req.rows is not None or req.columns is not None:
        viewport = (req.columns or MAX_VIEWPORT, req.rows or MAX_VIEWPORT)
    region = None
    if req.region is not None:
        x1, y1, x2, y2 = req.region
        sx, sy = math.floor(x1 * columns), math.floor(y1 * rows)
        sw = max(1, math.ceil(x2 * columns) - sx)
        sh = max(1, math.ceil(y2 * rows) - sy)
        region = (sx, sy, sw, sh)
        viewport = viewport or (sw, sh)
    return RenderParams(media_type, window, viewport, req.quality, region)
