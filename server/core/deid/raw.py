"""The engine's fast path: de-identify a header by walking its raw data elements.

For the common case (Implicit or Explicit VR Little Endian data set, not deflated, a
header of at most ``HEAD`` bytes, no elements after the pixel data) the header is
walked element by element straight from its bytes, sequences and items of defined and
undefined length included. The profile decides each element's action from the tag
(the same cached decisions as the general path); only the values a rule reads or
changes are decoded, each exactly as pydicom decodes it (through a dataset standing
for its level), and written back exactly as the general path writes them. Every other
element is copied through as read. Pixel data is copied raw, as before.

The output is byte for byte the general path's (``engine.py`` on a pydicom dataset):
the same elements are decoded, in the same contexts, by the same action functions, and
encoded by the same writers. Anything this walker does not mirror exactly (big endian,
deflate, character sets other than the default, Latin-1 and UTF-8, implicit VR items in
explicit data, ambiguous VRs to decode, group-2 elements in the data set, a long
header, trailing elements, burned-in suspects, malformed structure) raises
``Fallback``: the general path takes the file, and reports any error itself.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataelem import empty_value_for_VR as _empty_value
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from server.core.deid import actions, basic, burned_in, ctp, eucaim, method, values
from server.core.deid.actions import Changes, Context, name_of, set_value
from server.core.deid.policy import DeidPolicy, Option, Profile
from server.core.deid.rules import basic_action
from server.core.deid.safe_private import is_safe
from server.core.deid.stream import (
    _ASCII_CHARSETS,
    PIXEL_TAGS,
    Encoding,
    _meta_bytes,
    _raw_value,
    _string,
)

HEAD = 1 << 16  # header bytes read at once; a longer header takes the general path
UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_VRS = frozenset(str(v) for v in STANDARD_VR)
_LONG = frozenset(str(v) for v in EXPLICIT_VR_LENGTH_32)
_ENCODED = frozenset(v.encode() for v in _VRS)
_HH = struct.Struct("<HH")
_H = struct.Struct("<H")
_I = struct.Struct("<I")
_HHI = struct.Struct("<HHI")
PATIENT_ID, PATIENT_NAME, STUDY_UID = 0x00100020, 0x00100010, 0x0020000D
SOP_CLASS, SOP_INSTANCE, CHARSET = 0x00080016, 0x00080018, 0x00080005
_METHOD = (0x00120062, 0x00120063)  # set by method.write (with the code sequence)
METHOD_SEQUENCE = 0x00120064
_METHOD_BYTES: dict[tuple[object, ...], bytes] = {}
_BASIC_SET = (PATIENT_ID, PATIENT_NAME, 0x00280303, *_METHOD)
_EUCAIM_SET = (0x00080080, *_METHOD)
# character sets whose text pydicom decodes and encodes as this walker expects
_CHARSETS = (b"", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 6")
_IDENTIFYING_TAGS = values.identifying_tags()


class Fallback(Exception):
    """This file takes the general path (nothing was written)."""


@dataclass(slots=True)
class Elem:
    """One data element as found in the header bytes."""

    tag: int
    vr: str | None  # as read (None: implicit VR)
    length: int  # as read (UNDEFINED for an undefined-length sequence)
    vpos: int  # where the value starts
    end: int  # where the element ends
    items: list[Item] | None = None  # a sequence's items


@dataclass(slots=True)
class Item:
    elems: list[Elem]
    undefined: bool


@dataclass
class Header:
    """What the walk found: the data set's elements and where the pixel element is."""

    buf: bytes
    implicit: bool
    transfer_syntax: str
    elems: list[Elem]
    pixel_offset: int | None
    charset: Any


@lru_cache(maxsize=8192)
def _dict_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _element_at(buf: bytes, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR, length, value position) of the element header at ``pos``."""
    if pos + 8 > len(buf):
        raise Fallback
    group, elem = _HH.unpack_from(buf, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:
        return tag, None, _I.unpack_from(buf, pos + 4)[0], pos + 8
    raw_vr = buf[pos + 4 : pos + 6]
    if raw_vr not in _ENCODED:
        raise Fallback  # pydicom would guess the encoding again
    vr = raw_vr.decode()
    if vr in _LONG:
        if pos + 12 > len(buf):
            raise Fallback
        return tag, vr, _I.unpack_from(buf, pos + 8)[0], pos + 12
    return tag, vr, _H.unpack_from(buf, pos + 6)[0], pos + 8


def _check_first(buf: bytes, pos: int, implicit: bool) -> None:
    """pydicom checks the first element's encoding of every data set and may switch;
    an implicit data set whose first element looks explicit is left to it."""
    if implicit and buf[pos + 4 : pos + 6] in _ENCODED:
        raise Fallback


def _elements(
    buf: bytes, pos: int, end: int | None, implicit: bool, top: bool
) -> tuple[list[Elem], int]:
    """The elements from ``pos``: up to ``end`` (None: up to an item delimiter; at the
    top level, up to the pixel element or the end of ``buf``)."""
    elems: list[Elem] = []
    last = -1
    limit = len(buf) if end is None else end
    if pos < limit:
        _check_first(buf, pos, implicit)
    while True:
        if end is not None and pos >= end:
            if pos != end:
                raise Fallback
            return elems, pos
        if top and pos == len(buf):
            return elems, pos
        tag, vr, length, vpos = _element_at(buf, pos, implicit)
        if tag == _ITEM_END and not top and end is None:
            if length != 0:
                raise Fallback
            return elems, vpos
        if top and tag in PIXEL_TAGS:
            return elems, pos
        if tag >> 16 == 0xFFFE or tag <= last or tag >> 16 in (0, 2):
            raise Fallback  # stray delimiters, duplicates, meta elements in the data set
        last = tag
        sequence = vr == "SQ" or (vr is None and _dict_vr(tag) == "SQ")
        if vr == "UN" and (length == UNDEFINED or _dict_vr(tag) == "SQ"):
            raise Fallback  # pydicom reads these as sequences: left to it
        if length == UNDEFINED:
            if not sequence:
                raise Fallback
            items, after = _items(buf, vpos, None, implicit)
            elems.append(Elem(tag, vr, length, vpos, after, items))
            pos = after
            continue
        after = vpos + length
        if after > len(buf):
            raise Fallback
        inner = _items(buf, vpos, after, implicit)[0] if sequence else None
        elems.append(Elem(tag, vr, length, vpos, after, inner))
        pos = after


def _items(buf: bytes, pos: int, end: int | None, implicit: bool) -> tuple[list[Item], int]:
    items: list[Item] = []
    while True:
        if end is not None and pos >= end:
            if pos != end:
                raise Fallback
            return items, pos
        if pos + 8 > len(buf):
            raise Fallback
        tag, _, length, vpos = _element_at(buf, pos, True)
        if tag == _SEQ_END and end is None:
            if length != 0:
                raise Fallback
            return items, vpos
        if tag != _ITEM:
            raise Fallback
        if length == UNDEFINED:
            elems, pos = _elements(buf, vpos, None, implicit, False)
            items.append(Item(elems, True))
        else:
            if vpos + length > len(buf):
                raise Fallback
            elems, pos = _elements(buf, vpos, vpos + length, implicit, False)
            items.append(Item(elems, False))


def _meta(buf: bytes) -> tuple[str, int]:
    """The transfer syntax and where the data set starts (after the group-2 elements)."""
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Fallback
    pos = 132
    syntax = None
    while pos + 8 <= len(buf) and _H.unpack_from(buf, pos)[0] == 2:
        tag, _, length, vpos = _element_at(buf, pos, False)
        if length == UNDEFINED or vpos + length > len(buf):
            raise Fallback
        if tag == 0x00020010:
            syntax = buf[vpos : vpos + length].decode("ascii", "replace").rstrip("\x00 ")
        pos = vpos + length
    if not syntax:
        raise Fallback
    return syntax, pos


def read_header(fin: BinaryIO, size: int) -> Header:
    """Walk the header of the file ``fin`` (``size`` bytes); Fallback if not simple."""
    fin.seek(0)
    buf = fin.read(HEAD)
    syntax, start = _meta(buf)
    ts = UID(syntax)
    if not ts.is_transfer_syntax or ts.is_private or ts == DeflatedExplicitVRLittleEndian:
        raise Fallback
    if not ts.is_little_endian:
        raise Fallback
    implicit = bool(ts.is_implicit_VR)
    if len(buf) < size:  # the header must end (at the pixel element) inside buf
        elems, at = _elements(buf[: len(buf)], start, None, implicit, True)
        if at >= len(buf):
            raise Fallback
    else:
        elems, at = _elements(buf, start, None, implicit, True)
    pixel_offset = None if at >= size else at
    charset: Any = default_encoding
    for e in elems:
        if e.tag == CHARSET:
            text = buf[e.vpos : e.vpos + e.length].rstrip(b" \x00")
            if text not in _CHARSETS or e.length == UNDEFINED:
                raise Fallback
            raw = RawDataElement(BaseTag(CHARSET), e.vr, e.length, buf[e.vpos : e.end], e.vpos,
                                 implicit, True)  # fmt: skip
            charset = convert_encodings(convert_raw_data_element(raw).value)
        if e.tag >= CHARSET:
            break
    return Header(buf, implicit, syntax, elems, pixel_offset, charset)


def pixel_end(fin: BinaryIO, offset: int, implicit: bool) -> int:
    """Where the pixel element starting at ``offset`` ends (Fallback: not parseable)."""
    fin.seek(offset)
    head = fin.read(12)
    if len(head) < 8:
        raise Fallback
    if implicit:
        length, at = _I.unpack_from(head, 4)[0], offset + 8
    elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
        if len(head) < 12:
            raise Fallback
        length, at = _I.unpack_from(head, 8)[0], offset + 12
    else:
        raise Fallback
    if length != UNDEFINED:
        return at + length
    while True:  # encapsulated: items up to the sequence delimiter
        fin.seek(at)
        item = fin.read(8)
        if len(item) < 8:
            raise Fallback
        group, elem, size = _HHI.unpack(item)
        at += 8
        if (group << 16) | elem == _SEQ_END:
            return at
        if (group << 16) | elem != _ITEM:
            raise Fallback
        at += size


# -- one level (the data set, or one item): decoded values on demand ------------------------


class _Level:
    """The elements of one data set or item. ``ds`` holds the decoded elements only: an
    element is decoded there exactly as the general path's dataset decodes it."""

    def __init__(
        self,
        head: Header,
        elems: list[Elem],
        encoding: Any,
        top: bool,
        children: dict[int, _Level] | None = None,
    ) -> None:
        self.head = head
        self.children: dict[int, _Level] = {} if children is None else children
        self.elems = {e.tag: e for e in elems}
        self.top = top
        self.method_codes: tuple[str, ...] | None = None  # the method sequence to write
        self.encoding = encoding
        self.decoded: dict[int, DataElement] = {}  # ds's elements by int tag (fast lookups)
        self.ds = Dataset(parent_encoding=encoding)
        self.ds.set_original_encoding(head.implicit, True, encoding)
        if not top and CHARSET in self.elems:
            raise Fallback

    def raw(self, tag: int) -> RawDataElement:
        e = self.elems[tag]
        if e.items is not None:
            raise Fallback  # sequences are walked, never decoded here
        buf = self.head.buf
        value = buf[e.vpos : e.end] if e.length else _empty_value(e.vr, raw=True)
        if value is not None and not isinstance(value, bytes):
            raise Fallback
        return RawDataElement(BaseTag(tag), e.vr, e.length, value, e.vpos, self.head.implicit, True)

    def _vr_safe(self, tag: int) -> None:
        e = self.elems[tag]
        vr = e.vr
        if vr is None or vr == "UN":
            if (tag >> 16) & 1 and tag & 0xFFFF >= 0x100:
                raise Fallback  # its VR would come from the creator: left to pydicom
            vr = _dict_vr(tag) or vr
        if vr is not None and " or " in vr:
            raise Fallback  # ambiguous VR: corrected from other elements by pydicom

    def decode(self, tag: int) -> DataElement:
        """The element, decoded (as ``Dataset.__getitem__`` decodes it) and kept decoded."""
        got = self.decoded.get(tag)
        if got is not None:
            return got
        self._vr_safe(tag)
        key = BaseTag(tag)
        if (tag >> 16) & 1 or tag == CHARSET:  # the dataset's own bookkeeping applies
            self.ds._dict[key] = self.raw(tag)
            elem = self.ds[key]
        else:  # what Dataset.__getitem__ does for a public, unambiguous, non-SQ element
            elem = convert_raw_data_element(self.raw(tag), encoding=self.encoding, ds=self.ds)
            self.ds._dict[key] = elem
        self.decoded[tag] = elem
        return elem

    def peek(self, tag: int) -> Any:
        """The element's value decoded aside (left as read)."""
        if tag not in self.elems:
            return None
        if tag in self.decoded:
            return self.decoded[tag].value
        self._vr_safe(tag)
        return convert_raw_data_element(self.raw(tag), encoding=self.encoding, ds=self.ds).value

    def value(self, tag: int, default: Any = None) -> Any:
        """``ds.get(keyword, default)`` of the general path: decodes the element."""
        if tag not in self.elems:
            return default
        return self.decode(tag).value

    def drop(self, tag: int, ctx: Context) -> None:
        """``actions.drop``: X by tag."""
        if self.decoded.pop(tag, None) is not None:
            del self.ds._dict[BaseTag(tag)]
        del self.elems[tag]
        ctx.changes.removed.add(name_of(tag))

    def sync(self, tag: int) -> None:
        """An action removed the decoded element: it is gone from the level too."""
        if BaseTag(tag) not in self.ds._dict:
            self.elems.pop(tag, None)
            self.decoded.pop(tag, None)

    def vr_of(self, tag: int) -> str:
        """``actions.vr_of`` without decoding."""
        got = self.decoded.get(tag)
        vr = got.VR if got is not None else self.elems[tag].vr
        if vr and vr != "UN":
            return str(vr)
        return _dict_vr(tag) or "UN"

    def check_length(self, tag: int, vr: str) -> None:
        """``actions.check_length``: a raw length or a decoded value that cannot fit."""
        if tag in self.decoded:
            actions.check_length(self.ds, tag, vr)
            return
        if not actions.is_known(tag):
            return
        e = self.elems[tag]
        if e.items is not None:
            return  # sequences always fit
        actions.check_raw_length(tag, vr, e.length)

    def public(self) -> list[int]:
        return [t for t in self.elems if not (t >> 16) & 1]

    def private(self) -> list[int]:
        return [t for t in self.elems if (t >> 16) & 1]


# -- the profiles, mirrored from basic.apply / eucaim.apply -----------------------------------


def _basic(
    lv: _Level, options: frozenset[Option], secret: str, ctx: Context, inherited: str
) -> None:
    private = lv.private()
    kept: set[int] = set()
    if Option.retain_safe_private in options:
        for tag in private:
            creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
            block = tag & 0xFFFF >= 0x1000 and creator_tag in lv.elems
            if block and is_safe(str(lv.decode(creator_tag).value), tag):
                kept |= {tag, creator_tag}
    for tag in private:
        if tag not in kept:
            lv.drop(tag, ctx)
    pid = _patient_key(lv, inherited)
    for tag in lv.public():
        if tag in (PATIENT_ID, PATIENT_NAME):
            elem = lv.decode(tag)
            new = values.keyed_patient_id(secret, pid)
            if str(elem.value or "") != new:
                elem.value = new
                ctx.changes.changed.add(name_of(tag))
            continue
        vr = lv.vr_of(tag)
        lv.check_length(tag, vr)
        action = basic_action(tag, vr, options)
        if action == "X":
            lv.drop(tag, ctx)
            continue
        if not actions.needs_value(action, vr):
            continue
        e = lv.elems[tag]
        if e.items is not None:
            if action in ("K", "D", "C", "U"):
                for item in e.items:
                    _basic(_child(lv, item), options, secret, ctx, pid)
            else:
                _empty_sequence(lv, e, ctx)
            continue
        basic._do(action, lv.ds, lv.decode(tag), ctx)
        lv.sync(tag)


def _patient_key(lv: _Level, inherited: str) -> str:
    """``basic.patient_key`` on the level."""
    pid = str(lv.value(PATIENT_ID, "") or "").strip()
    if pid:
        return pid
    return inherited or "study:" + str(lv.value(STUDY_UID, "") or "")


def _eucaim(lv: _Level, secret: str, original_pid: str | None, ctx: Context) -> None:
    private = lv.private()
    kept: set[int] = set()
    for tag in eucaim._KEPT_PRIVATE.intersection(private):
        creator_tag = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
        if creator_tag in lv.elems and is_safe(str(lv.decode(creator_tag).value), tag):
            kept |= {tag, creator_tag}
    for tag in private:
        if tag not in kept:
            lv.drop(tag, ctx)
    for tag in lv.public():
        vr = lv.vr_of(tag)
        lv.check_length(tag, vr)
        code = eucaim.code_for(tag, vr)
        if code == "X":
            lv.drop(tag, ctx)
            continue
        if code == "K" and vr != "UI" and not actions.needs_value(code, vr):
            continue
        e = lv.elems[tag]
        if e.items is not None:
            if code == "Z":
                _empty_sequence(lv, e, ctx)
            else:
                for item in e.items:
                    _eucaim(_child(lv, item), secret, original_pid, ctx)
            continue
        eucaim._value(code, lv.ds, lv.decode(tag), secret, original_pid, ctx)
        lv.sync(tag)


def _child(lv: _Level, item: Item) -> _Level:
    child = _Level(lv.head, item.elems, lv.encoding, False, lv.children)
    lv.children[id(item)] = child
    return child


def _empty_sequence(lv: _Level, e: Elem, ctx: Context) -> None:
    """``actions.empty`` on a sequence: no items left (its length form kept)."""
    assert e.items is not None
    if e.items:
        ctx.changes.changed.add(name_of(e.tag))
    e.items = []


# -- writing ---------------------------------------------------------------------------------


def _bytes(fp: DicomFileLike) -> bytes:
    return cast(io.BytesIO, fp.parent).getvalue()


class _Out:
    """Encodes levels as the general path's writers do."""

    def __init__(self, head: Header) -> None:
        self.head = head
        self.enc = Encoding(head.implicit, True)

    def fp(self) -> DicomFileLike:
        out = DicomFileLike(io.BytesIO())
        out.is_implicit_VR, out.is_little_endian = self.head.implicit, True
        return out

    def level(self, out: DicomFileLike, lv: _Level, charset: Any, ascii_text: bool) -> None:
        buf = self.head.buf
        decoded_now = {int(t): e for t, e in lv.ds._dict.items()}  # profile's additions too
        tags = lv.elems.keys() | decoded_now.keys()
        if lv.method_codes is not None:
            tags |= {METHOD_SEQUENCE}
        for tag in sorted(tags):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # group lengths are not written
            if tag == METHOD_SEQUENCE and lv.method_codes is not None:
                out.write(self.method(lv, lv.method_codes, charset))
                continue
            decoded = decoded_now.get(tag)
            if decoded is not None and not isinstance(decoded, RawDataElement):
                if lv.top and _string(out, decoded, self.enc, ascii_text):
                    continue
                write_data_element(out, decoded, charset)
                continue
            e = lv.elems[tag]
            if e.items is not None:
                self.sequence(out, lv, e, charset)
                continue
            value = buf[e.vpos : e.end] if e.length else _empty_value(e.vr, raw=True)
            if not isinstance(value, bytes) or not _raw_value(out, tag, e.vr, value, self.enc):
                raise Fallback

    def method(self, lv: _Level, codes: tuple[str, ...], charset: Any) -> bytes:
        """The code sequence ``method.write`` adds, encoded by the same writer (once per
        codes and encoding: it is the same for every instance)."""
        key = (codes, self.head.implicit, repr(charset), repr(lv.encoding))
        got = _METHOD_BYTES.get(key)
        if got is None:
            probe = Dataset(parent_encoding=lv.encoding)
            probe.set_original_encoding(self.head.implicit, True, lv.encoding)
            method.write(probe, list(codes), [], Context(str, str, []))
            fp = self.fp()
            write_data_element(fp, probe[METHOD_SEQUENCE], charset)
            got = _bytes(fp)
            if len(_METHOD_BYTES) > 256:
                _METHOD_BYTES.clear()
            _METHOD_BYTES[key] = got
        return got

    def sequence(self, out: DicomFileLike, lv: _Level, e: Elem, charset: Any) -> None:
        """``write_data_element`` of a decoded sequence: items as ``write_sequence_item``."""
        assert e.items is not None
        encodings = convert_encodings(charset)
        body = self.fp()
        for item in e.items:
            child = lv.children.get(id(item))
            if child is None:
                raise Fallback
            inner = self.fp()
            self.level(inner, child, encodings, False)
            data = _bytes(inner)
            body.write_tag(_ITEM)
            body.write_UL(UNDEFINED if item.undefined else len(data))
            body.write(data)
            if item.undefined:
                body.write_tag(_ITEM_END)
                body.write_UL(0)
        data = _bytes(body)
        undefined = e.length == UNDEFINED
        out.write_tag(e.tag)
        if not self.head.implicit:
            out.write(b"SQ\x00\x00")
        out.write_UL(UNDEFINED if undefined else len(data))
        out.write(data)
        if undefined:
            out.write_tag(_SEQ_END)
            out.write_UL(0)


# -- the whole header ------------------------------------------------------------------------


@dataclass
class Sent:
    """The sent UIDs (decoded aside, before any change) and whether the file is Part 10."""

    sop_class: str
    sop_instance: str
    study: str
    readable: bool


@dataclass
class RawResult:
    header: bytes
    changes: Changes


def _text(value: Any) -> str:
    return str(value or "").strip().rstrip("\x00")[:64]


def open_top(head: Header) -> _Level:
    """The data set's level; Fallback without the SOP Class and Instance UIDs."""
    top = _Level(head, head.elems, head.charset, True)
    if SOP_CLASS not in top.elems or SOP_INSTANCE not in top.elems:
        raise Fallback
    return top


def sent_of(top: _Level) -> Sent:
    """The sent UIDs, decoded aside (the level is left as read)."""
    peek = top.peek
    return Sent(_text(peek(SOP_CLASS)), _text(peek(SOP_INSTANCE)), _text(peek(STUDY_UID)), True)


def deidentify_header(top: _Level, policy: DeidPolicy, secret: str) -> RawResult:
    """The de-identified header (preamble, file meta, data set) of the level ``top``."""
    _burned_in(top)
    changes = Changes()
    if policy.profile is Profile.eucaim:
        _eucaim_top(top, policy, secret, changes)
    else:
        _basic_top(top, policy.options, secret, changes)
    for tag in (SOP_CLASS, SOP_INSTANCE):  # the file meta reads them (decoded)
        if tag in top.elems:
            top.decode(tag)
    meta = _meta_bytes(top.ds, top.head.transfer_syntax)
    if meta is None:
        raise Fallback
    charset = top.value(CHARSET, default_encoding)  # as _write_plain reads it
    ascii_text = convert_encodings(charset) in _ASCII_CHARSETS
    out = _Out(top.head)
    body = out.fp()
    body.write(b"\x00" * 128 + b"DICM" + meta)
    out.level(body, top, charset, ascii_text)
    return RawResult(_bytes(body), changes)


def _burned_in(top: _Level) -> None:
    """``burned_in.suspicion`` reading the same elements; a suspect is left to the
    general path (which refuses or holds it)."""
    flag = str(top.value(0x00280301, "") or "").strip().upper()
    if flag == "YES":
        raise Fallback
    if flag == "NO":
        return
    modality = str(top.value(0x00080060, "") or "").strip().upper()
    if modality in burned_in.SUSPECT_MODALITIES:
        raise Fallback
    if str(top.value(SOP_CLASS, "") or "").startswith(burned_in.SUSPECT_SOP_PREFIXES):
        raise Fallback


def _context(top: _Level, changes: Changes, map_uid: Callable[[str], str]) -> Context:
    found: list[str] = []
    for tag in _IDENTIFYING_TAGS:
        if tag not in top.elems:
            continue
        found.extend(values.value_strings(top.decode(tag).value))
    words = values.identifying_words(found)
    return Context(map_uid=map_uid, shift_date=lambda v: v, words=words, changes=changes)


def _write_method(top: _Level, codes: list[str], text: list[str], ctx: Context) -> None:
    """``method.write`` on the level; the code sequence (absent: ``_set_later``) is noted
    as added and written from its encoding (``_Out.method``)."""
    set_value(top.ds, 0x00120062, "CS", "YES", ctx)
    set_value(top.ds, 0x00120063, "LO", list(text), ctx)
    ctx.changes.added.add(name_of(METHOD_SEQUENCE))
    top.method_codes = tuple(codes)


_INT_SIZES = {"US": 2, "UL": 4, "SL": 4}
_SAME_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_TEXT_VRS = frozenset({"LO", "SH"})
_PRINTABLE = bytes(range(0x20, 0x7F))
# number strings pydicom reads as numbers and the writer writes back as read
_NUMBERS = {
    "IS": re.compile(rb"[+-]?[0-9]+"),
    "DS": re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"),
}


def same_when_decoded(vr: str | None, value: bytes, ascii_text: bool) -> bool:
    """Whether decoding this value (pydicom) and encoding it again (``_string``) gives
    back exactly these bytes, so it may stay as read: whole integers; plain ASCII
    strings and plain number strings whose values carry no leading or trailing space
    and whose padding is the one byte the writer would add. False when unsure (the
    value is decoded then)."""
    if not value or vr is None:
        return False
    size = _INT_SIZES.get(vr)
    if size is not None:
        return len(value) % size == 0
    number = _NUMBERS.get(vr)
    if number is not None:  # written back from each value's string as read
        if len(value) % 2:
            return False
        body = value[:-1] if value.endswith(b" ") else value
        return all(number.fullmatch(part) for part in body.split(b"\\"))
    if vr not in _SAME_TEXT_VRS and (vr not in _TEXT_VRS or not ascii_text):
        return False
    if len(value) % 2:
        return False  # the writer pads to an even length
    pad = b"\x00" if vr == "UI" else b" "
    # an odd text gets exactly this pad byte from the writer, an even one none
    body = value[:-1] if value.endswith(pad) else value
    if not body or body.translate(None, _PRINTABLE):
        return False  # only padding, or not printable ASCII
    return all(part[:1] != b" " and part[-1:] != b" " for part in body.split(b"\\"))


def _drop_stale(top: _Level, changes: Changes) -> None:
    for tag in [t for t in top.elems if t & 0xFFFF == 0 or t == 0x00080001]:
        del top.elems[tag]
        changes.removed.add("GroupLength" if tag & 0xFFFF == 0 else "LengthToEnd")


def _set_later(top: _Level, tags: tuple[int, ...]) -> None:
    """The elements the profile sets afterwards are decoded first (``set_value``)."""
    if METHOD_SEQUENCE in top.elems:
        raise Fallback  # a method sequence already there is replaced whole: general path
    for tag in tags:
        if tag in top.elems:
            top.decode(tag)


def _basic_top(top: _Level, options: frozenset[Option], secret: str, changes: Changes) -> None:
    pid = _patient_key(top, "")
    ctx = _context(top, changes, lambda uid: values.keyed_uid(secret, uid))
    days = values.date_offset_days(secret, pid)
    ctx.shift_date = lambda v: values.shift_dt_or_da(v, days)
    _drop_stale(top, changes)
    _basic(top, options, secret, ctx, "")
    _set_later(top, _BASIC_SET)
    pseudonym = values.keyed_patient_id(secret, pid)
    set_value(top.ds, basic.PATIENT_ID, "LO", pseudonym, ctx)
    set_value(top.ds, basic.PATIENT_NAME, "PN", pseudonym, ctx)
    method.longitudinal(top.ds, options, ctx)
    _write_method(top, method.basic_codes(options), method.BASIC_TEXT, ctx)


def _eucaim_top(top: _Level, policy: DeidPolicy, secret: str, changes: Changes) -> None:
    original = None if PATIENT_ID not in top.elems else str(top.decode(PATIENT_ID).value or "")
    anon_pid = ctp.hash_patient_id(secret, original)
    ctx = _context(top, changes, lambda uid: ctp.hash_uid(ctp.EUCAIM_UID_ROOT, uid, anon_pid))
    _drop_stale(top, changes)
    _eucaim(top, secret, original, ctx)
    _set_later(top, _EUCAIM_SET)
    set_value(top.ds, 0x00080080, "LO", eucaim.provider_hash(policy.provider_id), ctx)
    codes = list(method.EUCAIM_CODES)
    ascii_text = convert_encodings(top.head.charset) in _ASCII_CHARSETS
    buf = top.head.buf
    for tag, e in list(top.elems.items()):  # the general path decodes every element here
        if e.items is not None or tag in top.decoded:
            continue
        if not same_when_decoded(e.vr, buf[e.vpos : e.end], ascii_text):
            top.decode(tag)
    if any((t >> 16) & 1 for t in top.elems):
        codes.append("113111")
    _write_method(top, codes, method.EUCAIM_TEXT, ctx)
