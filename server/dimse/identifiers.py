"""C-FIND response identifiers encoded straight from the index's DICOM JSON rows.

pynetdicom takes a pydicom ``Dataset`` per pending response and encodes it; building that
data set (``Dataset.from_json``, one element object per key) cost about a millisecond a
match, most of a query that matches hundreds of studies. Here a row's requested keys are
written as Little Endian elements directly (PS3.5 7.1: tag, VR when explicit, length,
value padded to even length) and handed to pynetdicom already encoded: ``install``
wraps the ``encode`` pynetdicom's C-FIND SCP calls so that an ``EncodedIdentifier``
passes through as its bytes (anything else is encoded as before).

Only what is certainly encoded exactly as pydicom would is encoded here: text values
in ASCII or with Specific Character Set ISO_IR 192 (UTF-8), the binary numbers, no
sequences or bulk data. Any other row returns None and goes the pydicom way.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag

_TEXT = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
         "UC", "UI", "UR", "UT"}  # fmt: skip
_BINARY = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FL": "f", "FD": "d"}
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "UV"}
QUERY_LEVEL, CHARSET, RETRIEVE_AE = 0x00080052, 0x00080005, 0x00080054


class EncodedIdentifier(Dataset):
    """A response identifier already encoded (``implicit``: Implicit VR Little Endian)."""

    def __init__(self, raw: bytes, implicit: bool) -> None:
        super().__init__()
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "implicit", implicit)


class _Fallback(Exception):
    """This row is encoded the pydicom way."""


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in _LONG:
        return head + vr.encode() + b"\x00\x00" + struct.pack("<I", len(value)) + value
    if len(value) > 0xFFFF:
        raise _Fallback
    return head + vr.encode() + struct.pack("<H", len(value)) + value


def _text(vr: str, values: list[Any], utf8: bool) -> bytes:
    parts = []
    for value in values:
        if value is None:
            parts.append("")
        elif vr == "PN":
            if not isinstance(value, dict):
                raise _Fallback
            groups = [str(value.get(k) or "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            while groups and not groups[-1]:
                groups.pop()
            parts.append("=".join(groups))
        elif vr in ("IS", "DS"):
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise _Fallback
            if isinstance(value, str):
                raise _Fallback  # a number sent as text: pydicom's conversion decides
            if vr == "DS":  # pydicom's DSfloat of a JSON number: the float's repr
                parts.append(repr(float(value)))
            elif isinstance(value, float) and not value.is_integer():
                raise _Fallback  # not an IS: pydicom decides what to make of it
            else:
                parts.append(str(int(value)))
        elif isinstance(value, str):
            parts.append(value)
        else:
            raise _Fallback
    text = "\\".join(parts)
    if not text.isascii() and not utf8:
        raise _Fallback
    raw = text.encode("utf-8")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def _binary(vr: str, values: list[Any]) -> bytes:
    if any(v is None or isinstance(v, bool) for v in values):
        raise _Fallback
    try:
        return struct.pack(f"<{len(values)}{_BINARY[vr]}", *values)
    except struct.error as exc:
        raise _Fallback from exc


def _value(vr: str, item: dict[str, Any] | None, utf8: bool) -> bytes:
    if item is None:
        return b""
    if "Value" not in item:
        if len(item) > 1:  # BulkDataURI / InlineBinary
            raise _Fallback
        return b""
    values = item["Value"]
    if vr in _TEXT:
        return _text(vr, values, utf8)
    if vr in _BINARY:
        return _binary(vr, values)
    raise _Fallback


def encode_row(
    row: dict[str, Any], requested: Iterable[int], level: str, ae_title: str, implicit: bool
) -> EncodedIdentifier | None:
    """The response identifier of ``row`` as ``response`` (find.py) builds it, or None."""
    wanted = set(requested)
    wanted.discard(QUERY_LEVEL)
    wanted.discard(RETRIEVE_AE)
    charset = row.get("00080005")
    if CHARSET not in wanted and charset is not None:
        wanted.add(CHARSET)
    if charset is not None and "Value" not in charset:
        return None  # find.response names ISO_IR 192 for it
    names = charset.get("Value") if charset else None
    utf8 = names == ["ISO_IR 192"]
    out = []
    try:
        for tag in sorted(wanted | {QUERY_LEVEL, RETRIEVE_AE}):
            if tag == QUERY_LEVEL:
                out.append(_element(tag, "CS", _text("CS", [level], False), implicit))
                continue
            if tag == RETRIEVE_AE:
                out.append(_element(tag, "AE", _text("AE", [ae_title], False), implicit))
                continue
            item = row.get(f"{tag:08X}")
            if item is not None and "BulkDataURI" in item:
                item = None  # a bulk data reference is answered as an empty value
            if item is None:
                if not keyword_for_tag(tag):
                    continue  # an unknown key the row lacks is left out, as pydicom does
                vr = dictionary_VR(tag)
            else:
                vr = str(item.get("vr", ""))
            if vr not in _TEXT and vr not in _BINARY:
                raise _Fallback
            out.append(_element(tag, vr, _value(vr, item, utf8), implicit))
    except _Fallback:
        return None
    return EncodedIdentifier(b"".join(out), implicit)


_installed = False
_lock = threading.Lock()


def install() -> None:
    """Let pynetdicom's C-FIND SCP send an ``EncodedIdentifier`` as it is (idempotent)."""
    global _installed
    from pynetdicom import service_class

    with _lock:
        if _installed:
            return
        original: Callable[..., bytes | None] = service_class.encode

        def encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool,
                   deflated: bool = False) -> bytes | None:  # fmt: skip
            if isinstance(ds, EncodedIdentifier):
                if ds.implicit == is_implicit_vr and is_little_endian and not deflated:
                    return ds.raw
                return None  # never proposed for Query/Retrieve: failure, not a wrong answer
            return original(ds, is_implicit_vr, is_little_endian, deflated)

        service_class.encode = encode
        _installed = True
