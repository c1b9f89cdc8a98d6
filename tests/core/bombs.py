"""Decompression bombs: small files that declare or inflate to huge pixel data."""

from __future__ import annotations

import io
import struct
import zlib

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.90"


def _image(rows: int, columns: int, bits: int, syntax: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def deflated(inflated_bytes: int) -> bytes:
    """Deflated Explicit VR LE whose native Pixel Data inflates to ``inflated_bytes``."""
    side = int((inflated_bytes // 2) ** 0.5)
    ds = _image(side, side, 16, DEFLATED)
    header = _part10(ds)  # pydicom deflates the (pixel-less) body: inflate it back
    meta_end = _meta_end(header)
    body = zlib.decompress(header[meta_end:], -zlib.MAX_WBITS)
    pixels = side * side * 2
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [
        header[:meta_end],
        squeeze.compress(body + struct.pack("<HH2sHI", 0x7FE0, 0x10, b"OW", 0, pixels)),
    ]
    zeros = bytes(1 << 20)
    for _ in range(pixels >> 20):
        out.append(squeeze.compress(zeros))
    out.append(squeeze.compress(bytes(pixels & ((1 << 20) - 1))))
    out.append(squeeze.flush())
    return b"".join(out)


def _meta_end(data: bytes) -> int:
    """Offset just after the File Meta group: its group length says where."""
    (length,) = struct.unpack("<I", data[140:144])  # (0002,0000) UL, value at 140
    return 144 + length


def rle(rows: int, columns: int, bits: int = 16) -> bytes:
    """RLE Lossless with one frame of ``rows x columns``: runs of 128 zeros, 2 bytes each."""
    segment_length = rows * columns
    runs = b"\x81\x00" * (segment_length // 128) + (
        bytes([segment_length % 128 - 1]) + bytes(segment_length % 128)
        if segment_length % 128
        else b""
    )
    segments = bits // 8
    offsets = [64 + i * len(runs) for i in range(segments)]
    header = struct.pack("<16I", segments, *offsets, *([0] * (15 - segments)))
    ds = _image(rows, columns, bits, RLE)
    ds.PixelData = encapsulate([header + runs * segments])
    ds["PixelData"].VR = "OB"
    return _part10(ds)


def jpeg_declaring(rows: int, columns: int) -> bytes:
    """A 16x16 DICOM image whose JPEG baseline codestream header declares ``rows x columns``."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, rows, columns, 1) + b"\x01\x11\x00"
    stream = (
        b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 64 + b"\xff\xd9"
    )
    ds = _image(16, 16, 8, JPEG_BASELINE)
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    return _part10(ds)


def j2k_declaring(rows: int, columns: int) -> bytes:
    """A 16x16 DICOM image whose JPEG 2000 SIZ marker declares ``rows x columns``."""
    siz = b"\xff\x51" + struct.pack(
        ">HHIIIIIIIIH", 41, 0, columns, rows, 0, 0, columns, rows, 0, 0, 1
    )
    stream = b"\xff\x4f" + siz + b"\x07\x01\x01" + b"\xff\x93" + b"\x00" * 64 + b"\xff\xd9"
    ds = _image(16, 16, 8, J2K)
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    return _part10(ds)
