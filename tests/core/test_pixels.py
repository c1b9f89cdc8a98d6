"""Frame indexing and retrieval against every pydicom test file with Pixel Data."""

from __future__ import annotations

import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import orjson
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pack_bits, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from server.core.pixels import (
    DEFLATED_LE,
    PixelIndex,
    PixelIndexError,
    decode_frame_native,
    decoded_photometric_interpretation,
    frame_media_type,
    index_pixel_data,
    is_video,
    read_frame,
    read_pixel_data,
)
from server.errors import NotAcceptable, NotFound

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA_ROOT = Path(get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]

# Files with Pixel Data that cannot be indexed, and why (the PixelIndexError message).
UNINDEXABLE = {
    "MR_truncated.dcm": "truncated",  # the file ends inside the Pixel Data value
    "badVR.dcm": "invalid image pixel attribute",  # Number of Frames is '1A'
    "meta_missing_tsyntax.dcm": "without Rows",  # 2-byte Pixel Data, no Image Pixel module
    "nested_priv_SQ.dcm": "without Rows",  # same
}
# Indexable files whose frames pydicom itself cannot decode with the installed plugins.
UNDECODABLE = {
    "JPEG-lossy.dcm",  # known-broken 12-bit lossy JPEG
    "JPEG2000-embedded-sequence-delimiter.dcm",  # 250-byte codestream for 1024x256
}


def _pixel_files() -> list[Path]:
    found = []
    for name in sorted(get_testdata_files()):
        path = Path(name)
        if path.is_dir():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError):
            continue
        if "PixelData" in ds:
            found.append(path)
    return found


PIXEL_FILES = _pixel_files()
IDS = [str(p.relative_to(DATA_ROOT)) for p in PIXEL_FILES]
INDEXABLE = [p for p in PIXEL_FILES if p.name not in UNINDEXABLE]


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _index(path: Path) -> PixelIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_pixel_data(path)
    assert index is not None
    return index


def _expected_frames(ds: Dataset, index: PixelIndex) -> list[bytes]:
    """What pydicom gives for each frame: slices of Pixel Data or generate_frames items."""
    if index.encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=index.number_of_frames))
    size = get_expected_length(ds) // index.number_of_frames
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(index.number_of_frames)]


def test_every_test_file_is_covered() -> None:
    assert len(PIXEL_FILES) > 80
    names = {p.name for p in PIXEL_FILES}
    assert set(UNINDEXABLE) <= names
    assert names >= UNDECODABLE


@pytest.mark.parametrize("path", PIXEL_FILES, ids=IDS)
def test_read_frame_matches_pydicom(path: Path) -> None:
    if path.name in UNINDEXABLE:
        with pytest.raises(PixelIndexError, match=UNINDEXABLE[path.name]):
            index_pixel_data(path)
        return
    indexed = _index(path)
    index = PixelIndex.from_bytes(indexed.to_bytes())  # frames read as the server reads them
    assert index == indexed
    ds = _read(path)
    expected = _expected_frames(ds, index)
    assert len(expected) == index.number_of_frames
    with path.open("rb") as f:
        got = [read_frame(f, index, n) for n in range(1, index.number_of_frames + 1)]
    assert got == expected
    if index.frames:
        assert len(index.frames) == index.number_of_frames
        for frame in index.frames:
            assert all(offset > 0 and length >= 0 for offset, length in frame)


@pytest.mark.parametrize("path", INDEXABLE, ids=[p.name for p in INDEXABLE])
def test_decode_frame_native_matches_pydicom(path: Path) -> None:
    index = _index(path)
    last = index.number_of_frames
    if path.name in UNDECODABLE:
        with pytest.raises(NotAcceptable):
            decode_frame_native(path, index, last)
        with pytest.raises(Exception):  # noqa: B017 - pydicom fails in its own ways
            pixel_array(_read(path), index=last - 1)
        return
    got = decode_frame_native(path, index, last)
    if index.transfer_syntax in ("1.2.840.10008.1.2", ExplicitVRLittleEndian):
        with path.open("rb") as f:
            assert got == read_frame(f, index, last)
        return
    arr = pixel_array(_read(path), index=last - 1, raw=not index.encapsulated)
    little = arr.astype(arr.dtype.newbyteorder("<"))
    expected = pack_bits(arr) if index.bits_allocated == 1 else little.tobytes()
    assert got == expected
    assert decoded_photometric_interpretation(index) in ("RGB", index.photometric_interpretation)


def test_big_endian_decodes_like_little_endian() -> None:
    little = _index(Path(get_testdata_file("MR_small.dcm")))  # type: ignore[arg-type]
    big_path = Path(get_testdata_file("MR_small_bigendian.dcm"))  # type: ignore[arg-type]
    big = _index(big_path)
    assert big.transfer_syntax == "1.2.840.10008.1.2.2"
    with Path(get_testdata_file("MR_small.dcm")).open("rb") as f:  # type: ignore[arg-type]
        assert decode_frame_native(big_path, big, 1) == read_frame(f, little, 1)


def test_deflated_has_no_offsets_but_frames_read() -> None:
    path = Path(get_testdata_file("image_dfl.dcm"))  # type: ignore[arg-type]
    index = _index(path)
    assert index.transfer_syntax == DEFLATED_LE and index.frames == ()
    with path.open("rb") as f:
        assert read_frame(f, index, 1) == _read(path).PixelData
        assert read_pixel_data(f, index) == _read(path).PixelData


def test_files_without_pixel_data_give_none() -> None:
    for name in ("rtplan.dcm", "waveform_ecg.dcm", "test-SR.dcm"):
        assert index_pixel_data(Path(get_testdata_file(name))) is None  # type: ignore[arg-type]


def _write(tmp_path: Path, ds: Dataset, syntax: str, name: str = "x.dcm") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _image(rows: int, columns: int, frames: int, bits: int, samples: int = 1) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    return ds


def test_float_pixel_data_gives_none(tmp_path: Path) -> None:
    ds = _image(4, 4, 1, 32)
    ds.FloatPixelData = np.arange(16, dtype="<f4").tobytes()
    assert index_pixel_data(_write(tmp_path, ds, ExplicitVRLittleEndian)) is None


def test_one_bit_frames_not_byte_aligned(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=(4, 3, 5), dtype=np.uint8)  # 15 bits a frame
    ds = _image(3, 5, 4, 1)
    ds.PixelData = pack_bits(bits)
    path = _write(tmp_path, ds, ExplicitVRLittleEndian)
    index = _index(path)
    with path.open("rb") as f:
        for n in range(1, 5):
            assert read_frame(f, index, n) == pack_bits(bits[n - 1])
    assert decode_frame_native(path, index, 3) == pack_bits(bits[2])


def _jpeg_frames(count: int) -> tuple[Dataset, list[bytes]]:
    ds = _read(Path(get_testdata_file("examples_ybr_color.dcm")))  # type: ignore[arg-type]
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))[:count]
    ds.NumberOfFrames = count
    return ds, frames


@pytest.mark.parametrize("has_bot", [True, False])
def test_several_fragments_per_frame(tmp_path: Path, has_bot: bool) -> None:
    ds, frames = _jpeg_frames(5)
    ds.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=has_bot)
    path = _write(tmp_path, ds, ds.file_meta.TransferSyntaxUID)
    index = _index(path)
    assert all(len(frame) == 3 for frame in index.frames)
    expected = list(generate_frames(ds.PixelData, number_of_frames=5))
    with path.open("rb") as f:
        got = [read_frame(f, index, n) for n in range(1, 6)]
    assert got == expected
    assert [g.rstrip(b"\x00") for g in got] == [fr.rstrip(b"\x00") for fr in frames]


def test_extended_offset_table(tmp_path: Path) -> None:
    ds, frames = _jpeg_frames(4)
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
        frames
    )
    path = _write(tmp_path, ds, ds.file_meta.TransferSyntaxUID)
    index = _index(path)
    with path.open("rb") as f:
        got = [read_frame(f, index, n) for n in range(1, 5)]
    assert [g.rstrip(b"\x00") for g in got] == [fr.rstrip(b"\x00") for fr in frames]


def test_unsplittable_fragments_raise(tmp_path: Path) -> None:
    source = _read(Path(get_testdata_file("SC_rgb_rle_2frame.dcm")))  # type: ignore[arg-type]
    frames = list(generate_frames(source.PixelData, number_of_frames=2))
    source.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    path = _write(tmp_path, source, "1.2.840.10008.1.2.5")
    with pytest.raises(PixelIndexError, match="cannot split"):
        index_pixel_data(path)


def test_video_bitstream_is_one_entry(tmp_path: Path) -> None:
    ds = _image(16, 16, 10, 8, samples=3)
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    stream = bytes(range(256)) * 8
    ds.PixelData = encapsulate([stream[:1000], stream[1000:]])
    ds.NumberOfFrames = 2  # encapsulate() wrote one item per "frame" given
    path = _write(tmp_path, ds, "1.2.840.10008.1.2.4.102")
    index = _index(path)
    assert is_video(index.transfer_syntax) and len(index.frames) == 1
    with path.open("rb") as f:
        assert read_pixel_data(f, index) == stream
        with pytest.raises(NotAcceptable):
            read_frame(f, index, 1)


def test_frame_number_out_of_range() -> None:
    path = Path(get_testdata_file("rtdose.dcm"))  # type: ignore[arg-type]
    index = _index(path)
    assert index.number_of_frames == 15
    with path.open("rb") as f:
        for bad in (0, -1, 16):
            with pytest.raises(NotFound):
                read_frame(f, index, bad)
    with pytest.raises(NotFound):
        decode_frame_native(path, index, 16)


def test_native_read_pixel_data_is_whole_value() -> None:
    path = Path(get_testdata_file("rtdose.dcm"))  # type: ignore[arg-type]
    with path.open("rb") as f:
        assert read_pixel_data(f, _index(path)) == _read(path).PixelData


def test_frame_media_types() -> None:
    assert frame_media_type("1.2.840.10008.1.2.4.50") == "image/jpeg"
    assert frame_media_type("1.2.840.10008.1.2.4.70") == "image/jpeg"
    assert frame_media_type("1.2.840.10008.1.2.4.80") == "image/jls"
    assert frame_media_type("1.2.840.10008.1.2.4.90") == "image/jp2"
    assert frame_media_type("1.2.840.10008.1.2.4.201") == "image/jphc"
    assert frame_media_type("1.2.840.10008.1.2.5") == "image/dicom-rle"
    assert frame_media_type("1.2.840.10008.1.2.4.100") == "video/mpeg"
    assert frame_media_type("1.2.840.10008.1.2.4.102") == "video/mp4"
    assert frame_media_type("1.2.840.10008.1.2.4.107") == "video/H265"
    assert frame_media_type(ExplicitVRLittleEndian) == "application/octet-stream"
    assert frame_media_type(DEFLATED_LE) == "application/octet-stream"


def test_from_bytes_rejects_junk() -> None:
    for junk in (b"", b"{}", b"[1,2]", b'{"ts":"1.2","enc":true}'):
        with pytest.raises(ValueError):
            PixelIndex.from_bytes(junk)


def test_index_is_fast() -> None:
    path = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    index_pixel_data(path)
    start = time.perf_counter()
    for _ in range(50):
        index_pixel_data(path)
    assert (time.perf_counter() - start) / 50 < 0.005


def test_index_does_not_load_pixel_value(tmp_path: Path) -> None:
    ds = _image(1024, 1024, 16, 16)  # 32 MiB of pixel data
    ds.PixelData = bytes(1024 * 1024 * 2 * 16)
    path = _write(tmp_path, ds, ExplicitVRLittleEndian)
    del ds
    tracemalloc.start()
    try:
        index = index_pixel_data(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index is not None and index.number_of_frames == 16
    assert peak < 1024 * 1024
    with path.open("rb") as f:
        assert len(read_frame(f, index, 16)) == 1024 * 1024 * 2


def test_records_of_earlier_versions_with_an_all_json_frame_table_still_read() -> None:
    path = Path(get_testdata_file("SC_rgb_rle_2frame.dcm"))  # type: ignore[arg-type]
    index = index_pixel_data(path)
    assert index is not None
    legacy = orjson.dumps(
        {"ts": index.transfer_syntax, "enc": index.encapsulated, "n": index.number_of_frames,
         "geom": [index.rows, index.columns, index.samples_per_pixel, index.bits_allocated],
         "pi": index.photometric_interpretation, "frames": [list(f) for f in index.frames]}
    )  # fmt: skip
    assert PixelIndex.from_bytes(legacy) == index
    assert PixelIndex.from_bytes(index.to_bytes()) == index
