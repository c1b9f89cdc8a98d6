"""Transfer syntax conversion for WADO-RS (PS3.18 8.7.3.5.2)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from server.core import encode
from server.errors import NotAcceptable

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


def transcode_to_explicit_le(path: Path, implicit: bool = False) -> bytes | None:
    """Re-encode a stored instance as Explicit (or, with ``implicit``, Implicit) VR Little
    Endian; None if it cannot be decoded."""
    try:
        ds = pydicom.dcmread(path)
        ts = UID(str(ds.file_meta.TransferSyntaxUID))
        if ts.is_compressed:
            ds.decompress()  # pixel data is decoded and re-encoded natively
        elif ts == "1.2.840.10008.1.2.2" and "PixelData" in ds:
            return None  # big-endian OW swapping is not done here; served as stored
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        )
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
        return buffer.getvalue()
    except Exception:
        return None


def transcode_instance(path: Path, uid: str) -> bytes:
    """PS3.18 8.7.3.5: the stored instance with its pixel data encoded in ``uid``
    (a key of :data:`server.core.encode.TARGETS`). NotAcceptable if it cannot be."""
    ds = pydicom.dcmread(path)
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise NotAcceptable("float pixel data cannot be encoded in a compressed syntax")
    if "PixelData" in ds:
        try:
            _encode_pixel_data(ds, uid)
        except NotAcceptable:
            raise
        except Exception as exc:  # a decoder or encoder refused this data
            raise NotAcceptable(f"the pixel data cannot be encoded in {uid}: {exc}") from exc
    ds.file_meta.TransferSyntaxUID = UID(uid)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _encode_pixel_data(ds: pydicom.Dataset, uid: str) -> None:
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    samples = int(ds.get("SamplesPerPixel") or 1)
    reason = encode.why_not(uid, bits_allocated, bits_stored, samples)
    if reason:
        raise NotAcceptable(reason)
    arr = ds.pixel_array  # decoded; YCbCr colour converted to RGB
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1:
        arr = arr[np.newaxis, ...]
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    encoded = [encode.encode_frame(uid, frame, bits_stored, signed) for frame in arr]
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if samples == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422" if uid == encode.JPEG_BASELINE else "RGB"
        ds.PlanarConfiguration = 0
    if encode.TARGETS[uid].lossy:
        original = len(arr.tobytes())
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = f"{original / max(1, sum(map(len, encoded))):.2f}"[:16]
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def transcode_frame(path: Path, frame: npt.NDArray[Any], uid: str) -> bytes:
    """One decoded frame of the instance at ``path`` as a ``uid`` codestream."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    bits_allocated = int(header.BitsAllocated)
    bits_stored = int(header.get("BitsStored") or bits_allocated)
    samples = int(header.get("SamplesPerPixel") or 1)
    reason = encode.why_not(uid, bits_allocated, bits_stored, samples)
    if reason:
        raise NotAcceptable(reason)
    signed = int(header.get("PixelRepresentation") or 0) == 1
    try:
        return encode.encode_frame(uid, frame, bits_stored, signed)
    except Exception as exc:
        raise NotAcceptable(f"the frame cannot be encoded in {uid}: {exc}") from exc
