"""Rendered study and series (PS3.18 10.4.1.1.4) against a live gateway: one image per instance."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest
from PIL import Image

from tests.api.test_wado import _parts
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer


@pytest.fixture(scope="module")
def study(server: LiveServer) -> list[pydicom.Dataset]:
    datasets = cohort(series_per_study=2, instances_per_series=2, rows=40, columns=24)
    assert stow(server, [part10(ds) for ds in datasets]).status_code == 200
    return datasets


def _images(response: httpx.Response, media: str) -> list[Image.Image]:
    assert response.status_code == 200, response.text[:300]
    assert f'type="{media}"' in response.headers["content-type"]
    images = []
    for part_type, body in _parts(response):
        assert part_type == media
        image = Image.open(io.BytesIO(body))
        image.load()
        images.append(image)
    return images


def test_rendered_study_has_one_jpeg_per_instance(
    server: LiveServer, study: list[pydicom.Dataset]
) -> None:
    url = f"{server.dicomweb}/studies/{study[0].StudyInstanceUID}/rendered"
    images = _images(httpx.get(url), "image/jpeg")
    assert len(images) == len(study)
    assert {image.size for image in images} == {(24, 40)}


def test_rendered_series_as_png_with_viewport(
    server: LiveServer, study: list[pydicom.Dataset]
) -> None:
    ds = study[0]
    url = f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/rendered"
    accept = 'multipart/related; type="image/png"'
    images = _images(httpx.get(url, params={"viewport": "12,20"}, headers={"Accept": accept}),
                     "image/png")  # fmt: skip
    assert len(images) == 2 and {image.size for image in images} == {(12, 20)}


@pytest.mark.parametrize(
    ("params", "accept", "status"),
    [({}, "application/dicom", 406), ({"window": "40"}, "image/jpeg", 400)],
)
def test_bad_rendered_study_requests_are_refused(
    server: LiveServer, study: list[pydicom.Dataset], params: dict[str, str], accept: str,
    status: int,
) -> None:  # fmt: skip
    url = f"{server.dicomweb}/studies/{study[0].StudyInstanceUID}/rendered"
    answer = httpx.get(url, params=params, headers={"Accept": accept})
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json")
    missing = httpx.get(f"{server.dicomweb}/studies/1.2.3.987654/rendered")
    assert missing.status_code == 404
