"""Frame locations inside stored Part-10 files, for WADO-RS frame retrieval.

At ingest :func:`index_pixel_data` reads the header of a stored file (stopping
before the Pixel Data value), walks the encapsulated items with file seeks and
records, per frame, the ``(file_offset, length)`` of each byte range holding it.
Retrieval then reads a frame with a seek and a read (:func:`read_frame`), never
the whole file.

Index layout (``PixelIndex.frames``), one entry per frame:

* native (PS3.5 8.1.1, 8.2): one range per frame, ``Rows x Columns x Samples x
  BitsAllocated / 8`` bytes (for native YBR_FULL_422, two samples per pixel).
  For Bits Allocated 1 a frame need not start on a byte boundary: its entry is
  then the range of the bytes *covering* its bits, and :func:`read_frame` shifts
  the bits so the returned frame starts at bit 0 (padded with zero bits).
* encapsulated (PS3.5 A.4): the value ranges of the frame's fragments (item
  headers excluded). Frames are found from, in order: the Extended Offset Table
  (7FE0,0001/0002), the Basic Offset Table, one fragment per frame, all
  fragments for a single frame, then JPEG/JPEG-LS/JPEG 2000 start and end markers.
* video syntaxes (MPEG-2, H.264, HEVC; PS3.5 8.2.5+): a single entry holding
  the whole bitstream. Single frames cannot be cut out of it: :func:`read_frame`
  raises ``NotAcceptable``; use :func:`read_pixel_data` for the bitstream.
* Deflated Explicit VR Little Endian: offsets in the deflated stream mean
  nothing, so ``frames == ()`` and :func:`read_frame` inflates the file (slow).

The index database keeps the table packed (:mod:`server.core.frametable`,
:meth:`PixelIndex.to_bytes`): reading it back decodes nothing until a frame is
asked for, so a frame of a 100,000-frame whole-slide level costs the same as a
frame of a CT slice.

Files whose Pixel Data cannot be indexed (no Rows/Columns, invalid Number of
Frames, truncated value, frames that cannot be delimited) raise
:class:`PixelIndexError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits, pixel_array

from server.core import frametable
from server.core.frametable import Ranges
from server.errors import NotAcceptable, NotFound

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
_NATIVE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE})
_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAG = {True: b"\xe0\x7f\x10\x00", False: b"\x7f\xe0\x00\x10"}
_ITEM, _SEQ_DELIM = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
_LONG_VRS = frozenset({b"OB", b"OW", b"OV", b"OF", b"OD", b"OL", b"UN", b"UT", b"SQ"})
_START_MARKERS = (b"\xff\xd8", b"\xff\x4f")  # JPEG / JPEG-LS SOI, JPEG 2000 SOC
_EOI = b"\xff\xd9"  # JPEG / JPEG-LS EOI, JPEG 2000 EOC
_PACKED = b"PXI2"  # the serialised PixelIndex with a packed frame table

# PS3.18 Table 8.7.3-2 (single frame) and 8.7.3-5 (video) media types.
_JPEG = "1.2.840.10008.1.2.4."
_MEDIA_GROUPS: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("image/jpeg", tuple(range(50, 71))),
    ("image/jls", (80, 81)),
    ("image/jp2", (90, 91)),
    ("image/jpx", (92, 93)),
    ("image/jphc", (201, 202, 203)),
    ("image/jxl", (110, 111, 112)),
    ("video/mpeg", (100, 101, "100.1", "101.1")),
    ("video/mp4", (*range(102, 107), *(f"{n}.1" for n in range(102, 107)))),
    ("video/H265", (107, 108)),
)
_MEDIA_TYPES = {f"{_JPEG}{n}": media for media, numbers in _MEDIA_GROUPS for n in numbers}
_MEDIA_TYPES["1.2.840.10008.1.2.5"] = "image/dicom-rle"


class PixelIndexError(ValueError):
    """The Pixel Data of a file is malformed, truncated or cannot be split into frames."""


@dataclass(frozen=True)
class PixelIndex:
    """Where each frame of a stored instance lies in its file (see the module docstring)."""

    transfer_syntax: str
    encapsulated: bool
    number_of_frames: int
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    photometric_interpretation: str
    frames: Sequence[Ranges]

    def to_bytes(self) -> bytes:
        """Compact form stored next to the instance in the index: a JSON header, then the
        packed frame table (:mod:`server.core.frametable`), decoded lazily on reading."""
        geometry = [self.rows, self.columns, self.samples_per_pixel, self.bits_allocated]
        head = orjson.dumps(
            {"ts": self.transfer_syntax, "enc": self.encapsulated, "n": self.number_of_frames,
             "geom": geometry, "pi": self.photometric_interpretation}
        )  # fmt: skip
        return (
            _PACKED + struct.pack("<I", len(head)) + head + frametable.pack(self.frames).to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PixelIndex:
        """Inverse of :meth:`to_bytes` (also reads the all-JSON form of earlier versions);
        ``ValueError`` on anything else. O(1) in the number of frames."""
        try:
            if data[: len(_PACKED)] == _PACKED:
                (size,) = struct.unpack_from("<I", data, len(_PACKED))
                start = len(_PACKED) + 4
                obj = orjson.loads(data[start : start + size])
                frames: Sequence[Ranges] = frametable.FrameTable.from_bytes(data[start + size :])
            else:
                obj = orjson.loads(data)
                frames = tuple(tuple((int(o), int(n)) for o, n in frame) for frame in obj["frames"])
            rows, columns, samples, bits = (int(v) for v in obj["geom"])
            index = cls(str(obj["ts"]), bool(obj["enc"]), int(obj["n"]), rows, columns, samples,
                        bits, str(obj["pi"]), frames)  # fmt: skip
        except (KeyError, TypeError, ValueError, struct.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"not a serialised PixelIndex: {exc}") from exc
        if frames and len(frames) != index.number_of_frames and not is_video(index.transfer_syntax):
            raise ValueError("not a serialised PixelIndex: frame table and frame count differ")
        return index


def is_video(transfer_syntax: str) -> bool:
    """PS3.5 8.2.5-8.2.8: True for the MPEG-2, H.264 and HEVC transfer syntaxes."""
    return frame_media_type(transfer_syntax).startswith("video/")


def frame_media_type(transfer_syntax: str) -> str:
    """PS3.18 Table 8.7.3-2 / 8.7.3-5: media type of frames stored in ``transfer_syntax``."""
    return _MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")


def index_pixel_data(path: Path) -> PixelIndex | None:
    """PS3.5 A.4 / 8.2: index the frames of the file at ``path``; None without Pixel Data.

    Float and Double Float Pixel Data also give None. Raises PixelIndexError when
    the Pixel Data is present but cannot be indexed.
    """
    with path.open("rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        return index_parsed(f, ds, path)


def index_parsed(f: BinaryIO, ds: Dataset, path: Path) -> PixelIndex | None:
    """PS3.5 A.4 / 8.2: as :func:`index_pixel_data`, continuing a header parse.

    ``ds`` was read from ``f`` by ``dcmread(f, stop_before_pixels=True)`` and ``f``
    is still where pydicom stopped, so the header is parsed only once at ingest.
    """
    syntax = _effective_syntax(ds)
    if syntax == DEFLATED_LE:
        return _index_deflated(path)
    element = _pixel_element(f, ds)
    if element is None:
        return None
    value_start, length = element
    file_size = os.fstat(f.fileno()).st_size
    geometry = _geometry(ds)
    if length != _UNDEFINED and value_start + length > file_size:
        raise PixelIndexError("Pixel Data is truncated: the file ends inside its value")
    if length == _UNDEFINED or syntax not in _NATIVE:
        # Some writers give encapsulated Pixel Data a defined length: walk it too.
        end = file_size if length == _UNDEFINED else value_start + length
        frames = _encapsulated_frames(f, ds, syntax, value_start, end)
        return PixelIndex(syntax, True, *geometry, frames)
    base = PixelIndex(syntax, False, *geometry, ())
    return replace(base, frames=_native_frames(base, value_start, length))


def _effective_syntax(ds: Dataset) -> str:
    """The transfer syntax; for native encodings, the one the data actually uses."""
    meta = getattr(ds, "file_meta", None)
    declared = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if declared and declared not in _NATIVE:
        return declared
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return declared or EXPLICIT_VR_LE
    if implicit:
        if not little:
            raise PixelIndexError("implicit VR big endian is not a DICOM encoding")
        return IMPLICIT_VR_LE
    return EXPLICIT_VR_LE if little else EXPLICIT_VR_BE


def _pixel_element(f: BinaryIO, ds: Dataset) -> tuple[int, int] | None:
    """``(value offset, value length)`` of (7FE0,0010) where the header read stopped."""
    implicit, little = ds.original_encoding
    little = True if little is None else little
    start = f.tell()
    head = f.read(12)
    if len(head) < 8 or head[:4] != _PIXEL_TAG[little]:
        return None
    endian = "<" if little else ">"
    vr = head[4:6]
    if implicit is None or (not implicit and not (vr.isalpha() and vr.isupper())):
        implicit = vr not in _LONG_VRS  # undeclared, or a writer mixed the encodings
    if implicit:
        return start + 8, struct.unpack(f"{endian}I", head[4:8])[0]
    if vr in _LONG_VRS:
        if len(head) < 12:
            raise PixelIndexError("file ends inside the Pixel Data element header")
        return start + 12, struct.unpack(f"{endian}I", head[8:12])[0]
    return start + 8, struct.unpack(f"{endian}H", head[6:8])[0]


def _geometry(ds: Dataset) -> tuple[int, int, int, int, int, str]:
    """Number of Frames, Rows, Columns, Samples per Pixel, Bits Allocated, Photometric."""
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if ds.get(k) in (None, "")]
    if missing:
        raise PixelIndexError(f"Pixel Data without {', '.join(missing)}")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated)
    except (TypeError, ValueError) as exc:
        raise PixelIndexError(f"invalid image pixel attribute: {exc}") from exc
    if min(frames, rows, columns, samples) < 1 or not (bits == 1 or (bits > 0 and bits % 8 == 0)):
        raise PixelIndexError(
            f"invalid geometry: {frames} frames of {rows}x{columns}x{samples}, {bits} bits"
        )
    return frames, rows, columns, samples, bits, str(ds.get("PhotometricInterpretation", ""))


def _frame_bits(index: PixelIndex) -> int:
    """PS3.5 8.1.1: bits of one native frame (YBR_FULL_422 carries two samples a pixel)."""
    samples = index.samples_per_pixel
    if index.photometric_interpretation == "YBR_FULL_422" and samples == 3:
        samples = 2
    return index.rows * index.columns * samples * index.bits_allocated


def _native_frames(
    index: PixelIndex, value_start: int, length: int
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """PS3.5 8.1.1: frames follow each other without padding; bit-packed when 1 bit."""
    frame_bits = _frame_bits(index)
    needed = (frame_bits * index.number_of_frames + 7) // 8
    if needed > length:
        raise PixelIndexError(
            f"Pixel Data holds {length} bytes but {index.number_of_frames} frame(s) need {needed}"
        )
    frames = []
    for i in range(index.number_of_frames):
        first = i * frame_bits // 8
        end = ((i + 1) * frame_bits + 7) // 8
        frames.append(((value_start + first, end - first),))
    return tuple(frames)


def _index_deflated(path: Path) -> PixelIndex | None:
    """PS3.5 A.5: offsets in a deflated stream are meaningless: no frame ranges."""
    ds = pydicom.dcmread(path, stop_before_pixels=False)
    if "PixelData" not in ds:
        return None
    return PixelIndex(DEFLATED_LE, False, *_geometry(ds), ())


def _walk_items(f: BinaryIO, start: int, end: int) -> tuple[bytes, int, list[tuple[int, int]]]:
    """PS3.5 A.4: the Basic Offset Table, the offset just after it, and each fragment's range."""
    items: list[tuple[int, int]] = []
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        group, element, length = struct.unpack("<HHI", f.read(8))
        if (group, element) == _SEQ_DELIM:
            break
        if (group, element) != _ITEM:
            raise PixelIndexError(f"unexpected tag ({group:04X},{element:04X}) at offset {pos}")
        if length == _UNDEFINED or pos + 8 + length > end:
            raise PixelIndexError(f"encapsulated item at offset {pos} is truncated")
        items.append((pos + 8, length))
        pos += 8 + length
    else:
        if pos != end or not items:
            raise PixelIndexError("encapsulated Pixel Data is truncated")
    if not items:
        raise PixelIndexError("encapsulated Pixel Data has no Basic Offset Table item")
    bot_start, bot_length = items[0]
    f.seek(bot_start)
    return f.read(bot_length), bot_start + bot_length, items[1:]


def _encapsulated_frames(
    f: BinaryIO, ds: Dataset, syntax: str, start: int, end: int
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """PS3.5 A.4: group fragments into frames (see the module docstring for the order)."""
    nframes = int(ds.get("NumberOfFrames") or 1)
    bot, base, fragments = _walk_items(f, start, end)
    if not fragments:
        raise PixelIndexError("encapsulated Pixel Data has no fragments")
    groups = None
    if is_video(syntax) or nframes == 1:
        groups = [fragments]
    for offsets in (_offsets(ds.get("ExtendedOffsetTable"), "Q"), _offsets(bot, "I")):
        if groups is None and offsets is not None and len(offsets) == nframes:
            groups = _group_by_offsets(fragments, base, offsets)
    if groups is None and len(fragments) == nframes:
        groups = [[fragment] for fragment in fragments]
    if groups is None:
        groups = _group_by_markers(f, fragments, nframes)
    if groups is None:
        raise PixelIndexError(
            f"cannot split {len(fragments)} fragments into {nframes} frames: "
            "no usable offset table and no frame markers"
        )
    return tuple(tuple(group) for group in groups)


def _offsets(raw: bytes | None, fmt: str) -> list[int] | None:
    """Decode an offset table: the Basic (A.4, "I") or Extended (C.7.6.3.1.8, "Q") one."""
    size = struct.calcsize(fmt)
    if not raw or len(raw) % size:
        return None
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))


def _group_by_offsets(
    fragments: list[tuple[int, int]], base: int, offsets: list[int]
) -> list[list[tuple[int, int]]] | None:
    """Offsets count from the first fragment's item tag; each must start a fragment."""
    position = {value_start - 8 - base: i for i, (value_start, _) in enumerate(fragments)}
    starts = [position.get(offset) for offset in offsets]
    if None in starts or starts[0] != 0:
        return None
    bounds = [s for s in starts if s is not None] + [len(fragments)]
    if any(a >= b for a, b in pairwise(bounds)):
        return None
    return [fragments[a:b] for a, b in pairwise(bounds)]


def _group_by_markers(
    f: BinaryIO, fragments: list[tuple[int, int]], nframes: int
) -> list[list[tuple[int, int]]] | None:
    """JPEG family: a frame starts with SOI/SOC and ends with EOI/EOC (maybe one pad byte)."""
    starts, ends = [], []
    for i, (value_start, length) in enumerate(fragments):
        f.seek(value_start)
        if f.read(2) in _START_MARKERS:
            starts.append(i)
        f.seek(value_start + max(length - 3, 0))
        tail = f.read(min(length, 3))
        if tail.endswith(_EOI) or (tail[-1:] == b"\x00" and tail[:-1].endswith(_EOI)):
            ends.append(i + 1)
    for bounds in ([*starts, len(fragments)], [0, *ends]):
        cut = sorted(set(bounds))
        if len(cut) == nframes + 1 and cut[0] == 0 and cut[-1] == len(fragments):
            return [fragments[a:b] for a, b in pairwise(cut)]
    return None


def _check_number(index: PixelIndex, number: int) -> None:
    if isinstance(number, bool) or not 1 <= number <= index.number_of_frames:
        raise NotFound(
            f"frame {number} does not exist (the instance has {index.number_of_frames} frame(s))"
        )


def read_frame(f: BinaryIO, index: PixelIndex, number: int) -> bytes:
    """PS3.18 10.4.1.1.3: the stored bytes of 1-based frame ``number`` (fragments joined).

    Native 1-bit frames are shifted to start at bit 0; Explicit VR Big Endian frames
    are returned as stored (see :func:`decode_frame_native` for little endian).
    Raises NotFound for a frame out of range, NotAcceptable for a video bitstream.
    """
    _check_number(index, number)
    if not index.frames:
        return _read_deflated_frame(f, index, number)
    if index.encapsulated and is_video(index.transfer_syntax):
        raise NotAcceptable("single frames cannot be extracted from a video bitstream")
    data = b"".join(_read_range(f, offset, length) for offset, length in index.frames[number - 1])
    if not index.encapsulated and index.bits_allocated == 1:
        return _realign_bits(data, index, number)
    return data


def read_pixel_data(f: BinaryIO, index: PixelIndex) -> bytes:
    """PS3.18 8.7.3.3.2: all stored frames joined (for video: the whole bitstream)."""
    if not index.frames:
        return b"".join(
            _read_deflated_frame(f, index, n) for n in range(1, index.number_of_frames + 1)
        )
    if not index.encapsulated:
        first, last = index.frames[0][0], index.frames[-1][-1]
        return _read_range(f, first[0], last[0] + last[1] - first[0])
    return b"".join(_read_range(f, off, length) for frame in index.frames for off, length in frame)


def _read_range(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise PixelIndexError(f"file is shorter than indexed ({offset}+{length})")
    return data


def _realign_bits(data: bytes, index: PixelIndex, number: int) -> bytes:
    """PS3.5 8.1.1: 1-bit pixels are packed LSB first; cut this frame's bits out."""
    frame_bits = _frame_bits(index)
    shift = (number - 1) * frame_bits % 8
    if shift == 0 and frame_bits % 8 == 0:
        return data
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return np.packbits(bits[shift : shift + frame_bits], bitorder="little").tobytes()


def _read_deflated_frame(f: BinaryIO, index: PixelIndex, number: int) -> bytes:
    """Slow path: inflate the whole dataset, then cut the native frame out."""
    f.seek(0)
    pixel_data = pydicom.dcmread(f).get("PixelData")
    if pixel_data is None:
        raise NotFound("the instance has no Pixel Data")
    frames = _native_frames(index, 0, len(pixel_data))
    ((offset, length),) = frames[number - 1]
    data = bytes(pixel_data[offset : offset + length])
    return _realign_bits(data, index, number) if index.bits_allocated == 1 else data


def decoded_photometric_interpretation(index: PixelIndex) -> str:
    """PS3.5 8.2.1: Photometric Interpretation of :func:`decode_frame_native` output."""
    pi = index.photometric_interpretation
    if index.encapsulated:
        return "RGB" if pi.startswith("YBR") else pi
    if pi == "YBR_FULL_422" and index.transfer_syntax not in (IMPLICIT_VR_LE, EXPLICIT_VR_LE):
        return "YBR_FULL"
    return pi


def decode_frame_native(path: Path, index: PixelIndex, number: int) -> bytes:
    """PS3.18 8.7.3.3.2: frame ``number`` as uncompressed little-endian pixel bytes.

    Native little-endian frames are read as stored; other syntaxes are decoded by
    pydicom (YCbCr colour becomes RGB for compressed data, see
    :func:`decoded_photometric_interpretation`). NotAcceptable when no decoder works.
    """
    _check_number(index, number)
    if not index.encapsulated and index.transfer_syntax in (IMPLICIT_VR_LE, EXPLICIT_VR_LE):
        with path.open("rb") as f:
            return read_frame(f, index, number)
    arr = _decode(path, index, number, rgb=False)
    if index.bits_allocated == 1:
        return pack_bits(arr)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def decode_frame_array(
    path: Path, index: PixelIndex, number: int, *, rgb: bool = False
) -> npt.NDArray[Any]:
    """PS3.5 8.2: frame ``number`` decoded to an array of (rows, columns[, samples]).

    Compressed YCbCr colour is always converted to RGB; native YCbCr only when
    ``rgb`` is true. NotFound for a bad frame number, NotAcceptable when undecodable.
    """
    _check_number(index, number)
    return _decode(path, index, number, rgb=rgb)


def _decode(path: Path, index: PixelIndex, number: int, rgb: bool) -> npt.NDArray[Any]:
    """One frame as an ndarray, decoded by pydicom (only that frame is decoded).

    Compressed frames are decoded from their own bytes; native big-endian frames
    via pydicom's file reader, which knows the byte swapping of OW 8-bit data.
    """
    try:
        if index.transfer_syntax == DEFLATED_LE:
            return pixel_array(pydicom.dcmread(path), index=number - 1, raw=not rgb)
        if not index.encapsulated:
            return pixel_array(path, index=number - 1, raw=not rgb)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        with path.open("rb") as f:
            frame = read_frame(f, index, number)
        ds.NumberOfFrames = 1
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        return pixel_array(ds, raw=False)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise NotAcceptable(
            f"frame {number} in transfer syntax {index.transfer_syntax} cannot be decoded: {exc}"
        ) from exc
