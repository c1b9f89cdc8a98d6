"""Media types and Accept negotiation for DICOMweb (PS3.18 8.7).

Accepts what real clients send: quoted or unquoted ``type`` and
``transfer-syntax`` parameters, several media ranges, q-values, ``*/*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from server.core.encode import DEFAULT_FOR_MEDIA, TARGETS, supported_list
from server.errors import BadRequest, NotAcceptable

_TOKEN_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')


@dataclass(frozen=True)
class MediaRange:
    type: str  # e.g. "multipart/related", "application/dicom", "*/*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def related_type(self) -> str | None:
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        if self.type in ("*/*", media_type):
            return True
        major = media_type.split("/", 1)[0]
        return self.type == f"{major}/*"


def parse_media_type(text: str) -> MediaRange:
    """RFC 9110 8.3.1: ``type/subtype *( ; name=value )``; names lower-cased, quotes removed."""
    main, _, rest = text.partition(";")
    params: dict[str, str] = {}
    q = 1.0
    for name, raw in _TOKEN_PARAM.findall(";" + rest):
        value = raw.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1].replace('\\"', '"')
        name = name.lower()
        if name == "q":
            try:
                q = max(0.0, min(1.0, float(value)))
            except ValueError:
                q = 0.0
        else:
            params[name] = value
    return MediaRange(main.strip().lower(), params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """RFC 9110 12.5.1: media ranges of an Accept header, best q first (stable)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(part) for part in _split_accept(header) if part.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def _split_accept(header: str) -> list[str]:
    """Split on commas that are not inside quotes (transfer-syntax lists are quoted)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"
RENDERED_TYPES = ("image/jpeg", "image/png")


def negotiate_json(header: str | None) -> str:
    """PS3.18 8.7.3.1: QIDO/metadata answer ``application/dicom+json``; raise if not accepted."""
    for r in parse_accept(header):
        if r.matches(DICOM_JSON) or r.matches("application/json"):
            return DICOM_JSON
        if r.type == "multipart/related" and r.related_type in (None, DICOM_JSON):
            return DICOM_JSON
    raise _not_acceptable(header, "application/dicom+json")


def negotiate_instances(header: str | None) -> str | None:
    """PS3.18 8.7.3.5: the transfer syntax wanted for instances ("*", a UID, or None=default)."""
    for r in parse_accept(header):
        if r.type == "multipart/related" and r.related_type in (None, DICOM):
            return r.transfer_syntax
        if r.type in ("*/*", "multipart/*"):
            return None
    raise _not_acceptable(header, 'multipart/related; type="application/dicom"')


def negotiate_frames(
    header: str | None, stored_type: str, stored_syntax: str = ""
) -> tuple[str | None, bool, str | None]:
    """PS3.18 8.7.3.5.3: (media type wanted, whether the stored bytes may be sent, syntax to
    transcode to or None).

    ``transfer-syntax=*`` or the stored media type means the frame goes out as
    stored; ``application/octet-stream`` without it means native (decoded) bytes; an
    image media type other than the stored one (or a ``transfer-syntax`` other than the
    stored one) asks for the frame encoded anew (:data:`server.core.encode.TARGETS`).
    """
    ranges = parse_accept(header)
    for q in sorted({r.q for r in ranges}, reverse=True):
        # Among the ranges liked best (equal q), one the stored frames satisfy wins over one
        # that needs transcoding: viewers list every type they decode (dicom-microscopy-viewer
        # puts image/jls first), and a JPEG tile is not re-encoded because of that order.
        choices = [_frame_choice(r, stored_type, stored_syntax) for r in ranges if r.q == q]
        found = [c for c in choices if c is not None]
        if found:
            return next((c for c in found if c[1] and c[2] is None), found[0])
    raise _not_acceptable(
        header,
        'multipart/related; type="application/octet-stream" or '
        + stored_type
        + " as stored, or frames encoded in "
        + supported_list(),
    )


def _frame_choice(
    r: MediaRange, stored_type: str, stored_syntax: str
) -> tuple[str | None, bool, str | None] | None:
    """What one media range asks of a frame (see :func:`negotiate_frames`), None if nothing."""
    if r.type in ("*/*", "multipart/*") or (
        r.type == "multipart/related" and r.related_type is None
    ):
        return None, True, None
    if r.type != "multipart/related":
        return None
    related = r.related_type
    syntax = r.transfer_syntax
    if related == OCTET:
        return OCTET, syntax == "*", None
    if related and related.endswith("/*"):
        return stored_type, True, None
    if related == stored_type and syntax in (None, "*", stored_syntax):
        return stored_type, True, None
    target = syntax or DEFAULT_FOR_MEDIA.get(related or "")
    if target in TARGETS and TARGETS[target].media_type == related:
        return related, False, target
    return None


def negotiate_bulkdata(header: str | None) -> None:
    for r in parse_accept(header):
        if (
            r.type in ("*/*", "multipart/*")
            or (r.type == "multipart/related" and r.related_type in (None, OCTET, "*/*"))
            or r.type == OCTET
        ):
            return
    raise _not_acceptable(header, 'multipart/related; type="application/octet-stream"')


def negotiate_rendered(header: str | None, accept_param: str | None) -> str:
    """PS3.18 8.7.3.4 / 8.3.3.1: ``image/jpeg`` (default) or ``image/png``."""
    source = accept_param if accept_param else header
    for r in parse_accept(source):
        for media in RENDERED_TYPES:
            if r.matches(media):
                return media
    raise _not_acceptable(source, "image/jpeg or image/png")


def _not_acceptable(header: str | None, supported: str) -> NotAcceptable:
    return NotAcceptable(
        f"cannot produce any of Accept: {header!r}; this resource offers {supported}"
    )


ZIP = "application/zip"
EXPLICIT_LE_UID = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class ZipRequest:
    layout: str  # "flat" or "dicomdir"
    transfer_syntax: str | None  # None or "*": as stored


def negotiate_zip(
    header: str | None, accept_param: str | None, layout: str | None
) -> ZipRequest | None:
    """``application/zip`` wanted (Accept header or ``accept`` query parameter), else None.

    The archive layout comes from the ``layout`` query parameter or media-type parameter
    (``flat`` or ``dicomdir``); ``transfer-syntax`` may be ``*`` (as stored, the default) or
    Explicit VR Little Endian.
    """
    ranges = parse_accept(accept_param) if accept_param else []
    if not ranges or ranges[0].type != ZIP:
        ranges = parse_accept(header) if header else []
    best = ranges[0] if ranges else None
    if best is None or best.type != ZIP:
        return None
    chosen = (layout or best.params.get("layout") or "flat").lower()
    if chosen not in ("flat", "dicomdir"):
        raise BadRequest(f"layout must be 'flat' or 'dicomdir', got {chosen[:40]!r}")
    syntax = best.transfer_syntax
    if syntax not in (None, "*", EXPLICIT_LE_UID):
        raise NotAcceptable(
            f"a ZIP download holds the instances as stored (transfer-syntax=*) or in "
            f"Explicit VR Little Endian ({EXPLICIT_LE_UID}); {syntax[:80]!r} is not offered"
        )
    return ZipRequest(chosen, syntax)


def negotiate_rendered_multipart(header: str | None, accept_param: str | None) -> str:
    """PS3.18 10.4.1.1.4 rendered study/series: ``multipart/related; type=image/jpeg|png``.

    A bare ``image/jpeg`` or ``image/png`` range is taken as the part type too.
    """
    source = accept_param if accept_param else header
    for r in parse_accept(source):
        if r.type == "multipart/related":
            related = r.related_type
            if related is None:
                return RENDERED_TYPES[0]
            for media in RENDERED_TYPES:
                if related == media or related in ("*/*", "image/*"):
                    return media
            continue
        for media in RENDERED_TYPES:
            if r.matches(media) or r.type == "multipart/*":
                return media
    raise _not_acceptable(source, 'multipart/related; type="image/jpeg" or "image/png"')
