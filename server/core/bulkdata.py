"""Which DICOM JSON values are bulk data (PS3.18 F.2.7 BulkDataURI, 8.3.5 bulkdata).

The rule, applied at ingest and again to every metadata and QIDO answer (so JSON
stored by earlier versions cannot leak either):

* every pixel-bearing element, at any depth and of any size, is a BulkDataURI;
* every binary value (OB, OD, OF, OL, OV, OW, UN) larger than the configured
  threshold, or of undefined length, is a BulkDataURI;
* every binary value inside an Icon Image Sequence (0088,0200) item is a BulkDataURI.

Pixel-bearing elements are derived from pydicom's data dictionary (PS3.6
Table 6-1 and its repeating groups): the binary-VR entries whose keyword names
pixel, overlay, curve, waveform, audio, spectroscopy or document content (PS3.5
8 and 8.1.2, PS3.3 C.9.2 Overlay Plane, A.34 Waveform, C.8.14 MR Spectroscopy,
C.24 Encapsulated Document). ``tests/core/test_bulkdata.py`` lists the result.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

from pydicom.datadict import DicomDictionary, RepeatersDictionary

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
ICON_IMAGE_SEQUENCE = "00880200"
DEFAULT_THRESHOLD = 256
_PIXEL_KEYWORD = re.compile(
    r"(PixelData|OverlayData|CurveData|WaveformData|AudioSampleData|SpectroscopyData"
    r"|EncapsulatedDocument|HPGLDocument|BadPixelImage|ThreatROIBitmap)$"
)


def is_binary_vr(vr: str | None) -> bool:
    """True for a binary VR, including the dictionary's ambiguous ``OB or OW``."""
    return bool(vr) and any(v in BINARY_VRS for v in str(vr).split(" or "))


def _pixel_tags() -> tuple[frozenset[int], tuple[tuple[int, int], ...]]:
    exact = frozenset(
        tag
        for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items()
        if is_binary_vr(vr) and _PIXEL_KEYWORD.search(keyword)
    )
    masks = []
    for mask_text, (vr, _vm, _name, _retired, keyword) in RepeatersDictionary.items():
        if is_binary_vr(vr) and _PIXEL_KEYWORD.search(keyword):
            mask = int("".join("0" if c == "x" else "F" for c in mask_text), 16)
            masks.append((mask, int(mask_text.replace("x", "0"), 16)))
    return exact, tuple(masks)


PIXEL_TAGS, PIXEL_TAG_MASKS = _pixel_tags()


def is_pixel_bearing(tag: int) -> bool:
    """True for Pixel Data, Overlay Data (60xx,3000), Waveform Data, ... (see module docstring)."""
    return tag in PIXEL_TAGS or any(tag & mask == value for mask, value in PIXEL_TAG_MASKS)


def needs_uri(tag: int, vr: str | None, length: int | None, threshold: int, in_icon: bool) -> bool:
    """The rule of the module docstring; ``length`` None means undefined length."""
    if is_pixel_bearing(tag):
        return True
    if not is_binary_vr(vr):
        return False
    return in_icon or length is None or length > threshold


def instance_prefix(meta: dict[str, Any]) -> str | None:
    """``/studies/{s}/series/{s}/instances/{s}/bulkdata/`` from a dataset's own UIDs."""
    uids = []
    for tag in ("0020000D", "0020000E", "00080018"):
        values = meta.get(tag, {}).get("Value") if isinstance(meta.get(tag), dict) else None
        if not values or not isinstance(values[0], str):
            return None
        uids.append(values[0])
    return f"/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}/bulkdata/"


def _walk(
    meta: dict[str, Any], path: str, in_icon: bool
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every element of a DICOM JSON object at every depth: (tag path, element, in icon)."""
    stack = [(meta, path, in_icon)]
    while stack:
        body, prefix, icon = stack.pop()
        for key, element in body.items():
            if not isinstance(element, dict):
                continue
            yield prefix + key, element, icon
            if element.get("vr") == "SQ" and isinstance(element.get("Value"), list):
                nested = icon or key == ICON_IMAGE_SEQUENCE
                for i, item in enumerate(element["Value"]):
                    if isinstance(item, dict):
                        stack.append((item, f"{prefix}{key}/{i + 1}/", nested))


def _decoded_length(text: Any) -> int:
    if not isinstance(text, str):
        return 0
    return len(text) * 3 // 4 - text[-2:].count("=")


def sanitize(meta: dict[str, Any], bulk_prefix: str | None, threshold: int) -> bool:
    """Replace every InlineBinary that the rule makes bulk data; True if anything changed.

    With ``bulk_prefix`` None (the instance is unknown) such values are removed.
    Relative BulkDataURIs are left as they are.
    """
    changed = False
    for path, element, in_icon in list(_walk(meta, "", False)):
        if "InlineBinary" not in element:
            continue
        tag = int(path.rsplit("/", 1)[-1], 16) if _TAG.match(path.rsplit("/", 1)[-1]) else 0
        length = _decoded_length(element["InlineBinary"])
        if not needs_uri(tag, str(element.get("vr", "UN")), length, threshold, in_icon):
            continue
        del element["InlineBinary"]
        if bulk_prefix is not None:
            element["BulkDataURI"] = bulk_prefix + path
        changed = True
    return changed


def absolute_uris(meta: dict[str, Any], root: str) -> None:
    """Make every relative BulkDataURI (``/studies/...``) absolute under ``root``."""
    for _path, element, _icon in _walk(meta, "", False):
        uri = element.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("/studies/"):
            element["BulkDataURI"] = root + uri


_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_INLINE = re.compile(rb'"([0-9A-F]{8})":\{"vr":"([A-Z]{2})","InlineBinary":"([^"]*)"')


def blob_may_leak(blob: bytes, threshold: int) -> bool:
    """Cheap test on stored metadata bytes: False only if no InlineBinary can need a URI."""
    count = blob.count(b'"InlineBinary"')
    if not count:
        return False
    if ICON_IMAGE_SEQUENCE.encode() in blob:
        return True
    matches = _INLINE.findall(blob)
    if len(matches) != count:
        return True  # not in the form this gateway writes: look properly
    limit = threshold * 4 // 3 + 4
    return any(
        len(value) > limit or needs_uri(int(tag, 16), vr.decode(), 0, threshold, False)
        for tag, vr, value in matches
    )


def decode_inline(element: dict[str, Any]) -> bytes:
    return base64.b64decode(element.get("InlineBinary", ""))
