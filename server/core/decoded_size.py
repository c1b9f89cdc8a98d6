"""How big stored data becomes once decoded, found without decoding it (bomb checks).

* Deflated Explicit VR Little Endian (PS3.5 A.5): the data set is inflated in
  bounded steps and only counted, so a 1 MiB file claiming 1 GiB costs 1 MiB.
* Compressed frames (PS3.5 A.4): the codestream's own header says how large the
  decoder's output will be (JPEG SOFn, PS3.5 A.4.1 / ISO 10918-1 B.2.2; JPEG-LS SOF55,
  ISO 14495-1 C.2.2; JPEG 2000 SIZ, ISO 15444-1 A.5.1). Decoders allocate from that
  header, not from the DICOM Rows/Columns, so both are checked.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.filereader import _read_file_meta_info, read_preamble

from server.core.limits import PixelLimits, TooLarge, check_frame
from server.core.pixels import DEFLATED_LE, PixelIndex, is_video

_STEP = 1 << 16
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}  # JPEG SOFn and JPEG-LS SOF55


def frame_bytes(rows: int, columns: int, samples: int, bits_allocated: int) -> int:
    """PS3.5 8.1.1: bytes of one decoded frame (bits rounded up to whole bytes per sample)."""
    return rows * columns * samples * max(1, (bits_allocated + 7) // 8)


def check_inflated_size(f: BinaryIO, cap: int) -> None:
    """Raise TooLarge if the deflated data set of the Part-10 file ``f`` inflates past ``cap``.

    Does nothing for other transfer syntaxes; ``f`` is left at its start.
    """
    f.seek(0)
    try:
        read_preamble(f, True)
        meta = _read_file_meta_info(f)
    except Exception:
        f.seek(0)
        return  # not readable as Part 10: the parser reports it properly
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_LE:
        f.seek(0)
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := f.read(_STEP):
            total += _inflate_counted(inflater, chunk, total, cap)
    except zlib.error:
        pass  # a corrupt stream: the parser refuses it
    finally:
        f.seek(0)


def _inflate_counted(inflater: Any, data: bytes, done: int, cap: int) -> int:
    produced = 0
    while data and not inflater.eof:
        out = inflater.decompress(data, _STEP)
        produced += len(out)
        if done + produced > cap:
            raise TooLarge(
                f"deflated data inflates past GATEWAY_STOW__MAX_INFLATED_BYTES ({cap} bytes)"
            )
        data = inflater.unconsumed_tail
    return produced


def codestream_frame_bytes(frame: bytes) -> int | None:
    """Decoded bytes a JPEG / JPEG-LS / JPEG 2000 codestream declares; None if not one of those."""
    if frame[:2] == b"\xff\xd8":
        return _jpeg(frame)
    if frame[:4] == b"\xff\x4f\xff\x51":
        return _j2k_siz(frame, 4)
    if frame[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":  # JP2 file format: find the codestream
        start = frame.find(b"\xff\x4f\xff\x51")
        return _j2k_siz(frame, start + 4) if start >= 0 else None
    return None


def _jpeg(frame: bytes) -> int | None:
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        (length,) = struct.unpack(">H", frame[pos + 2 : pos + 4])
        if marker in _SOF:
            if pos + 10 > len(frame):
                return None
            bits, rows, cols, comps = struct.unpack(">BHHB", frame[pos + 4 : pos + 10])
            return frame_bytes(rows, cols, comps, bits)
        if marker == 0xDA or length < 2:
            return None
        pos += 2 + length
    return None


def _j2k_siz(frame: bytes, pos: int) -> int | None:
    # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz, then Ssiz per component
    if pos + 38 > len(frame):
        return None
    _l, _r, xsiz, ysiz, xo, yo, *_tiles, csiz = struct.unpack(">HHIIIIIIIIH", frame[pos : pos + 38])
    depth = 1
    for c in range(min(csiz, 16384)):
        if pos + 38 + 3 * c < len(frame):
            depth = max(depth, (frame[pos + 38 + 3 * c] & 0x7F) + 1)
    width, height = max(0, xsiz - xo), max(0, ysiz - yo)
    return frame_bytes(height, width, max(1, csiz), depth)


def check_frame_decodable(path: Path, index: PixelIndex, number: int, limits: PixelLimits) -> None:
    """TooLarge unless decoding frame ``number`` stays within ``limits`` (checked from headers).

    The DICOM geometry, the inflated size of a deflated file and, for compressed
    frames, the size the codestream itself declares are all checked.
    """
    geometry = frame_bytes(index.rows, index.columns, index.samples_per_pixel, index.bits_allocated)
    check_frame(geometry, limits)
    if not index.frames and limits.max_inflated_bytes is not None:
        with path.open("rb") as f:
            check_inflated_size(f, limits.max_inflated_bytes)
    if index.encapsulated and limits.max_frame_bytes is not None:
        with path.open("rb") as f:
            declared = codestream_frame_bytes(_frame_head(f, index, number))
        if declared is not None:
            check_frame(declared, limits, f"frame {number} codestream")


def check_instance_decodable(path: Path, index: PixelIndex, limits: PixelLimits) -> bool:
    """True if decoding the whole instance in memory stays within ``limits``."""
    each = frame_bytes(index.rows, index.columns, index.samples_per_pixel, index.bits_allocated)
    cap = limits.max_transcode_bytes
    if cap is not None and each * index.number_of_frames > cap:
        return False
    try:
        for number in range(1, index.number_of_frames + 1):
            check_frame_decodable(path, index, number, limits)
            if not index.frames:
                break  # deflated: one inflation check covers every frame
    except TooLarge:
        return False
    return True


def _frame_head(f: BinaryIO, index: PixelIndex, number: int) -> bytes:
    """The first bytes of a compressed frame: enough for any codestream header."""
    ranges = index.frames[number - 1] if 0 < number <= len(index.frames) else ()
    out = b""
    for offset, length in ranges:
        f.seek(offset)
        out += f.read(min(length, 65536 - len(out)))
        if len(out) >= 65536:
            break
    return out


def check_codestreams(path: Path, index: PixelIndex, limits: PixelLimits) -> None:
    """TooLarge if any compressed frame's codestream header declares more than the frame cap."""
    if not index.encapsulated or limits.max_frame_bytes is None or is_video(index.transfer_syntax):
        return
    with path.open("rb") as f:
        for number in range(1, len(index.frames) + 1):
            declared = codestream_frame_bytes(_frame_head(f, index, number))
            if declared is not None:
                check_frame(declared, limits, f"frame {number} codestream")
