"""Fast DICOM JSON (PS3.18 F.2) straight from raw, undecoded elements.

Ingest converts every element of every instance to JSON once; going through
pydicom's DataElement conversion costs most of an instance's ingest time. This
module decodes the common cases directly (little-endian values, single-byte or
UTF-8 character sets, unambiguous VRs) and returns ``None`` for anything else,
so the caller falls back to pydicom. ``tests/core/test_dicom_json.py`` proves
the fast path gives exactly pydicom's JSON for every element of every pydicom
test file that it handles.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

_MULTI = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI", "UC"})
_TEXT = frozenset({"LT", "ST", "UT"})
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBERS = {
    "US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4),
    "FL": ("f", 4), "FD": ("d", 8), "UV": ("Q", 8), "SV": ("q", 8),
}  # fmt: skip
# Python codecs for character sets whose decoding is a plain bytes.decode (PS3.3 C.12.1.1.2).
_CODECS = {
    "": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 101": "iso8859_2",
    "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4", "ISO_IR 144": "iso_ir_144",
    "ISO_IR 127": "iso_ir_127", "ISO_IR 126": "iso_ir_126", "ISO_IR 138": "iso_ir_138",
    "ISO_IR 148": "iso_ir_148", "ISO_IR 203": "latin9", "ISO_IR 192": "UTF8",
}  # fmt: skip


def codec_for(charset: str | list[str] | None) -> str | None:
    """The codec of a Specific Character Set value, or None if it needs pydicom's decoder."""
    if charset is None:
        return _CODECS[""]
    if isinstance(charset, list | tuple):
        if len(charset) != 1:
            return None
        charset = charset[0]
    return _CODECS.get(str(charset).strip())


def raw_element_json(raw: RawDataElement, codec: str | None) -> dict[str, Any] | None:
    """DICOM JSON of a raw element, or None when pydicom must convert it."""
    if not raw.is_little_endian or raw.value is None:
        return None
    vr = raw.VR
    if vr is None:  # implicit VR: the dictionary's, if it names exactly one
        if raw.tag.is_private:
            return None
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    if len(vr) != 2:
        return None  # ambiguous ("US or SS", "OB or OW"): pydicom resolves it from context
    value: bytes = raw.value
    if not value:
        return {"vr": vr}
    if vr in _NUMBERS:
        return _numbers(vr, value)
    if vr == "UN":
        return None  # pydicom replaces UN by the dictionary VR of known tags
    if vr in _BINARY:
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    if codec is None and vr in _CHARSET_VRS:
        return None
    try:
        text = value.decode(codec if vr in _CHARSET_VRS and codec else "latin_1")
    except (UnicodeDecodeError, LookupError):
        return None
    return _strings(vr, text)


def _numbers(vr: str, value: bytes) -> dict[str, Any] | None:
    fmt, size = _NUMBERS[vr]
    count, rest = divmod(len(value), size)
    if rest:
        return None
    return {"vr": vr, "Value": list(struct.unpack(f"<{count}{fmt}", value))}


def _strings(vr: str, text: str) -> dict[str, Any] | None:
    if not text.strip(" \x00"):
        return {"vr": vr}  # padding only: an empty value
    if vr in _MULTI:
        return {"vr": vr, "Value": text.rstrip(" \x00").split("\\")}
    if vr in _TEXT:
        return {"vr": vr, "Value": [text.rstrip(" \x00")]}
    if vr == "PN":
        names = [_person_name(v) for v in text.rstrip(" \x00").split("\\")]
        return {"vr": vr, "Value": names}
    if vr in ("DS", "IS"):
        return _decimal_strings(vr, text)
    return None


def beyond_64_bits(value: Any) -> bool:
    """An integer JSON cannot carry as one (written as a JSON number in floating point)."""
    return isinstance(value, int) and not -(2**63) <= value < 2**64


def _person_name(value: str) -> dict[str, str]:
    groups = value.split("=")
    out = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        out["Ideographic"] = groups[1]
    if len(groups) > 2:
        out["Phonetic"] = groups[2]
    return out


def _decimal_strings(vr: str, text: str) -> dict[str, Any] | None:
    items = text.strip().rstrip(" \x00").split("\\")
    try:
        if vr == "IS":
            numbers = [int(item) for item in items]
            return {"vr": vr, "Value": [float(n) if beyond_64_bits(n) else n for n in numbers]}
        return {"vr": vr, "Value": [float(item) for item in items]}
    except ValueError:
        return None
