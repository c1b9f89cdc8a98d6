"""Read a Part-10 header without its pixel data, write the new header, copy pixels raw.

Pixel data is never loaded: the header is parsed up to the first pixel element (large
header values deferred), the de-identified header is written, then the pixel element's
bytes are copied from the source in chunks (native: its defined length; encapsulated:
item by item up to the sequence delimiter). Elements after the pixel data are parsed
(they are small) so the profile applies to them too. Deflated transfer syntaxes are the
exception: the whole dataset is inflated, de-identified and re-encoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import (
    dcmwrite,
    write_data_element,
    write_dataset,
    write_file_meta_info,
)
from pydicom.multival import MultiValue
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, IS, DSdecimal, DSfloat

from server.core.records import UnreadableInstance

CHUNK = 1 << 20
DEFER = 1 << 16  # header values above 64 KiB stay on disk until written
PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
IMPLEMENTATION_VERSION = "CIG_DEID_1"
_IMPLEMENTATION_UID = PYDICOM_IMPLEMENTATION_UID.encode("ascii") + b"\x00" * (
    len(PYDICOM_IMPLEMENTATION_UID) % 2
)


class Encoding(NamedTuple):
    """How a data set is encoded (what the writers below need of a Source)."""

    implicit: bool
    little: bool


@dataclass
class Source:
    """A parsed header and where the pixel element starts (None: no pixel data)."""

    ds: FileDataset
    transfer_syntax: str
    pixel_offset: int | None
    implicit: bool
    little: bool


def _syntax(ds: FileDataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if ts:
        return ts
    if ds.is_implicit_VR:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if ds.is_little_endian else ExplicitVRBigEndian


def read(fp: BinaryIO) -> Source:
    """Parse everything before the pixel data; UnreadableInstance if it is not DICOM."""
    try:
        ds = dcmread(fp, stop_before_pixels=True, defer_size=DEFER, force=True)
        offset = fp.tell()
        ts = _syntax(ds)
        if ts == DeflatedExplicitVRLittleEndian:
            fp.seek(0)
            ds = dcmread(fp, force=True)
            offset = -1
        implicit, little = bool(ds.is_implicit_VR), bool(ds.is_little_endian)
    except Exception as exc:  # any parser failure on client bytes is the client's
        # the exception text may quote a value (PHI): only its type is reported
        raise UnreadableInstance(f"not a readable DICOM instance ({type(exc).__name__})") from exc
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        raise UnreadableInstance("not a DICOM instance: SOPClassUID or SOPInstanceUID missing")
    fp.seek(0, 2)
    at_pixels = 0 <= offset < fp.tell() and _tag_at(fp, offset, little) in PIXEL_TAGS
    return Source(ds, ts, offset if at_pixels else None, implicit, little)


def _tag_at(fp: BinaryIO, offset: int, little: bool) -> int:
    fp.seek(offset)
    raw = fp.read(4)
    if len(raw) < 4:
        return 0
    group, elem = struct.unpack("<HH" if little else ">HH", raw)
    return int((group << 16) | elem)


def copy_pixels(src: BinaryIO, dst: BinaryIO | None, source: Source) -> None:
    """Copy the pixel element's bytes verbatim (``dst`` None: only skip them, by seeking).

    ``src`` is left just after the element."""
    assert source.pixel_offset is not None
    src.seek(source.pixel_offset)
    end = "<" if source.little else ">"
    head = src.read(8)
    if source.implicit:
        length = struct.unpack(end + "I", head[4:8])[0]
    elif head[4:6] in _LONG_VRS:
        head += src.read(4)
        length = struct.unpack(end + "I", head[8:12])[0]
    else:
        length = struct.unpack(end + "H", head[6:8])[0]
    if dst is not None:
        dst.write(head)
    if length != 0xFFFFFFFF:
        _copy(src, dst, length)
        return
    while True:  # encapsulated: items up to the sequence delimiter
        item = src.read(8)
        if len(item) < 8:
            raise UnreadableInstance("encapsulated pixel data ends without a delimiter")
        if dst is not None:
            dst.write(item)
        group, elem, size = struct.unpack(end + "HHI", item)
        if (group << 16) | elem == _SEQ_END:
            return
        _copy(src, dst, size)


def _copy(src: BinaryIO, dst: BinaryIO | None, length: int) -> None:
    if dst is None:
        start = src.tell()
        if src.seek(start + length) > src.seek(0, 2):
            raise UnreadableInstance("pixel data is shorter than its declared length")
        src.seek(start + length)
        return
    left = length
    while left > 0:
        block = src.read(min(CHUNK, left))
        if not block:
            raise UnreadableInstance("pixel data is shorter than its declared length")
        dst.write(block)
        left -= len(block)


def read_trailing(src: BinaryIO, source: Source) -> Dataset:
    """Elements after the pixel data (usually none), parsed to be de-identified too."""
    start = src.tell()
    src.seek(0, 2)
    size = src.tell() - start
    src.seek(start)
    if size <= 0:
        return Dataset()
    try:
        return read_dataset(src, source.implicit, source.little, bytelength=size)
    except Exception as exc:
        name = type(exc).__name__
        raise UnreadableInstance(f"unreadable elements after the pixel data ({name})") from exc


def new_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    """A fresh file meta group: nothing from the sender (AE titles, private info)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def write_header(dst: BinaryIO, source: Source) -> None:
    """Preamble (zeros), the new file meta and the de-identified dataset."""
    ds = source.ds
    if _plain(source):
        meta = _meta_bytes(ds, source.transfer_syntax)
        if meta is not None:
            _write_plain(dst, source, meta)
            return
    ds.file_meta = new_meta(ds, source.transfer_syntax)
    ds.preamble = b"\x00" * 128
    if _plain(source):
        _write_plain(dst, source, None)
        return
    dcmwrite(
        dst,
        ds,
        enforce_file_format=True,
        implicit_vr=source.implicit,
        little_endian=source.little,
    )


def _plain(source: Source) -> bool:
    """A standard, non-deflated transfer syntax agreeing with the parsed encoding and no
    group 0000/0002 element in the dataset: what ``dcmwrite`` would write needs none of
    its checks or conversions (nor its copy of the file meta)."""
    ts = UID(source.transfer_syntax)
    if ts == DeflatedExplicitVRLittleEndian or ts.is_private or not ts.is_transfer_syntax:
        return False
    if (ts.is_implicit_VR, ts.is_little_endian) != (source.implicit, source.little):
        return False
    return not any(t >> 16 in (0, 2) for t in source.ds._dict)


def _same_encoding(source: Source) -> bool:
    ds = source.ds
    return bool(
        ds.original_encoding == (source.implicit, source.little)
        and ds.original_character_set == ds._character_set
    )


def written_as_parsed(source: Source) -> bool:
    """``write_header`` will write the dataset's elements in the encoding and character
    set they were read in: parsing the written header gives back ``source.ds``."""
    return _plain(source) and _same_encoding(source)


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of the file meta group."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr == b"OB":
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _ui(value: object) -> bytes | None:
    """A UI value as pydicom's writer encodes it (NUL-padded to even length); None when
    it is not one plain ASCII string (pydicom's own writer handles that case)."""
    if type(value) not in (str, UID) or not value or not str(value).isascii():
        return None  # empty: pydicom's validation refuses it
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _meta_bytes(ds: Dataset, transfer_syntax: str) -> bytes | None:
    """The file meta group of ``new_meta`` exactly as ``write_file_meta_info`` writes it
    (group length first, elements in tag order), without building a FileMetaDataset."""
    try:
        uids = [_ui(ds.SOPClassUID), _ui(ds.SOPInstanceUID), _ui(transfer_syntax)]
    except (AttributeError, KeyError):
        return None
    if any(u is None or len(u) > 0xFFFF for u in uids):
        return None
    sop_class, sop_instance, syntax = uids
    name = IMPLEMENTATION_VERSION.encode("ascii")
    body = b"".join(
        (
            _meta_element(0x00020001, b"OB", b"\x00\x01"),
            _meta_element(0x00020002, b"UI", sop_class or b""),
            _meta_element(0x00020003, b"UI", sop_instance or b""),
            _meta_element(0x00020010, b"UI", syntax or b""),
            _meta_element(0x00020012, b"UI", _IMPLEMENTATION_UID),
            _meta_element(0x00020013, b"SH", name + b" " * (len(name) % 2)),
        )
    )
    return _meta_element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def _write_plain(dst: BinaryIO, source: Source, meta: bytes | None) -> None:
    """Byte for byte what ``dcmwrite(enforce_file_format=True)`` writes in that case.

    ``meta``: the file meta group already encoded (``_meta_bytes``); None: written from
    ``ds.file_meta`` by pydicom."""
    out = DicomFileLike(dst)
    out.is_implicit_VR, out.is_little_endian = source.implicit, source.little
    out.write(b"\x00" * 128)  # the preamble write_header sets
    out.write(b"DICM")
    if meta is not None:
        out.write(meta)
    else:
        write_file_meta_info(out, source.ds.file_meta, enforce_standard=True)
    ds = source.ds
    if not _same_encoding(source):
        write_dataset(out, ds)  # pydicom re-encodes every element then
        return
    charset = ds.get("SpecificCharacterSet", default_encoding)  # as write_dataset does
    ascii_text = convert_encodings(charset) in _ASCII_CHARSETS
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # group lengths are not written (PS3.5 7.2)
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            if _raw(out, elem, source):
                continue
        elif _string(out, elem, source, ascii_text):
            continue
        write_data_element(out, elem, charset)


# character sets whose encoding of ASCII text is ASCII (what write_text then writes)
_ASCII_CHARSETS = (["iso8859"], ["latin_1"], ["UTF8"], ["utf_8"])
# VRs pydicom writes with write_string (DA/DT/TM: when their values are str) or, for
# the second set, write_text: both join values with a backslash and pad to even length
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_NUMBER_STRING_VRS = frozenset({"DS", "IS"})
_INT_VRS = {"US": "H", "UL": "L", "SL": "l"}


def _string(
    out: DicomFileLike, elem: DataElement, source: Source | Encoding, ascii_text: bool
) -> bool:
    """A decoded string element of ASCII text, encoded as ``write_data_element`` encodes
    it; False for anything else (pydicom's writer handles it)."""
    vr = elem.VR
    value = elem.value
    if vr in _INT_VRS:
        return _ints(out, elem, source)
    if vr in _NUMBER_STRING_VRS:  # write_number_string: the strings as read
        value = [value] if isinstance(value, IS | DSfloat | DSdecimal) else value
        if not isinstance(value, MultiValue | list) or not all(
            isinstance(v, IS | DSfloat | DSdecimal) and hasattr(v, "original_string") for v in value
        ):
            return False
        value = [v.original_string for v in value]
    elif vr not in _STRING_VRS and (vr not in _TEXT_VRS or not ascii_text):
        return False
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, MultiValue | list | tuple) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        return False
    if not text.isascii():
        return False
    if len(text) % 2:
        text += "\x00" if vr == "UI" else " "
    return _raw_value(out, int(elem.tag), vr, text.encode("ascii"), source)


def _ints(out: DicomFileLike, elem: DataElement, source: Source | Encoding) -> bool:
    """write_numbers for US/UL/SL: one int or a list of ints, packed."""
    value = elem.value
    values = [value] if type(value) is int else value
    if not isinstance(values, MultiValue | list) or not all(type(v) is int for v in values):
        return False
    end = "<" if source.little else ">"
    try:
        packed = struct.pack(f"{end}{len(values)}{_INT_VRS[elem.VR]}", *values)
    except struct.error:
        return False  # out of range: pydicom's writer reports it
    return _raw_value(out, int(elem.tag), elem.VR, packed, source)


def _raw(out: DicomFileLike, elem: RawDataElement, source: Source) -> bool:
    """An element never decoded, written as read (what write_data_element writes for
    it); False when pydicom's own handling is needed (undefined or oversized length)."""
    value, vr = elem.value, elem.VR
    if not isinstance(value, bytes) or elem.length == 0xFFFFFFFF:
        return False
    return _raw_value(out, int(elem.tag), vr, value, source)


def _raw_value(
    out: DicomFileLike, tag: int, vr: str | None, value: bytes, source: Source | Encoding
) -> bool:
    """Tag, VR (explicit), length and ``value``; False when the length does not fit."""
    end = "<" if source.little else ">"
    head = struct.pack(end + "HH", tag >> 16, tag & 0xFFFF)
    if source.implicit:
        out.write(head + struct.pack(end + "I", len(value)) + value)
        return True
    if not vr or len(vr) != 2:
        return False
    if vr in EXPLICIT_VR_LENGTH_32:
        head += vr.encode() + struct.pack(end + "HI", 0, len(value))
    elif len(value) <= 0xFFFF:
        head += vr.encode() + struct.pack(end + "H", len(value))
    else:
        return False
    out.write(head + value)
    return True


def write_trailing(dst: BinaryIO, trailing: Dataset, source: Source) -> None:
    if len(trailing) == 0:
        return
    out = DicomFileLike(dst)
    out.is_little_endian = source.little
    out.is_implicit_VR = source.implicit
    write_dataset(out, trailing)
