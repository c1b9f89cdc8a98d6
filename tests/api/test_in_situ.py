"""An in-situ-processing grant reads metadata but never pixels: every pixel route answers 403.

The same routes answer 200 with a download grant and 404 without any grant, so the
403 is the agreement speaking, not a missing study.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pydicom
import pytest

from tests.api.test_bulkdata import BULK_ACCEPT, assert_no_pixels, hostile_instance
from tests.live import LiveServer
from tests.security.conftest import AS_SENT, add_client, auth_env, bearer, cli_ok, stow_into, token

IN_SITU, DOWNLOAD, HIDDEN = "insitu-ds", "download-ds", "hidden-ds"


@dataclass
class Setup:
    live: LiveServer
    token: str
    studies: dict[str, pydicom.Dataset]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    live = LiveServer(tmp_path_factory.mktemp("insitu") / "data", extra_env=auth_env())
    for dataset in (IN_SITU, DOWNLOAD, HIDDEN):
        # the test addresses instances by the UIDs it sent: stored as sent
        cli_ok(live, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung",
               *AS_SENT)  # fmt: skip
    stores = [arg for d in (IN_SITU, DOWNLOAD, HIDDEN) for arg in ("--store", d)]
    pusher = add_client(live, "router", "--organization", "org-h", *stores)
    researcher = add_client(live, "researcher", "--organization", "org-r")
    for name, dataset, condition in (
        ("daa-in-situ", IN_SITU, "in-situ-processing"),
        ("daa-download", DOWNLOAD, "download"),
    ):
        cli_ok(live, "daa", "create", name, "--dataset", dataset, "--condition", condition,
               "--organization", "org-r")  # fmt: skip
    live.start()
    try:
        push = token(live, pusher)
        studies = {}
        for dataset in (IN_SITU, DOWNLOAD, HIDDEN):
            ds = hostile_instance()
            assert stow_into(live, dataset, push, [ds]).status_code == 200
            studies[dataset] = ds
        yield Setup(live, token(live, researcher), studies)
    finally:
        live.stop()


def pixel_routes(ds: pydicom.Dataset) -> dict[str, tuple[str, str | None]]:
    """Every route that yields pixel data, with the Accept header a client would send."""
    study = f"/dicom-web/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    instance = f"{series}/instances/{ds.SOPInstanceUID}"
    dicom = 'multipart/related; type="application/dicom"'
    uri = (f"/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}"
           f"&seriesUID={ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}")  # fmt: skip
    return {
        "study": (study, dicom),
        "series": (series, dicom),
        "study zip": (study, "application/zip"),
        "series zip": (series, "application/zip; layout=dicomdir"),
        "wado-uri dicom": (f"{uri}&contentType=application/dicom", None),
        "wado-uri jpeg": (uri, None),
        "instance": (instance, dicom),
        "frames": (f"{instance}/frames/1", "multipart/related; type=application/octet-stream"),
        "rendered study": (f"{study}/rendered", 'multipart/related; type="image/jpeg"'),
        "rendered series": (f"{series}/rendered", "image/png"),
        "rendered instance": (f"{instance}/rendered", "image/jpeg"),
        "rendered frame": (f"{instance}/frames/1/rendered", "image/png"),
        "study thumbnail": (f"{study}/thumbnail", "image/jpeg"),
        "series thumbnail": (f"{series}/thumbnail", "image/jpeg"),
        "instance thumbnail": (f"{instance}/thumbnail", "image/jpeg"),
        "bulk pixel data": (f"{instance}/bulkdata/7FE00010", BULK_ACCEPT),
        "bulk icon": (f"{instance}/bulkdata/00880200/1/7FE00010", BULK_ACCEPT),
        "bulk nested icon": (f"{instance}/bulkdata/0040A730/1/00880200/1/7FE00010", BULK_ACCEPT),
        "bulk overlay": (f"{instance}/bulkdata/60003000", BULK_ACCEPT),
        "bulk waveform": (f"{instance}/bulkdata/54000100/1/54001010", BULK_ACCEPT),
        "bulk document": (f"{instance}/bulkdata/0040A730/1/00420011", BULK_ACCEPT),
        "bulk private": (f"{instance}/bulkdata/00091011", BULK_ACCEPT),
    }


def _get(s: Setup, path: str, accept: str | None) -> httpx.Response:
    headers = {**bearer(s.token), **({"Accept": accept} if accept else {})}
    return httpx.get(s.live.url + path, headers=headers, timeout=30)


@pytest.mark.parametrize("route", list(pixel_routes(hostile_instance())))
def test_pixel_route_answers_403_for_in_situ(setup: Setup, route: str) -> None:
    path, accept = pixel_routes(setup.studies[IN_SITU])[route]
    refused = _get(setup, path, accept)
    assert refused.status_code == 403, (route, refused.status_code, refused.text[:300])
    assert refused.headers["content-type"].startswith("application/json")
    assert "in-situ processing only" in refused.json()["message"]
    assert b"\x55\x55\x55\x55" not in refused.content  # no overlay bytes, no pixels
    path, accept = pixel_routes(setup.studies[DOWNLOAD])[route]
    assert _get(setup, path, accept).status_code == 200, route
    path, accept = pixel_routes(setup.studies[HIDDEN])[route]
    assert _get(setup, path, accept).status_code == 404, route


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_in_situ_metadata_is_readable_without_pixels(setup: Setup, level: str) -> None:
    ds = setup.studies[IN_SITU]
    path = {
        "study": f"/dicom-web/studies/{ds.StudyInstanceUID}/metadata",
        "series": f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata",
        "instance": f"{pixel_routes(ds)['instance'][0]}/metadata",
    }[level]
    answer = _get(setup, path, "application/dicom+json")
    assert answer.status_code == 200, answer.text
    assert len(assert_no_pixels(answer.json(), level)) == 9
    found = _get(setup, f"/dicom-web/instances?StudyInstanceUID={ds.StudyInstanceUID}"
                 "&includefield=all", None)  # fmt: skip
    assert found.status_code == 200 and found.json()
    assert_no_pixels(found.json(), "QIDO")
