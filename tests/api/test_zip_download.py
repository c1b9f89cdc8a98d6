"""Study and series download as application/zip (flat or DICOMDIR) against a live gateway."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.fileset import FileSet

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

ZIP = "application/zip"


@dataclass
class Stored:
    datasets: list[pydicom.Dataset]
    raw: dict[str, bytes]

    @property
    def study(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    def series(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for ds in self.datasets:
            out.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
        return out


@pytest.fixture(scope="module")
def stored(server: LiveServer) -> Stored:
    datasets = cohort(series_per_study=2, instances_per_series=3, rows=40, columns=30)
    raw = {str(ds.SOPInstanceUID): part10(ds) for ds in datasets}
    assert stow(server, list(raw.values())).status_code == 200
    return Stored(datasets, raw)


def _zip(response: httpx.Response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == ZIP
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None  # every entry's CRC-32 checks
    return archive


def test_study_zip_is_flat_sop_uid_files_holding_the_stored_bytes(
    server: LiveServer, stored: Stored
) -> None:
    answer = httpx.get(f"{server.dicomweb}/studies/{stored.study}", headers={"Accept": ZIP})
    archive = _zip(answer)
    assert sorted(archive.namelist()) == sorted(f"{uid}.dcm" for uid in stored.raw)
    for uid, raw in stored.raw.items():
        assert archive.read(f"{uid}.dcm") == raw
    assert answer.headers["content-disposition"] == f'attachment; filename="{stored.study}.zip"'
    assert "content-length" not in answer.headers  # streamed, not built in memory first


def test_series_zip_holds_only_that_series(server: LiveServer, stored: Stored) -> None:
    for series, members in stored.series().items():
        url = f"{server.dicomweb}/studies/{stored.study}/series/{series}"
        archive = _zip(httpx.get(url, params={"accept": ZIP}))  # download link: query parameter
        assert {name.removesuffix(".dcm") for name in archive.namelist()} == members


def test_dicomdir_layout_is_a_readable_ps3_10_file_set(
    server: LiveServer, stored: Stored, tmp_path: Path
) -> None:
    url = f"{server.dicomweb}/studies/{stored.study}"
    by_param = _zip(httpx.get(url, params={"layout": "dicomdir"}, headers={"Accept": ZIP}))
    by_media = _zip(httpx.get(url, headers={"Accept": f"{ZIP}; layout=dicomdir"}))
    assert sorted(by_param.namelist()) == sorted(by_media.namelist())
    assert by_param.namelist()[0] == "DICOMDIR"
    by_param.extractall(tmp_path)
    fileset = FileSet(pydicom.dcmread(tmp_path / "DICOMDIR"))
    found = {str(instance.SOPInstanceUID): instance for instance in fileset}
    assert set(found) == set(stored.raw)
    for uid, instance in found.items():  # each record points at the instance's stored bytes
        assert Path(instance.path).read_bytes() == stored.raw[uid]
    assert len(fileset.find(SeriesInstanceUID=next(iter(stored.series())))) == 3


def test_multipart_stays_the_default_without_zip_in_accept(
    server: LiveServer, stored: Stored
) -> None:
    answer = httpx.get(f"{server.dicomweb}/studies/{stored.study}")
    assert answer.headers["content-type"].startswith("multipart/related")
    lower = httpx.get(
        f"{server.dicomweb}/studies/{stored.study}",
        headers={"Accept": f'multipart/related; type="application/dicom", {ZIP}; q=0.5'},
    )
    assert lower.headers["content-type"].startswith("multipart/related")


@pytest.mark.parametrize(
    ("params", "accept", "status", "says"),
    [
        ({"layout": "tree"}, ZIP, 400, "layout must be"),
        ({}, f"{ZIP}; layout=nested", 400, "layout must be"),
        ({}, f"{ZIP}; transfer-syntax=1.2.840.10008.1.2.4.50", 406, "not offered"),
    ],
)
def test_bad_zip_requests_get_a_clear_error_and_no_archive(
    server: LiveServer, stored: Stored, params: dict[str, str], accept: str, status: int, says: str
) -> None:
    answer = httpx.get(
        f"{server.dicomweb}/studies/{stored.study}", params=params, headers={"Accept": accept}
    )
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/json")
    assert says in answer.json()["message"]


def test_zip_of_an_unknown_study_is_404_not_an_empty_archive(server: LiveServer) -> None:
    answer = httpx.get(f"{server.dicomweb}/studies/1.2.3.999999", headers={"Accept": ZIP})
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/json")


def test_explicit_vr_little_endian_zip_converts_implicit_vr_instances(server: LiveServer) -> None:
    ds = cohort(instances_per_series=1)[0]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=True)
    assert stow(server, [buffer.getvalue()]).status_code == 200
    accept = f"{ZIP}; transfer-syntax=1.2.840.10008.1.2.1"
    url = f"{server.dicomweb}/studies/{ds.StudyInstanceUID}"
    archive = _zip(httpx.get(url, headers={"Accept": accept}))
    got = pydicom.dcmread(io.BytesIO(archive.read(f"{ds.SOPInstanceUID}.dcm")))
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert got.PixelData == ds.PixelData
