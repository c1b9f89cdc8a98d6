"""QIDO-RS (PS3.18 10.6) over HTTP with dicomweb-client: every resource and matching type."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.helpers import cohort
from tests.live import LiveServer

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"


def _uids(results: list[dict], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, list[pydicom.Dataset]]]:
    """Three patients, two studies each of two series with three instances, with known names."""
    live = LiveServer(tmp_path_factory.mktemp("qido") / "data").start()
    datasets = cohort(patients=3, studies_per_patient=2, series_per_study=2, instances_per_series=3)
    names = ["Åström^Märta", "O'Brien^Seán", "Nguyễn^Văn An"]
    patients = sorted({ds.PatientID for ds in datasets})
    for ds in datasets:
        ds.PatientName = names[patients.index(ds.PatientID)]
    DICOMwebClient(live.dicomweb).store_instances(datasets)
    yield live, datasets
    live.stop()


@pytest.fixture
def qido(archive: tuple[LiveServer, list[pydicom.Dataset]]) -> DICOMwebClient:
    return DICOMwebClient(archive[0].dicomweb)


def test_search_for_studies_returns_every_study_with_computed_attributes(
    qido: DICOMwebClient, archive
) -> None:
    _, datasets = archive
    studies = qido.search_for_studies()
    assert _uids(studies, STUDY) == {ds.StudyInstanceUID for ds in datasets}
    for study in studies:
        assert study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
        assert study["00201208"]["Value"] == [6]  # NumberOfStudyRelatedInstances
        assert study["00080061"]["Value"]  # ModalitiesInStudy
        assert study["00081190"]["Value"][0].endswith(study[STUDY]["Value"][0])


def test_all_six_search_resources(qido: DICOMwebClient, archive) -> None:
    _, datasets = archive
    ds = datasets[0]
    same_study = [d for d in datasets if d.StudyInstanceUID == ds.StudyInstanceUID]
    same_series = [d for d in same_study if d.SeriesInstanceUID == ds.SeriesInstanceUID]
    assert _uids(qido.search_for_series(), SERIES) == {d.SeriesInstanceUID for d in datasets}
    assert _uids(qido.search_for_instances(), SOP) == {d.SOPInstanceUID for d in datasets}
    assert _uids(qido.search_for_series(ds.StudyInstanceUID), SERIES) == {
        d.SeriesInstanceUID for d in same_study
    }
    assert _uids(qido.search_for_instances(ds.StudyInstanceUID), SOP) == {
        d.SOPInstanceUID for d in same_study
    }
    got = qido.search_for_instances(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert _uids(got, SOP) == {d.SOPInstanceUID for d in same_series}
    series = qido.search_for_series(ds.StudyInstanceUID)
    assert all(s["00201209"]["Value"] == [3] for s in series)  # NumberOfSeriesRelatedInstances


def test_matching_types_through_the_client(qido: DICOMwebClient, archive) -> None:
    _, datasets = archive
    ds = datasets[0]
    expect = {d.StudyInstanceUID for d in datasets if d.PatientID == ds.PatientID}
    assert (
        _uids(qido.search_for_studies(search_filters={"PatientID": ds.PatientID}), STUDY) == expect
    )
    assert (
        _uids(qido.search_for_studies(search_filters={"00100020": ds.PatientID}), STUDY) == expect
    )
    two = sorted({d.StudyInstanceUID for d in datasets})[:2]
    got = qido.search_for_studies(search_filters={"StudyInstanceUID": ",".join(two)})
    assert _uids(got, STUDY) == set(two)
    dates = sorted(d.StudyDate for d in datasets)
    low, high = dates[0], dates[len(dates) // 2]
    got = qido.search_for_studies(search_filters={"StudyDate": f"{low}-{high}"})
    assert _uids(got, STUDY) == {d.StudyInstanceUID for d in datasets if low <= d.StudyDate <= high}
    got = qido.search_for_studies(search_filters={"StudyDate": f"{high}-"})
    assert _uids(got, STUDY) == {d.StudyInstanceUID for d in datasets if d.StudyDate >= high}
    got = qido.search_for_studies(search_filters={"PatientName": "Åst*"})
    assert _uids(got, STUDY) == {
        d.StudyInstanceUID for d in datasets if str(d.PatientName).startswith("Åst")
    }
    got = qido.search_for_studies(search_filters={"PatientName": "o'brien^se?n"})
    assert _uids(got, STUDY) == {
        d.StudyInstanceUID for d in datasets if "Brien" in str(d.PatientName)
    }
    modality = ds.Modality
    got = qido.search_for_studies(search_filters={"ModalitiesInStudy": modality})
    assert _uids(got, STUDY) == {d.StudyInstanceUID for d in datasets if d.Modality == modality}


def test_fuzzy_matching_is_accent_and_case_insensitive(qido: DICOMwebClient, archive) -> None:
    _, datasets = archive
    for term, needle in (
        ("astrom", "Åström"),
        ("MARTA", "Märta"),
        ("nguyen", "Nguyễn"),
        ("an", "An"),
    ):
        got = qido.search_for_studies(fuzzymatching=True, search_filters={"PatientName": term})
        expect = {d.StudyInstanceUID for d in datasets if needle in str(d.PatientName)}
        assert _uids(got, STUDY) == expect, term


def test_limit_offset_pages_through_everything(qido: DICOMwebClient, archive) -> None:
    _ = archive
    seen: list[str] = []
    for offset in range(0, 6, 2):
        page = qido.search_for_studies(limit=2, offset=offset)
        assert len(page) == 2
        seen += [r[STUDY]["Value"][0] for r in page]
    assert len(seen) == len(set(seen)) == 6
    assert qido.search_for_studies(limit=2, offset=6) == []


def test_includefield_list_and_all(archive) -> None:
    live, datasets = archive
    ds = datasets[0]
    url = f"{live.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances"
    plain = httpx.get(url).json()[0]
    assert "00280030" not in plain  # PixelSpacing is not an instance-level default
    full = httpx.get(url, params={"includefield": "all"}).json()[0]
    assert full["00280030"]["Value"] == [float(v) for v in ds.PixelSpacing]
    assert "7FE00010" not in full
    listed = httpx.get(
        f"{live.dicomweb}/studies", params={"includefield": "00081030,PatientSex"}
    ).json()
    assert all("00081030" in r and "00100040" in r for r in listed)


def test_percent_encoded_wildcards_and_carets_are_decoded(archive) -> None:
    live, datasets = archive
    target = next(d for d in datasets if "Brien" in str(d.PatientName))
    expect = {d.StudyInstanceUID for d in datasets if d.PatientID == target.PatientID}
    for raw in (
        "PatientName=O%27Brien%5ESe%C3%A1n",
        "PatientName=O%27Bri%2A",
        "PatientName=O%27Brien%5ESe%3Fn",
    ):
        got = httpx.get(f"{live.dicomweb}/studies?{raw}").json()
        assert _uids(got, STUDY) == expect, raw


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("NoSuchAttribute=1", "NoSuchAttribute"),
        ("00091010=x", "00091010"),
        ("Modality=CT", "Modality"),
        ("StudyDate=2020-13-45", "StudyDate"),
        ("StudyDate=notadate", "StudyDate"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("fuzzymatching=maybe", "fuzzymatching"),
        ("StudyInstanceUID=1.2.*", "StudyInstanceUID"),
        ("StudyInstanceUID=1.2.x';DROP TABLE study;--", "StudyInstanceUID"),
        ("includefield=NotAKeyword", "includefield"),
        ("NumberOfStudyRelatedInstances=3", "NumberOfStudyRelatedInstances"),
    ],
)
def test_unknown_or_invalid_parameters_are_400_naming_them(
    archive, query: str, parameter: str
) -> None:
    live, _ = archive
    r = httpx.get(f"{live.dicomweb}/studies?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == parameter
    assert parameter in r.json()["message"] or parameter in query


def test_injection_text_is_only_data(archive) -> None:
    live, _ = archive
    r = httpx.get(f"{live.dicomweb}/studies", params={"PatientID": "x' OR '1'='1"})
    assert r.status_code == 200 and r.json() == []
    r = httpx.get(f"{live.dicomweb}/studies", params={"PatientName": "*' OR 1=1 --"})
    assert r.status_code == 200 and r.json() == []
    assert len(httpx.get(f"{live.dicomweb}/studies").json()) == 6


def test_more_results_are_signalled_with_a_warning_header(archive) -> None:
    live, _ = archive
    r = httpx.get(f"{live.dicomweb}/studies", params={"limit": 4})
    assert len(r.json()) == 4
    assert "additional results" in r.headers["warning"]
    r = httpx.get(f"{live.dicomweb}/studies", params={"limit": 10})
    assert "warning" not in r.headers


def test_json_accept_variants_and_406(archive) -> None:
    live, _ = archive
    for accept in (
        "application/dicom+json",
        "application/json",
        "*/*",
        'multipart/related; type="application/dicom+json"',
    ):
        assert httpx.get(f"{live.dicomweb}/studies", headers={"Accept": accept}).status_code == 200
    r = httpx.get(f"{live.dicomweb}/studies", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 406 and "application/dicom+json" in r.json()["message"]


def test_unknown_study_searches_are_empty_not_errors(archive) -> None:
    live, _ = archive
    r = httpx.get(f"{live.dicomweb}/studies/1.2.3.999/series")
    assert r.status_code == 200 and r.json() == []
    assert httpx.get(f"{live.dicomweb}/studies/1.2.abc/series").status_code == 400
