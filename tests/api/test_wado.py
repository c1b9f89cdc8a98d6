"""WADO-RS (PS3.18 10.4) against a live gateway: instances, metadata, frames, rendered, errors."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

EXPLICIT_LE = str(ExplicitVRLittleEndian)
DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
STORED_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
SAMPLE_FILES = (
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
    "rtdose.dcm",
    "MR_small_RLE.dcm",
    "CT_small.dcm",
)
LOSSLESS_COMPRESSED = ("SC_rgb_rle_2frame.dcm", "MR_small_RLE.dcm")


# -- fixtures and helpers ------------------------------------------------------------------------


@dataclass
class StoredStudy:
    """Two series of three synthetic CT slices (48 rows x 32 columns), plus their Part-10 bytes."""

    datasets: list[pydicom.Dataset]
    raw: dict[str, bytes]

    @property
    def study(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    def series(self) -> dict[str, list[pydicom.Dataset]]:
        out: dict[str, list[pydicom.Dataset]] = {}
        for ds in self.datasets:
            out.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        return out


@pytest.fixture(scope="module")
def stored(server: LiveServer) -> StoredStudy:
    datasets = cohort(series_per_study=2, instances_per_series=3, rows=48, columns=32)
    raw = {str(ds.SOPInstanceUID): part10(ds) for ds in datasets}
    response = stow(server, list(raw.values()))
    assert response.status_code == 200, response.text
    return StoredStudy(datasets, raw)


@dataclass
class Samples:
    """pydicom's sample files (fixed UIDs) on a gateway of their own."""

    server: LiveServer
    paths: dict[str, Path]

    def ds(self, name: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.paths[name])

    def url(self, name: str) -> str:
        return _instance_url(self.server, self.ds(name))

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.server.dicomweb)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samples]:
    paths = {name: Path(str(get_testdata_file(name))) for name in SAMPLE_FILES}
    live = LiveServer(tmp_path_factory.mktemp("wado-samples") / "data").start()
    try:
        response = stow(live, [p.read_bytes() for p in paths.values()])
        assert response.status_code == 200, response.text
        yield Samples(live, paths)
    finally:
        live.stop()


def _uids(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _instance_url(server: LiveServer, ds: pydicom.Dataset) -> str:
    study, series, sop = _uids(ds)
    return f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}"


def _param(content_type: str, name: str) -> str | None:
    match = re.search(rf'{name}\s*=\s*"?([^";,]+)"?', content_type, re.IGNORECASE)
    return match.group(1) if match else None


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response (RFC 2046 5.1.1)."""
    ctype = response.headers["content-type"]
    assert ctype.startswith("multipart/related"), ctype
    boundary = _param(ctype, "boundary")
    assert boundary, ctype
    chunks = response.content.split(b"--" + boundary.encode())
    assert chunks[-1].startswith(b"--"), "no close delimiter"
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, body = chunk.partition(b"\r\n\r\n")
        assert sep and body.endswith(b"\r\n"), "malformed part"
        headers = {}
        for line in head.decode("ascii").strip().splitlines():
            name, _, val = line.partition(":")
            headers[name.strip().lower()] = val.strip()
        body = body[:-2]
        if "content-length" in headers:
            assert int(headers["content-length"]) == len(body)
        parts.append((headers["content-type"], body))
    return parts


def _content(ds: pydicom.Dataset) -> dict[Any, Any]:
    """Element values by tag, for comparing datasets across transfer syntaxes."""
    return {elem.tag: elem.value for elem in ds if elem.VR != "SQ"}


def _implicit_part10(ds: pydicom.Dataset) -> bytes:
    copied = copy.deepcopy(ds)
    copied.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    copied.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _assert_not_constant(image: Image.Image) -> None:
    extrema = image.convert("L").getextrema()
    assert extrema[0] != extrema[1], "rendered image is a single flat colour"


def _assert_json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["message"]
    assert isinstance(message, str) and message
    return message


# -- retrieve instances (10.4.1.1.1) -------------------------------------------------------------


def test_retrieve_study_series_instance_with_default_accept_give_the_stored_content(
    client: DICOMwebClient, stored: StoredStudy
) -> None:
    originals = {str(ds.SOPInstanceUID): ds for ds in stored.datasets}

    study = client.retrieve_study(stored.study)
    assert sorted(str(ds.SOPInstanceUID) for ds in study) == sorted(originals)
    for ds in study:
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
        assert _content(ds) == _content(originals[str(ds.SOPInstanceUID)])

    for series_uid, members in stored.series().items():
        got = client.retrieve_series(stored.study, series_uid)
        assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(
            str(ds.SOPInstanceUID) for ds in members
        )
        assert {str(ds.SeriesInstanceUID) for ds in got} == {series_uid}

    one = stored.datasets[4]
    got_one = client.retrieve_instance(*_uids(one))
    assert _content(got_one) == _content(one)
    assert np.array_equal(got_one.pixel_array, one.pixel_array)


def test_transfer_syntax_star_returns_the_stored_part10_bytes_for_study_series_and_instance(
    server: LiveServer, client: DICOMwebClient, stored: StoredStudy
) -> None:
    star = (("application/dicom", "*"),)
    assert {
        str(ds.SOPInstanceUID) for ds in client.retrieve_study(stored.study, media_types=star)
    } == set(stored.raw)
    one = stored.datasets[1]
    got = client.retrieve_instance(*_uids(one), media_types=star)
    assert _content(got) == _content(one)

    base = f"{server.dicomweb}/studies/{stored.study}"
    study_parts = _parts(httpx.get(base, headers={"Accept": STORED_ACCEPT}))
    assert sorted(body for _, body in study_parts) == sorted(stored.raw.values())
    for series_uid, members in stored.series().items():
        series_parts = _parts(
            httpx.get(f"{base}/series/{series_uid}", headers={"Accept": STORED_ACCEPT})
        )
        assert sorted(body for _, body in series_parts) == sorted(
            stored.raw[str(ds.SOPInstanceUID)] for ds in members
        )
    instance_parts = _parts(
        httpx.get(_instance_url(server, one), headers={"Accept": STORED_ACCEPT})
    )
    assert [body for _, body in instance_parts] == [stored.raw[str(one.SOPInstanceUID)]]


def test_multipart_response_names_dicom_type_and_boundary_and_parts_carry_transfer_syntax(
    server: LiveServer, stored: StoredStudy
) -> None:
    response = httpx.get(
        f"{server.dicomweb}/studies/{stored.study}", headers={"Accept": DICOM_ACCEPT}
    )
    assert response.status_code == 200
    ctype = response.headers["content-type"]
    assert ctype.lower().startswith("multipart/related")
    assert _param(ctype, "type") == "application/dicom"
    assert _param(ctype, "boundary")
    parts = _parts(response)
    assert len(parts) == len(stored.datasets)
    for part_type, body in parts:
        assert part_type.startswith("application/dicom")
        assert _param(part_type, "transfer-syntax") == EXPLICIT_LE
        assert body[128:132] == b"DICM"


def test_default_accept_transcodes_implicit_vr_to_explicit_vr_little_endian(
    server: LiveServer, client: DICOMwebClient
) -> None:
    ds = cohort(instances_per_series=1)[0]
    raw = _implicit_part10(ds)
    assert stow(server, [raw]).status_code == 200

    # dicomweb-client asks for transfer-syntax=* unless told otherwise
    got = client.retrieve_instance(*_uids(ds), media_types=(("application/dicom", EXPLICIT_LE),))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE, (
        "PS3.18 8.7.3.4 default is Explicit VR LE"
    )
    assert _content(got) == _content(ds)

    ((part_type, _),) = _parts(
        httpx.get(_instance_url(server, ds), headers={"Accept": DICOM_ACCEPT})
    )
    assert _param(part_type, "transfer-syntax") == EXPLICIT_LE
    ((_, stored_body),) = _parts(
        httpx.get(_instance_url(server, ds), headers={"Accept": STORED_ACCEPT})
    )
    assert stored_body == raw


@pytest.mark.parametrize("name", LOSSLESS_COMPRESSED)
def test_default_accept_decompresses_lossless_rle_to_explicit_vr_little_endian(
    samples: Samples, name: str
) -> None:
    original = samples.ds(name)
    ((part_type, body),) = _parts(httpx.get(samples.url(name), headers={"Accept": DICOM_ACCEPT}))
    got = pydicom.dcmread(io.BytesIO(body))
    assert _param(part_type, "transfer-syntax") == EXPLICIT_LE
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE, (
        "PS3.18 8.7.3.4 default is Explicit VR LE"
    )
    assert np.array_equal(got.pixel_array, original.pixel_array)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_sample_files_come_back_byte_for_byte_with_transfer_syntax_star(
    samples: Samples, name: str
) -> None:
    original = samples.ds(name)
    got = samples.client().retrieve_instance(
        *_uids(original), media_types=(("application/dicom", "*"),)
    )
    assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert got.SOPInstanceUID == original.SOPInstanceUID
    ((part_type, body),) = _parts(httpx.get(samples.url(name), headers={"Accept": STORED_ACCEPT}))
    assert body == samples.paths[name].read_bytes()
    assert _param(part_type, "transfer-syntax") == original.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_RLE.dcm"])
def test_explicit_vr_le_request_decompresses_compressed_files(samples: Samples, name: str) -> None:
    original = samples.ds(name)
    got = samples.client().retrieve_instance(
        *_uids(original), media_types=(("application/dicom", EXPLICIT_LE),)
    )
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert not got["PixelData"].is_undefined_length
    assert np.array_equal(got.pixel_array, original.pixel_array)


# -- Accept negotiation (8.7) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"',
        "multipart/related; type=application/dicom",
        "Multipart/Related; Type=Application/DICOM",
        'multipart/related; type="application/dicom+xml", multipart/related; type="application/dicom"; q=0.5',
        'application/pdf;q=0.9, multipart/related; type="application/dicom"; q=0.2',
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}',
        f'multipart/related; type="application/dicom"; transfer-syntax="{EXPLICIT_LE}"',
        "*/*",
        "multipart/*",
        "",
    ],
    ids=[
        "quoted",
        "unquoted",
        "mixed-case",
        "xml-then-dicom-q",
        "pdf-then-dicom-q",
        "ts",
        "ts-quoted",
        "any",
        "multipart-any",
        "empty",
    ],
)
def test_accept_headers_real_clients_send_get_dicom_instances(
    server: LiveServer, stored: StoredStudy, accept: str
) -> None:
    ds = stored.datasets[0]
    response = httpx.get(_instance_url(server, ds), headers={"Accept": accept})
    assert response.status_code == 200, response.text[:300]
    assert _param(response.headers["content-type"], "type") == "application/dicom"
    ((part_type, body),) = _parts(response)
    assert part_type.startswith("application/dicom")
    assert pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize(
    "accept",
    [
        "application/pdf",
        'multipart/related; type="application/dicom+xml"',
        'multipart/related; type="application/dicom"; q=0',
        "image/jpeg",
    ],
    ids=["pdf", "dicom-xml", "q-zero", "jpeg"],
)
def test_unacceptable_accept_is_406_with_a_json_message(
    server: LiveServer, stored: StoredStudy, accept: str
) -> None:
    response = httpx.get(_instance_url(server, stored.datasets[0]), headers={"Accept": accept})
    message = _assert_json_error(response, 406)
    assert "application/dicom" in message


def test_metadata_refuses_pdf_and_accepts_json(server: LiveServer, stored: StoredStudy) -> None:
    url = f"{server.dicomweb}/studies/{stored.study}/metadata"
    _assert_json_error(httpx.get(url, headers={"Accept": "application/pdf"}), 406)
    for accept in ("application/dicom+json", "application/json", "*/*"):
        response = httpx.get(url, headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert response.headers["content-type"].startswith("application/dicom+json")


# -- metadata and bulk data (10.4.1.1.2, 10.4.1.1.5) ---------------------------------------------


def test_metadata_of_study_series_instance_has_one_object_per_instance(
    server: LiveServer, client: DICOMwebClient, stored: StoredStudy
) -> None:
    study = client.retrieve_study_metadata(stored.study)
    assert isinstance(study, list) and len(study) == len(stored.datasets)
    assert sorted(m["00080018"]["Value"][0] for m in study) == sorted(stored.raw)
    for series_uid, members in stored.series().items():
        series = client.retrieve_series_metadata(stored.study, series_uid)
        assert len(series) == len(members)
        assert {m["0020000E"]["Value"][0] for m in series} == {series_uid}
    one = stored.datasets[2]
    instance = client.retrieve_instance_metadata(*_uids(one))
    assert instance["00080018"]["Value"] == [one.SOPInstanceUID]
    assert instance["00280010"]["Value"] == [48]
    for item in [*study, instance]:
        pixel = item["7FE00010"]
        assert "InlineBinary" not in pixel and "Value" not in pixel
        assert pixel["BulkDataURI"].startswith(server.dicomweb + "/studies/")


def test_bulkdata_uri_returns_the_native_pixel_data(
    client: DICOMwebClient, stored: StoredStudy
) -> None:
    ds = stored.datasets[3]
    uri = client.retrieve_instance_metadata(*_uids(ds))["7FE00010"]["BulkDataURI"]
    assert b"".join(client.retrieve_bulkdata(uri)) == ds.PixelData

    response = httpx.get(
        uri, headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert response.status_code == 200
    assert [body for _, body in _parts(response)] == [ds.PixelData]


def test_bulkdata_uri_of_a_multiframe_sample_returns_all_frames(samples: Samples) -> None:
    ds = samples.ds("rtdose.dcm")
    client = samples.client()
    uri = client.retrieve_instance_metadata(*_uids(ds))["7FE00010"]["BulkDataURI"]
    assert uri.startswith(samples.server.dicomweb + "/")
    assert b"".join(client.retrieve_bulkdata(uri)) == ds.PixelData


# -- frames (10.4.1.1.3) -------------------------------------------------------------------------


def test_single_frame_native_frame_equals_pixel_data(
    client: DICOMwebClient, stored: StoredStudy
) -> None:
    ds = stored.datasets[0]
    frames = client.retrieve_instance_frames(*_uids(ds), frame_numbers=[1])
    assert frames == [ds.PixelData]
    octet = client.retrieve_instance_frames(
        *_uids(ds), frame_numbers=[1], media_types=("application/octet-stream",)
    )
    assert octet == [ds.PixelData]


def test_multiframe_native_frames_equal_pydicom_frame_slices(samples: Samples) -> None:
    ds = samples.ds("rtdose.dcm")
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    wanted = [1, 7, int(ds.NumberOfFrames)]
    got = samples.client().retrieve_instance_frames(*_uids(ds), frame_numbers=wanted)
    assert got == [ds.PixelData[(n - 1) * size : n * size] for n in wanted]
    assert got[0] != got[1]


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_transfer_syntax_star_frames_are_the_stored_compressed_frames(
    samples: Samples, name: str
) -> None:
    ds = samples.ds(name)
    count = int(ds.get("NumberOfFrames") or 1)
    expected = list(generate_frames(ds.PixelData, number_of_frames=count))
    numbers = list(range(1, count + 1))
    got = samples.client().retrieve_instance_frames(
        *_uids(ds), frame_numbers=numbers, media_types=(("application/octet-stream", "*"),)
    )
    assert got == expected

    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    response = httpx.get(f"{samples.url(name)}/frames/{count}", headers={"Accept": accept})
    ((part_type, body),) = _parts(response)
    assert body == expected[-1]
    assert _param(part_type, "transfer-syntax") == ds.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_octet_stream_frames_of_compressed_files_are_decoded_native_bytes(
    samples: Samples, name: str
) -> None:
    ds = samples.ds(name)
    count = int(ds.get("NumberOfFrames") or 1)
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    arr = ds.pixel_array if count > 1 else ds.pixel_array[np.newaxis]
    got = samples.client().retrieve_instance_frames(
        *_uids(ds), frame_numbers=[count], media_types=("application/octet-stream",)
    )
    assert len(got) == 1 and len(got[0]) == size
    assert (
        got[0] == np.ascontiguousarray(arr[count - 1], dtype=arr.dtype.newbyteorder("<")).tobytes()
    )

    accept = 'multipart/related; type="application/octet-stream"'
    ((part_type, _),) = _parts(
        httpx.get(f"{samples.url(name)}/frames/1", headers={"Accept": accept})
    )
    assert part_type.startswith("application/octet-stream")
    assert _param(part_type, "transfer-syntax") in (None, EXPLICIT_LE)


def test_frames_response_of_a_compressed_file_names_its_media_type(samples: Samples) -> None:
    accept = 'multipart/related; type="image/dicom-rle"'
    response = httpx.get(f"{samples.url('MR_small_RLE.dcm')}/frames/1", headers={"Accept": accept})
    assert response.status_code == 200
    assert _param(response.headers["content-type"], "type") == "image/dicom-rle"
    ((part_type, _),) = _parts(response)
    assert part_type.startswith("image/dicom-rle")


@pytest.mark.parametrize(
    ("frames", "status"),
    [("0", 400), ("-1", 400), ("abc", 400), ("1,x", 400), ("1.5", 400), ("16", 404), ("1,99", 404)],
)
def test_bad_frame_numbers_are_refused_with_a_json_message(
    samples: Samples, frames: str, status: int
) -> None:
    response = httpx.get(f"{samples.url('rtdose.dcm')}/frames/{frames}")
    _assert_json_error(response, status)


@pytest.mark.parametrize("frames", ["1,,2", ",1", "1,", "1;2"])
def test_frame_list_with_empty_or_foreign_items_is_400(samples: Samples, frames: str) -> None:
    # PS3.18 8.3.1: a frame list is uint *("," uint); empty items are malformed, not skipped
    response = httpx.get(f"{samples.url('rtdose.dcm')}/frames/{frames}")
    _assert_json_error(response, 400)


def test_frame_two_of_a_single_frame_instance_is_404(
    server: LiveServer, stored: StoredStudy
) -> None:
    response = httpx.get(f"{_instance_url(server, stored.datasets[0])}/frames/2")
    assert "2" in _assert_json_error(response, 404)


# -- rendered resources and thumbnails (10.4.1.1.4) ----------------------------------------------


def test_rendered_instance_defaults_to_jpeg_of_the_image_size(
    client: DICOMwebClient, stored: StoredStudy
) -> None:
    image = _image(client.retrieve_instance_rendered(*_uids(stored.datasets[0])))
    assert image.format == "JPEG"
    assert image.size == (32, 48)
    _assert_not_constant(image)


def test_rendered_png_via_accept_header_and_via_accept_query(
    server: LiveServer, client: DICOMwebClient, stored: StoredStudy
) -> None:
    ds = stored.datasets[0]
    image = _image(client.retrieve_instance_rendered(*_uids(ds), media_types=("image/png",)))
    assert image.format == "PNG"
    _assert_not_constant(image)

    url = f"{_instance_url(server, ds)}/rendered"
    by_query = httpx.get(url, params={"accept": "image/png"})
    assert by_query.status_code == 200
    assert by_query.headers["content-type"] == "image/png"
    assert _image(by_query.content).format == "PNG"
    by_header = httpx.get(url, headers={"Accept": "image/webp, image/png;q=0.5"})
    assert by_header.headers["content-type"] == "image/png"
    _assert_json_error(httpx.get(url, headers={"Accept": "application/pdf"}), 406)


def test_window_parameter_changes_the_rendered_pixels(
    client: DICOMwebClient, stored: StoredStudy
) -> None:
    uids = _uids(stored.datasets[0])
    png = ("image/png",)
    soft = np.asarray(
        _image(
            client.retrieve_instance_rendered(
                *uids, media_types=png, params={"window": "40,400,linear"}
            )
        )
    )
    narrow = np.asarray(
        _image(
            client.retrieve_instance_rendered(
                *uids, media_types=png, params={"window": "1000,10,linear"}
            )
        )
    )
    assert soft.shape == narrow.shape == (48, 32)
    assert soft.min() != soft.max()
    assert not np.array_equal(soft, narrow)


@pytest.mark.parametrize(
    "params",
    [
        {"window": "40"},
        {"window": "a,b,linear"},
        {"viewport": "0,64"},
        {"viewport": "64"},
        {"quality": "101"},
    ],
)
def test_junk_rendering_parameters_are_400(
    server: LiveServer, stored: StoredStudy, params: dict[str, str]
) -> None:
    response = httpx.get(f"{_instance_url(server, stored.datasets[0])}/rendered", params=params)
    _assert_json_error(response, 400)


def test_viewport_fits_64x64_and_keeps_the_aspect_ratio(
    client: DICOMwebClient, stored: StoredStudy, samples: Samples
) -> None:
    image = _image(
        client.retrieve_instance_rendered(*_uids(stored.datasets[0]), params={"viewport": "64,64"})
    )
    assert image.height == 64 and abs(image.width - 64 * 32 / 48) <= 1
    _assert_not_constant(image)

    tall = samples.ds("JPEG2000.dcm")  # 1024 rows x 256 columns
    image = _image(
        samples.client().retrieve_instance_rendered(*_uids(tall), params={"viewport": "64,64"})
    )
    assert image.size == (16, 64)
    _assert_not_constant(image)


def test_rendered_frame_n_of_a_multiframe_differs_from_frame_1(samples: Samples) -> None:
    client = samples.client()
    for name, other in (("rtdose.dcm", 8), ("SC_rgb_rle_2frame.dcm", 2)):
        uids = _uids(samples.ds(name))
        first = np.asarray(
            _image(
                client.retrieve_instance_frames_rendered(
                    *uids, frame_numbers=[1], media_types=("image/png",)
                )
            )
        )
        nth = np.asarray(
            _image(
                client.retrieve_instance_frames_rendered(
                    *uids, frame_numbers=[other], media_types=("image/png",)
                )
            )
        )
        assert first.shape == nth.shape
        assert not np.array_equal(first, nth), name
        response = httpx.get(f"{samples.url(name)}/frames/99/rendered")
        _assert_json_error(response, 404)


def test_thumbnails_of_study_series_and_instance_are_small_images(
    server: LiveServer, stored: StoredStudy
) -> None:
    series_uid = next(iter(stored.series()))
    study_url = f"{server.dicomweb}/studies/{stored.study}"
    for url in (
        f"{study_url}/thumbnail",
        f"{study_url}/series/{series_uid}/thumbnail",
        f"{_instance_url(server, stored.datasets[0])}/thumbnail",
    ):
        response = httpx.get(url)
        assert response.status_code == 200, (url, response.text[:200])
        assert response.headers["content-type"] == "image/jpeg"
        image = _image(response.content)
        assert image.format == "JPEG" and max(image.size) <= 128
        _assert_not_constant(image)
        png = httpx.get(url, params={"accept": "image/png", "viewport": "40,40"})
        assert png.headers["content-type"] == "image/png"
        assert max(_image(png.content).size) <= 40


# -- errors --------------------------------------------------------------------------------------


UNKNOWN = "1.2.3.999999.1"


@pytest.mark.parametrize(
    "path",
    [
        "/studies/{u}",
        "/studies/{u}/metadata",
        "/studies/{u}/thumbnail",
        "/studies/{s}/series/{u}",
        "/studies/{s}/series/{u}/metadata",
        "/studies/{s}/series/{se}/instances/{u}",
        "/studies/{s}/series/{se}/instances/{u}/metadata",
        "/studies/{s}/series/{se}/instances/{u}/frames/1",
        "/studies/{s}/series/{se}/instances/{u}/rendered",
        "/studies/{s}/series/{se}/instances/{u}/bulkdata/7FE00010",
    ],
)
def test_unknown_study_series_instance_is_404_with_a_json_message(
    server: LiveServer, stored: StoredStudy, path: str
) -> None:
    ds = stored.datasets[0]
    url = server.dicomweb + path.format(u=UNKNOWN, s=ds.StudyInstanceUID, se=ds.SeriesInstanceUID)
    response = httpx.get(url)
    assert UNKNOWN in _assert_json_error(response, 404)
    assert UNKNOWN in response.headers.get("warning", "")


@pytest.mark.parametrize(
    "bad", ["1.2.abc", "%2E%2E", "1.2..3", ".1.2", "1.2.3%3Bdrop", "1" * 65, "1.2.3%00", "%C3%A9"]
)
@pytest.mark.parametrize(
    "path",
    [
        "/studies/{b}",
        "/studies/{b}/metadata",
        "/studies/1.2.3/series/{b}",
        "/studies/1.2.3/series/4.5/instances/{b}",
        "/studies/1.2.3/series/4.5/instances/{b}/frames/1",
        "/studies/1.2.3/series/4.5/instances/{b}/rendered",
    ],
)
def test_invalid_uid_in_path_is_400(server: LiveServer, path: str, bad: str) -> None:
    url = server.dicomweb + path.format(b=bad)
    message = _assert_json_error(httpx.get(url), 400)
    assert "not a valid DICOM UID" in message


@pytest.mark.parametrize(
    "path",
    [
        "/studies/..%2Fetc",
        "/studies/..%2F..%2Fetc%2Fpasswd",
        "/studies/1.2.3/series/..%2F..%2Fblobs",
        "/studies/1.2.3/series/4.5/instances/..%5C..%5Cindex.sqlite",
        "/studies/%2E%2E/series/%2E%2E",
    ],
)
def test_path_traversal_attempts_are_refused_and_never_500(server: LiveServer, path: str) -> None:
    response = httpx.get(server.dicomweb + path)
    assert response.status_code in (400, 404), response.text[:200]
    assert response.headers["content-type"].startswith("application/json")
    assert b"DICM" not in response.content and b"SQLite" not in response.content
