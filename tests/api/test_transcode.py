"""Transcoding on retrieval (PS3.18 8.7.3.5) against a live gateway, instances and frames.

The gateway encodes with imagecodecs; the answers are decoded here by pydicom's own
plugins (pylibjpeg-libjpeg for JPEG, pylibjpeg-openjpeg for JPEG 2000 and HTJ2K, pyjpegls
for JPEG-LS), so an encoder and a decoder from different code bases must agree.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array

from tests.api.test_wado import _parts
from tests.live import LiveServer

LOSSLESS = {
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
}
BASELINE = "1.2.840.10008.1.2.4.50"
HTJ2K = "1.2.840.10008.1.2.4.201"  # dicomweb-client 0.61 does not know it: httpx asks
# 16-bit signed CT, 16-bit MR stored as RLE, 8-bit RGB with two frames stored as RLE
SAMPLES = ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> DICOMwebClient:
    live = LiveServer(tmp_path_factory.mktemp("transcode") / "data").start()
    for name in SAMPLES:
        raw = Path(str(get_testdata_file(name))).read_bytes()
        answer = httpx.post(f"{live.dicomweb}/studies", content=_multipart(raw), headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})  # fmt: skip
        assert answer.status_code == 200, answer.text
    yield DICOMwebClient(live.dicomweb)  # type: ignore[misc]
    live.stop()


def _multipart(raw: bytes) -> bytes:
    return b"--b\r\nContent-Type: application/dicom\r\n\r\n" + raw + b"\r\n--b--\r\n"


def _source(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(str(get_testdata_file(name)))


def _uids(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("syntax", list(LOSSLESS))
def test_lossless_instance_transcoding_keeps_every_pixel(
    client: DICOMwebClient, name: str, syntax: str
) -> None:
    source = _source(name)
    if syntax == HTJ2K:
        study, series, sop = _uids(source)
        url = f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}"
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
        ((_, body),) = _parts(httpx.get(url, headers={"Accept": accept}))
        got = pydicom.dcmread(io.BytesIO(body))
    else:
        media = (("application/dicom", syntax),)
        got = client.retrieve_instance(*_uids(source), media_types=media)
    assert got.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(got.pixel_array, source.pixel_array)
    assert got.PatientName == source.PatientName


def test_jpeg_baseline_instance_of_8_bit_colour_is_close_to_the_source(
    client: DICOMwebClient,
) -> None:
    source = _source("SC_rgb_rle_2frame.dcm")
    got = client.retrieve_instance(*_uids(source), media_types=(("application/dicom", BASELINE),))
    assert got.file_meta.TransferSyntaxUID == BASELINE
    assert got.LossyImageCompression == "01"
    assert got.PhotometricInterpretation == "YBR_FULL_422"
    assert _psnr(got.pixel_array, source.pixel_array) > 30


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("CT_small.dcm", BASELINE),  # 16-bit data: no silent windowing to 8 bits
        ("CT_small.dcm", "1.2.840.10008.1.2.4.81"),  # JPEG-LS near-lossless: no encoder here
        ("CT_small.dcm", "1.2.840.10008.1.2.4.110"),  # JPEG XL lossless: not offered
    ],
)
def test_unsupported_target_is_406_listing_the_supported_syntaxes(
    client: DICOMwebClient, name: str, syntax: str
) -> None:
    source = _source(name)
    study, series, sop = _uids(source)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    for url in (f"{client.base_url}/studies/{study}",
                f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}"):  # fmt: skip
        answer = httpx.get(url, headers={"Accept": accept})
        assert answer.status_code == 406, answer.text[:300]
        message = answer.json()["message"]
        assert all(uid in message for uid in LOSSLESS), message


def _decode_frame(source: pydicom.Dataset, syntax: str, data: bytes) -> npt.NDArray[object]:
    """A frame codestream decoded by pydicom's plugins, as if it were the file's only frame."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation"):  # fmt: skip
        setattr(ds, keyword, source.get(keyword))
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = (
        "RGB" if source.SamplesPerPixel == 3 and syntax != BASELINE else
        "YBR_FULL_422" if source.SamplesPerPixel == 3 else source.PhotometricInterpretation
    )  # fmt: skip
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
    return pixel_array(ds)


@pytest.mark.parametrize("syntax", list(LOSSLESS))
def test_frames_transcoded_losslessly_on_request(client: DICOMwebClient, syntax: str) -> None:
    for name in ("CT_small.dcm", "SC_rgb_rle_2frame.dcm"):
        source = _source(name)
        frames = int(source.get("NumberOfFrames") or 1)
        numbers = list(range(1, frames + 1))
        if syntax == HTJ2K:
            study, series, sop = _uids(source)
            url = (f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}/frames/"
                   + ",".join(map(str, numbers)))  # fmt: skip
            accept = f'multipart/related; type="image/jphc"; transfer-syntax={syntax}'
            got = [body for _, body in _parts(httpx.get(url, headers={"Accept": accept}))]
        else:
            got = client.retrieve_instance_frames(
                *_uids(source), frame_numbers=numbers, media_types=((LOSSLESS[syntax], syntax),)
            )
        expected = source.pixel_array if frames > 1 else source.pixel_array[np.newaxis]
        for n, data in enumerate(got):
            if syntax == HTJ2K:  # the HT block coder is declared in a CAP marker (15444-15)
                assert b"\xff\x50" in data[: data.find(b"\xff\x90")], "not an HTJ2K codestream"
            assert np.array_equal(_decode_frame(source, syntax, data), expected[n]), (name, n)


def test_frame_as_image_jpeg_defaults_to_baseline(client: DICOMwebClient) -> None:
    source = _source("SC_rgb_rle_2frame.dcm")
    study, series, sop = _uids(source)
    url = f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}/frames/2"
    answer = httpx.get(url, headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert answer.status_code == 200, answer.text[:300]
    assert f"transfer-syntax={BASELINE}" in answer.text[:400]
    (frame,) = client.retrieve_instance_frames(
        study, series, sop, frame_numbers=[2], media_types=(("image/jpeg", BASELINE),)
    )
    decoded = _decode_frame(source, BASELINE, frame)
    assert _psnr(decoded, source.pixel_array[1]) > 30


def test_frame_of_16_bit_data_as_baseline_jpeg_is_406(client: DICOMwebClient) -> None:
    source = _source("CT_small.dcm")
    study, series, sop = _uids(source)
    url = f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}/frames/1"
    answer = httpx.get(url, headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert answer.status_code == 406
    assert "8-bit" in answer.json()["message"]


def test_implicit_vr_little_endian_is_offered_and_decodes_compressed_data(
    client: DICOMwebClient,
) -> None:
    source = _source("MR_small_RLE.dcm")
    implicit = "1.2.840.10008.1.2"  # dicomweb-client refuses to ask for it: httpx does
    study, series, sop = _uids(source)
    url = f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}"
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={implicit}'
    ((_, body),) = _parts(httpx.get(url, headers={"Accept": accept}))
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == implicit
    assert got.original_encoding == (True, True)
    assert np.array_equal(got.pixel_array, source.pixel_array)
