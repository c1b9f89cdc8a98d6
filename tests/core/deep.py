"""Hostile DICOM files built byte by byte (what pydicom itself refuses to write)."""

from __future__ import annotations

import io
import struct

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

_UNDEFINED = 0xFFFFFFFF


def header_only(sop_uid: str | None = None) -> bytes:
    """A minimal Secondary Capture header (no pixels), explicit VR little endian."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def deep_sequence(depth: int) -> bytes:
    """A valid header followed by Content Sequence items nested ``depth`` levels deep."""
    opening = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, _UNDEFINED)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, _UNDEFINED)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return header_only() + (opening + item) * depth + closing * depth
