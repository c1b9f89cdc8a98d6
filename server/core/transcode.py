"""Transfer syntax conversion for WADO-RS (PS3.18 8.7.3.5.2)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian

NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


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
