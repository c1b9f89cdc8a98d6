"""FHIR search semantics, with every expected answer computed by the test from the data it stored.

ImagingStudy and Patient answers come from the pydicom datasets sent over STOW;
ResearchStudy answers come from the resources the test created.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydicom
import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject

from tests.fhir.conftest import (
    BREAST_CANCER,
    BREAST_SITE,
    DCM,
    LUNG_CANCER,
    SNOMED,
    bundle,
    date_matches,
    entries_of_mode,
    fhir_client,
    link,
    match_ids,
    matches,
    outcome,
    parse,
    research_study,
    running,
    search_range,
    study_range,
    walk,
)
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

# (StudyDate, StudyTime, series modalities, BodyPartExamined, patient)
STUDIES: list[tuple[str | None, str, tuple[str, ...], str, str]] = [
    ("20190310", "080000", ("CT",), "BREAST", "PAT-A"),
    ("20190325", "101500", ("MR",), "BREAST", "PAT-A"),
    ("20190701", "120000", ("CT", "PT"), "CHEST", "PAT-B"),
    ("20200115", "093000", ("MR",), "BRAIN", "PAT-C"),
    ("20200115", "235959", ("CT",), "LUNG", "PAT-B"),
    ("20211231", "170000", ("PT",), "ABDOMEN", "PAT-D"),
    (None, "", ("CT",), "LIVER", "PAT-C"),
    ("20180606", "141414", ("MR", "CT"), "PROSTATE", "PAT-E"),
]
PATIENTS = {  # PatientID -> (sex, birth date)
    "PAT-A": ("F", "19600412"),
    "PAT-B": ("M", "19550101"),
    "PAT-C": ("F", "19701231"),
    "PAT-D": ("M", "19800707"),
    "PAT-E": ("M", "19481111"),
}


@dataclass
class Study:
    uid: str
    accession: str
    patient: str
    instances: list[pydicom.Dataset]

    @property
    def first(self) -> pydicom.Dataset:
        return self.instances[0]

    @property
    def modalities(self) -> set[str]:
        return {str(ds.Modality) for ds in self.instances}

    @property
    def body_parts(self) -> set[str]:
        return {str(ds.BodyPartExamined) for ds in self.instances}


@dataclass
class Corpus:
    live: LiveServer
    studies: list[Study] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> ResearchStudy JSON
    subjects: dict[str, list[str]] = field(default_factory=dict)  # dataset id -> subject ids

    def uids(self, keep: Any = lambda s: True) -> set[str]:
        return {s.uid for s in self.studies if keep(s)}

    def add(
        self, date: str | None, time: str, modalities: tuple[str, ...], part: str, pid: str
    ) -> Study:
        instances = cohort(patients=1, series_per_study=len(modalities), instances_per_series=1)
        accession = f"ACC{len(self.studies):04d}"
        series = sorted({str(ds.SeriesInstanceUID) for ds in instances})
        sex, birth = PATIENTS[pid]
        for ds in instances:
            if date is None:
                del ds.StudyDate
                del ds.StudyTime
            else:
                ds.StudyDate, ds.StudyTime = date, time
            ds.Modality = modalities[series.index(str(ds.SeriesInstanceUID))]
            ds.BodyPartExamined = part
            ds.AccessionNumber = accession
            ds.PatientID, ds.PatientSex, ds.PatientBirthDate = pid, sex, birth
            ds.IssuerOfPatientID = "SEARCH-TEST"
        response = stow(self.live, [part10(ds) for ds in instances])
        assert response.status_code == 200, response.text
        study = Study(str(instances[0].StudyInstanceUID), accession, pid, instances)
        self.studies.append(study)
        return study


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    with running(tmp_path_factory.mktemp("fhir-search") / "data") as live:
        found = Corpus(live)
        for spec in STUDIES:
            found.add(*spec)
        with fhir_client(live) as client:
            for study in (
                research_study("Mammography Screening Cohort", BREAST_CANCER, "active",
                               {"start": "2018-01-01", "end": "2019-12-31"}),
                research_study("Lung Nodule Registry", LUNG_CANCER, "active", {"start": "2020-06-01"}),
                research_study("Étude Poumon Lyon", LUNG_CANCER, "completed",
                               {"start": "2015-03", "end": "2016-02"}),
                research_study("Breast MRI follow-up", BREAST_CANCER, "withdrawn",
                               {"end": "2017-05-31"}),
            ):  # fmt: skip
                created = parse(client.post("ResearchStudy", json=study), ResearchStudy, 201)
                found.datasets[str(created.id)] = created.model_dump(mode="json", by_alias=True)
            mammo, lung = list(found.datasets)[:2]
            for dataset, n in ((mammo, 2), (lung, 1)):
                for k in range(n):
                    subject = {
                        "resourceType": "ResearchSubject",
                        "status": "on-study",
                        "study": {"reference": f"ResearchStudy/{dataset}"},
                        "individual": {"reference": f"Patient/p-{k}"},
                    }
                    made = parse(client.post("ResearchSubject", json=subject), ResearchSubject, 201)
                    found.subjects.setdefault(dataset, []).append(str(made.id))
        yield found


@pytest.fixture
def client(corpus: Corpus) -> Iterator[httpx.Client]:
    with fhir_client(corpus.live) as c:
        yield c


def _studies(client: httpx.Client, **params: Any) -> list[str]:
    found = bundle(client.get("ImagingStudy", params={"_count": 100, **params}))
    for resource in matches(found):
        ImagingStudy.model_validate(resource.model_dump())
    return match_ids(found)


def _ids(client: httpx.Client, rtype: str, params: Any) -> set[str]:
    return set(match_ids(bundle(client.get(rtype, params=params))))


# --- ImagingStudy: started ------------------------------------------------------------------

DATE_QUERIES = [
    f"{prefix}{value}"
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
    for value in ("2019", "2020-01", "2019-03-10", "2020-01-15")
]


@pytest.mark.parametrize("query", DATE_QUERIES)
def test_started_prefixes_match_the_study_date_ranges(
    client: httpx.Client, corpus: Corpus, query: str
) -> None:
    prefix, value = query[:2], query[2:]
    expected = corpus.uids(lambda s: date_matches(prefix, study_range(s.first), value))
    assert set(_studies(client, started=query)) == expected


def test_started_without_prefix_means_eq(client: httpx.Client, corpus: Corpus) -> None:
    expected = corpus.uids(lambda s: date_matches("eq", study_range(s.first), "2020-01-15"))
    assert len(expected) == 2
    assert set(_studies(client, started="2020-01-15")) == expected


def test_two_started_bounds_give_an_interval(client: httpx.Client, corpus: Corpus) -> None:
    found = bundle(
        client.get("ImagingStudy", params=[("started", "ge2019-03"), ("started", "lt2020-01-15")])
    )
    lo, hi = search_range("2019-03")[0], search_range("2020-01-15")[0]
    expected = corpus.uids(lambda s: (r := study_range(s.first)) is not None and lo <= r[0] < hi)
    assert set(match_ids(found)) == expected


@pytest.mark.parametrize("missing", ["true", "false"])
def test_started_missing(client: httpx.Client, corpus: Corpus, missing: str) -> None:
    expected = corpus.uids(lambda s: (study_range(s.first) is None) == (missing == "true"))
    assert set(_studies(client, **{"started:missing": missing})) == expected


# --- ImagingStudy: tokens, references -------------------------------------------------------


@pytest.mark.parametrize("value", ["CT", f"{DCM}|CT"])
def test_modality_with_and_without_system(client: httpx.Client, corpus: Corpus, value: str) -> None:
    assert set(_studies(client, modality=value)) == corpus.uids(lambda s: "CT" in s.modalities)


def test_modality_list_is_an_or(client: httpx.Client, corpus: Corpus) -> None:
    expected = corpus.uids(lambda s: bool({"MR", "PT"} & s.modalities))
    assert set(_studies(client, modality="MR,PT")) == expected


def test_modality_not(client: httpx.Client, corpus: Corpus) -> None:
    expected = corpus.uids(lambda s: "CT" not in s.modalities)
    assert expected
    assert set(_studies(client, **{"modality:not": "CT"})) == expected


def test_modality_in_another_code_system_matches_nothing(client: httpx.Client) -> None:
    assert _studies(client, modality="http://loinc.org|CT") == []


def test_identifier_by_study_instance_uid(client: httpx.Client, corpus: Corpus) -> None:
    study = corpus.studies[2]
    assert _studies(client, identifier=f"urn:dicom:uid|urn:oid:{study.uid}") == [study.uid]


def test_identifier_by_accession_number(client: httpx.Client, corpus: Corpus) -> None:
    study = corpus.studies[5]
    assert _studies(client, identifier=study.accession) == [study.uid]


def test_id_selects_one_study(client: httpx.Client, corpus: Corpus) -> None:
    study = corpus.studies[3]
    found = _studies(client, _id=study.uid)
    assert found == [study.uid]


def _patient_id(client: httpx.Client, pid: str) -> str:
    found = bundle(client.get("Patient", params={"identifier": pid}))
    patients = [Patient.model_validate(r.model_dump()) for r in matches(found)]
    assert len(patients) == 1
    assert patients[0].identifier[0].value == pid
    return str(patients[0].id)


def test_subject_reference(client: httpx.Client, corpus: Corpus) -> None:
    key = _patient_id(client, "PAT-B")
    expected = corpus.uids(lambda s: s.patient == "PAT-B")
    assert len(expected) == 2
    assert set(_studies(client, subject=f"Patient/{key}")) == expected
    assert set(_studies(client, patient=key)) == expected


def test_subject_chained_to_patient_identifier(client: httpx.Client, corpus: Corpus) -> None:
    expected = corpus.uids(lambda s: s.patient == "PAT-C")
    assert set(_studies(client, **{"subject:Patient.identifier": "PAT-C"})) == expected


@pytest.mark.parametrize("value", [BREAST_SITE, f"http://snomed.info/sct|{BREAST_SITE}", "BREAST"])
def test_bodysite_by_snomed_code_or_dicom_term(
    client: httpx.Client, corpus: Corpus, value: str
) -> None:
    expected = corpus.uids(lambda s: "BREAST" in s.body_parts)
    assert len(expected) == 2
    assert set(_studies(client, bodysite=value)) == expected


def test_bodysite_codes_are_shown_as_snomed(client: httpx.Client, corpus: Corpus) -> None:
    found = bundle(client.get("ImagingStudy", params={"bodysite": "BREAST"}))
    for resource in matches(found):
        study = ImagingStudy.model_validate(resource.model_dump())
        sites = {(s.bodySite.system, s.bodySite.code) for s in study.series or []}
        assert sites == {(SNOMED, BREAST_SITE)}


# --- sorting, totals, summaries ---------------------------------------------------------------


@pytest.mark.parametrize("descending", [False, True])
def test_sort_by_started(client: httpx.Client, corpus: Corpus, descending: bool) -> None:
    found = _studies(client, _sort="-started" if descending else "started")
    assert set(found) == corpus.uids()
    dated = sorted((r[0], s.uid) for s in corpus.studies if (r := study_range(s.first)) is not None)
    expected = [uid for _, uid in dated]
    if descending:
        expected.reverse()
    assert [uid for uid in found if uid in set(expected)] == expected


def test_total_accurate_and_none(client: httpx.Client, corpus: Corpus) -> None:
    accurate = bundle(client.get("ImagingStudy", params={"modality": "MR", "_count": 1}))
    assert accurate.total == len(corpus.uids(lambda s: "MR" in s.modalities))
    explicit = bundle(client.get("ImagingStudy", params={"modality": "MR", "_total": "accurate"}))
    assert explicit.total == accurate.total
    none = bundle(client.get("ImagingStudy", params={"modality": "MR", "_total": "none"}))
    assert none.total is None
    assert len(match_ids(none)) == accurate.total


def test_summary_count_has_a_total_and_no_entries(client: httpx.Client, corpus: Corpus) -> None:
    found = bundle(client.get("ImagingStudy", params={"_summary": "count", "modality": "CT"}))
    assert found.total == len(corpus.uids(lambda s: "CT" in s.modalities))
    assert not found.entry


def test_elements_keeps_the_asked_and_mandatory_elements_and_marks_subsetted(
    client: httpx.Client, corpus: Corpus
) -> None:
    # FHIR R4 3.1.1.5.9: mandatory elements (ImagingStudy.status, .subject) stay, so the
    # subsetted resources still parse as R4 ImagingStudy.
    found = bundle(client.get("ImagingStudy", params={"_elements": "id,started", "_count": 100}))
    assert set(match_ids(found)) == corpus.uids()
    for resource in matches(found):
        data = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert set(data) <= {"resourceType", "id", "meta", "started", "status", "subject"}
        assert "series" not in data and "identifier" not in data
        assert any(t.code == "SUBSETTED" for t in resource.meta.tag or [])


# --- paging ------------------------------------------------------------------------------------


def test_walking_pages_returns_every_match_once(client: httpx.Client, corpus: Corpus) -> None:
    pages = walk(client, "ImagingStudy", {"_count": 3})
    seen = [uid for page in pages for uid in match_ids(page)]
    assert all(len(match_ids(p)) <= 3 for p in pages)
    assert len(seen) == len(set(seen))
    assert set(seen) == corpus.uids()
    assert all(p.total == len(corpus.studies) for p in pages)


def test_paging_survives_a_study_stored_between_pages(client: httpx.Client, corpus: Corpus) -> None:
    old = corpus.uids()
    first = bundle(client.get("ImagingStudy", params={"_count": 3}))
    new = corpus.add("20190310", "070000", ("CT",), "BREAST", "PAT-E")
    seen = match_ids(first)
    url = link(first, "next")
    while url is not None:
        page = bundle(client.get(url))
        seen += match_ids(page)
        url = link(page, "next")
    assert len(seen) == len(set(seen)), "a study was returned twice"
    assert old <= set(seen), f"old studies skipped: {old - set(seen)}"
    assert set(seen) <= old | {new.uid}


def test_previous_link_returns_the_previous_page(client: httpx.Client) -> None:
    first = bundle(client.get("ImagingStudy", params={"_count": 3, "_sort": "started"}))
    assert link(first, "previous") is None
    second_url = link(first, "next")
    assert second_url
    second = bundle(client.get(second_url))
    previous = link(second, "previous")
    assert previous
    back = bundle(client.get(previous))
    assert match_ids(back) == match_ids(first)
    assert set(match_ids(second)).isdisjoint(match_ids(first))


# --- ResearchStudy --------------------------------------------------------------------------


def _dataset_ids(corpus: Corpus, keep: Any) -> set[str]:
    return {i for i, r in corpus.datasets.items() if keep(r)}


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ({"title": "mammo"}, "Mammography Screening Cohort"),
        ({"title": "MAMMOGRAPHY screening"}, "Mammography Screening Cohort"),
        ({"title": "etude"}, "Étude Poumon Lyon"),
        ({"title": "ÉTUDE poumon"}, "Étude Poumon Lyon"),
        ({"title:exact": "Étude Poumon Lyon"}, "Étude Poumon Lyon"),
        ({"title:contains": "nodule"}, "Lung Nodule Registry"),
        ({"title:contains": "POUMON"}, "Étude Poumon Lyon"),
    ],
)
def test_title_search(
    client: httpx.Client, corpus: Corpus, query: dict[str, str], title: str
) -> None:
    expected = _dataset_ids(corpus, lambda r: r["title"] == title)
    assert _ids(client, "ResearchStudy", query) == expected


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"title": "nodule"}, id="starts-with-not-contains"),
        pytest.param({"title:exact": "étude poumon lyon"}, id="exact-is-case-sensitive"),
        pytest.param({"title:exact": "Étude"}, id="exact-is-whole-string"),
        pytest.param({"title": "_ammography"}, id="underscore-is-not-a-wildcard"),
        pytest.param({"title:contains": "%"}, id="percent-is-not-a-wildcard"),
    ],
)
def test_title_search_that_must_not_match(client: httpx.Client, query: dict[str, str]) -> None:
    assert _ids(client, "ResearchStudy", query) == set()


@pytest.mark.parametrize("status", ["active", "completed", "withdrawn", "active,completed"])
def test_status_search(client: httpx.Client, corpus: Corpus, status: str) -> None:
    wanted = status.split(",")
    expected = _dataset_ids(corpus, lambda r: r["status"] in wanted)
    assert _ids(client, "ResearchStudy", {"status": status}) == expected


def _period_range(resource: dict[str, Any]) -> tuple[Any, Any]:
    period = resource.get("period") or {}
    low = search_range(period["start"])[0] if "start" in period else search_range("0001")[0]
    high = search_range(period["end"])[1] if "end" in period else search_range("9999")[1]
    return low, high


@pytest.mark.parametrize(
    "query",
    [
        f"{p}{v}"
        for p in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
        for v in ("2019", "2016-01")
    ],
)
def test_dataset_period_date_prefixes(client: httpx.Client, corpus: Corpus, query: str) -> None:
    prefix, value = query[:2], query[2:]
    expected = _dataset_ids(corpus, lambda r: date_matches(prefix, _period_range(r), value))
    assert _ids(client, "ResearchStudy", {"date": query}) == expected


def test_revinclude_research_subjects(client: httpx.Client, corpus: Corpus) -> None:
    mammo = next(i for i, r in corpus.datasets.items() if r["title"].startswith("Mammo"))
    found = bundle(
        client.get("ResearchStudy", params={"_id": mammo, "_revinclude": "ResearchSubject:study"})
    )
    assert match_ids(found) == [mammo]
    included = entries_of_mode(found, "include")
    subjects = [ResearchSubject.model_validate(r.model_dump()) for r in included]
    assert sorted(str(s.id) for s in subjects) == sorted(corpus.subjects[mammo])
    assert {s.study.reference for s in subjects} == {f"ResearchStudy/{mammo}"}
    assert found.total == 1


def test_research_subjects_by_chained_study_title(client: httpx.Client, corpus: Corpus) -> None:
    mammo = next(i for i, r in corpus.datasets.items() if r["title"].startswith("Mammo"))
    found = _ids(client, "ResearchSubject", {"study:ResearchStudy.title": "mammo"})
    assert found == set(corpus.subjects[mammo])


# --- Patient --------------------------------------------------------------------------------


def _patients(client: httpx.Client, params: Any) -> set[str]:
    found = bundle(client.get("Patient", params={"_count": 100, **params}))
    out = set()
    for resource in matches(found):
        patient = Patient.model_validate(resource.model_dump())
        assert patient.name is None
        out.add(patient.identifier[0].value)
    return out


def test_patient_by_identifier(client: httpx.Client) -> None:
    assert _patients(client, {"identifier": "PAT-D"}) == {"PAT-D"}


@pytest.mark.parametrize(("gender", "code"), [("male", "M"), ("female", "F")])
def test_patient_by_gender(client: httpx.Client, gender: str, code: str) -> None:
    expected = {pid for pid, (sex, _) in PATIENTS.items() if sex == code}
    assert _patients(client, {"gender": gender}) == expected


@pytest.mark.parametrize("query", ["1960", "lt1960", "ge1970", "ne1955", "le1955"])
def test_patient_by_birth_year(client: httpx.Client, query: str) -> None:
    prefix, value = (query[:2], query[2:]) if query[0].isalpha() else ("eq", query)
    expected = {
        pid
        for pid, (_, birth) in PATIENTS.items()
        if date_matches(prefix, search_range(birth[:4]), value)
    }
    assert _patients(client, {"birthdate": query}) == expected


@pytest.mark.parametrize("sort", ["_id", "-_id"])
def test_walking_patient_pages_returns_every_patient_once_and_back(
    client: httpx.Client, sort: str
) -> None:
    """Patient pages are keyset pages over the grouped patients (each page groups only
    its own patients): every one once, in order, and ``previous`` gives the page back."""
    pages = walk(client, "Patient", {"_count": 2, "_sort": sort})
    ids = [i for page in pages for i in match_ids(page)]
    assert all(len(match_ids(p)) <= 2 for p in pages)
    assert len(ids) == len(set(ids)) == len(PATIENTS)
    assert ids == sorted(ids, reverse=sort.startswith("-"))
    second_url = link(pages[0], "next")
    assert second_url
    previous = link(bundle(client.get(second_url)), "previous")
    assert previous
    assert match_ids(bundle(client.get(previous))) == match_ids(pages[0])


def test_patient_shows_birth_year_only(client: httpx.Client) -> None:
    found = bundle(client.get("Patient", params={"identifier": "PAT-A"}))
    data = matches(found)[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    assert data["birthDate"] == PATIENTS["PAT-A"][1][:4]
    assert "name" not in data


# --- unknown and invalid parameters ---------------------------------------------------------


def test_unknown_parameter_is_ignored_with_a_warning(client: httpx.Client, corpus: Corpus) -> None:
    found = bundle(client.get("ImagingStudy", params={"colour": "blue", "modality": "PT"}))
    assert set(match_ids(found)) == corpus.uids(lambda s: "PT" in s.modalities)
    outcomes = entries_of_mode(found, "outcome")
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], OperationOutcome)
    assert any("colour" in (i.diagnostics or "") for i in outcomes[0].issue)
    self_link = link(found, "self")
    assert self_link and "colour" not in self_link and "modality=PT" in self_link


def test_unknown_parameter_with_strict_handling_is_400(client: httpx.Client) -> None:
    response = client.get(
        "ImagingStudy", params={"colour": "blue"}, headers={"Prefer": "handling=strict"}
    )
    found = outcome(response, 400)
    assert any("colour" in (i.diagnostics or "") for i in found.issue)


@pytest.mark.parametrize("value", ["2020-13-01", "2019-02-30", "yesterday", "gt20190101"])
def test_invalid_date_is_400(client: httpx.Client, value: str) -> None:
    outcome(client.get("ImagingStudy", params={"started": value}), 400)


def test_invalid_sort_key_is_400(client: httpx.Client) -> None:
    outcome(client.get("ImagingStudy", params={"_sort": "colour"}), 400)
