"""WADO-URI (PS3.18 9) against a live gateway: DICOM files, rendered images, clear 400s."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def ct(server: LiveServer) -> tuple[pydicom.Dataset, bytes]:
    ds = cohort(instances_per_series=1, rows=64, columns=48)[0]
    raw = part10(ds)
    assert stow(server, [raw]).status_code == 200
    return ds, raw


@pytest.fixture(scope="module")
def multiframe(server: LiveServer) -> pydicom.Dataset:
    path = Path(str(get_testdata_file("SC_rgb_rle_2frame.dcm")))
    assert stow(server, [path.read_bytes()]).status_code == 200
    return pydicom.dcmread(path)


def _query(ds: pydicom.Dataset, **extra: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": str(ds.StudyInstanceUID),
        "seriesUID": str(ds.SeriesInstanceUID),
        "objectUID": str(ds.SOPInstanceUID),
        **extra,
    }


def _get(server: LiveServer, params: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{server.url}/wado", params=params, timeout=30)


def _image(response: httpx.Response, media: str) -> Image.Image:
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == media
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def test_application_dicom_as_stored_is_the_stored_file(
    server: LiveServer, ct: tuple[pydicom.Dataset, bytes]
) -> None:
    ds, raw = ct
    for syntax in ("*", EXPLICIT_LE):  # stored as Explicit VR LE: both are the stored bytes
        answer = _get(server, _query(ds, contentType="application/dicom", transferSyntax=syntax))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/dicom")
        assert answer.content == raw


def test_default_content_type_of_an_image_is_jpeg_of_its_size(
    server: LiveServer, ct: tuple[pydicom.Dataset, bytes]
) -> None:
    ds, _ = ct
    image = _image(_get(server, _query(ds)), "image/jpeg")
    assert image.size == (48, 64)


def test_rows_columns_window_and_region_shape_the_png(
    server: LiveServer, ct: tuple[pydicom.Dataset, bytes]
) -> None:
    ds, _ = ct
    small = _image(_get(server, _query(ds, contentType="image/png", rows="32")), "image/png")
    assert small.size == (24, 32)  # aspect ratio kept
    half = _image(_get(server, _query(ds, contentType="image/png", region="0,0,0.5,0.5")),
                  "image/png")  # fmt: skip
    assert half.size == (24, 32)
    # a window far above every stored value renders black; far below, white
    pixels = ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    above = _query(ds, contentType="image/png", windowCenter=str(pixels.max() + 1e4),
                   windowWidth="10")  # fmt: skip
    below = _query(ds, contentType="image/png", windowCenter=str(pixels.min() - 1e4),
                   windowWidth="10")  # fmt: skip
    assert np.asarray(_image(_get(server, above), "image/png")).max() == 0
    assert np.asarray(_image(_get(server, below), "image/png")).min() == 255


def test_frame_number_selects_the_frame(server: LiveServer, multiframe: pydicom.Dataset) -> None:
    frames = [
        np.asarray(
            _image(
                _get(server, _query(multiframe, contentType="image/png", frameNumber=str(n))),
                "image/png",
            )
        )
        for n in (1, 2)
    ]
    expected = multiframe.pixel_array
    for n in (0, 1):
        assert np.array_equal(frames[n], expected[n])
    missing = _get(server, _query(multiframe, contentType="image/png", frameNumber="3"))
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"requestType": "WADORS"}, 400, "requestType=WADO"),
        ({"objectUID": ""}, 400, "objectUID is required"),
        ({"studyUID": "not a uid"}, 400, "StudyInstanceUID"),
        ({"contentType": "application/dicom", "rows": "10"}, 400, "rows"),
        ({"contentType": "image/jpeg", "transferSyntax": EXPLICIT_LE}, 400, "transferSyntax"),
        ({"contentType": "text/html"}, 406, "contentType"),
        ({"rows": "0"}, 400, "rows must be between"),
        ({"columns": "x"}, 400, "columns must be an integer"),
        ({"windowCenter": "40"}, 400, "together"),
        ({"windowCenter": "40", "windowWidth": "nan"}, 400, "finite"),
        ({"region": "0.5,0,0.2,1"}, 400, "region"),
        ({"frameNumber": "-1"}, 400, "frameNumber"),
        ({"imageQuality": "101"}, 400, "imageQuality"),
        ({"anonymize": "yes"}, 400, "not supported"),
        ({"bogus": "1"}, 400, "unknown WADO-URI parameter"),
        (
            {"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.81"},
            406,
            "offered",
        ),
    ],
)
def test_bad_parameters_get_a_clear_error(
    server: LiveServer,
    ct: tuple[pydicom.Dataset, bytes],
    change: dict[str, str],
    status: int,
    says: str,
) -> None:
    answer = _get(server, _query(ct[0], **change))
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/json")
    assert says in answer.json()["message"]


def test_unknown_object_or_wrong_series_is_404(
    server: LiveServer, ct: tuple[pydicom.Dataset, bytes]
) -> None:
    ds, _ = ct
    assert _get(server, _query(ds, objectUID="1.2.3.4.5.6")).status_code == 404
    assert _get(server, _query(ds, seriesUID="1.2.3.4.5.7")).status_code == 404


def test_transfer_syntax_jpeg_ls_gives_a_lossless_jpeg_ls_file(
    server: LiveServer, ct: tuple[pydicom.Dataset, bytes]
) -> None:
    ds, _ = ct
    jls = "1.2.840.10008.1.2.4.80"
    answer = _get(server, _query(ds, contentType="application/dicom", transferSyntax=jls))
    assert answer.status_code == 200, answer.text[:300]
    got = pydicom.dcmread(io.BytesIO(answer.content))
    assert got.file_meta.TransferSyntaxUID == jls
    assert np.array_equal(got.pixel_array, ds.pixel_array)
