"""Transfer syntax conversion for WADO-RS (PS3.18 8.7.3.5.2)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian

NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})

# Lossy transfer syntaxes (PS3.5 Table A-1; PS3.5 8.2): JPEG baseline/extended, JPEG-LS
# near-lossless, JPEG 2000 (Part 1 and 2), HTJ2K, JPEG XL, and the video syntaxes.
_LOSSY = frozenset(
    f"1.2.840.10008.1.2.4.{n}"
    for n in (
        "50",
        "51",
        "81",
        "91",
        "93",
        "203",
        "112",
        *(str(v) for v in range(100, 109)),
        "100.1",
        "101.1",
        "102.1",
        "103.1",
        "104.1",
        "105.1",
        "106.1",
    )
)


def is_lossy(transfer_syntax: str) -> bool:
    """PS3.18 8.7.3.5.2: lossy data may be returned in its stored syntax."""
    return transfer_syntax in _LOSSY


def transcode_to_explicit_le(path: Path) -> bytes | None:
    """Re-encode a stored instance as Explicit VR Little Endian; None if it cannot be decoded."""
    try:
        ds = pydicom.dcmread(path)
        ts = UID(str(ds.file_meta.TransferSyntaxUID))
        if ts.is_compressed:
            ds.decompress()  # pixel data is decoded and re-encoded natively
        elif ts == "1.2.840.10008.1.2.2" and "PixelData" in ds:
            return None  # big-endian OW swapping is not done here; served as stored
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
        return buffer.getvalue()
    except Exception:
        return None
