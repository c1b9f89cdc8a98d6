"""A third-party researcher's flow with fhirpy: find datasets by cancer type, page studies, open one.

The client only knows the FHIR base URL: datasets are created through FHIR, the DICOM
studies are pushed over DICOMweb into those datasets, and the image is fetched from the
DICOMweb root the ImagingStudy's Endpoint advertises.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhirpy import SyncFHIRClient

from tests.fhir.conftest import BREAST_CANCER, LUNG_CANCER, SNOMED, link, research_study
from tests.helpers import cohort
from tests.live import LiveServer

DATASET_STOW = "/datasets/{dataset}/dicom-web/studies"


@dataclass
class Federation:
    live: LiveServer
    breast: str = ""
    lung: str = ""
    studies: dict[str, list[pydicom.Dataset]] = field(default_factory=dict)  # dataset -> instances

    @property
    def fhir(self) -> SyncFHIRClient:
        return SyncFHIRClient(f"{self.live.url}/fhir")

    def study_uids(self, dataset: str | None = None) -> set[str]:
        keys = [dataset] if dataset else list(self.studies)
        return {str(ds.StudyInstanceUID) for k in keys for ds in self.studies[k]}


def _has_dataset_stow(live: LiveServer) -> bool:
    spec = httpx.get(f"{live.url}/openapi.json", timeout=30)
    return spec.status_code == 200 and DATASET_STOW in spec.json().get("paths", {})


def _new_dataset(client: SyncFHIRClient, title: str, cancer: str) -> str:
    body = {k: v for k, v in research_study(title, cancer).items() if k != "resourceType"}
    created = client.resource("ResearchStudy", **body)
    created.save()
    assert created.id
    ResearchStudy.model_validate(created.serialize())
    return str(created.id)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    data_dir: Path = tmp_path_factory.mktemp("fhir-flow") / "data"
    live = LiveServer(data_dir).start()
    fed = Federation(live)
    try:
        fed.breast = _new_dataset(fed.fhir, "Breast screening cohort", BREAST_CANCER)
        fed.lung = _new_dataset(fed.fhir, "Lung nodule registry", LUNG_CANCER)
        fed.studies = {fed.breast: cohort(patients=2), fed.lung: cohort(patients=3)}
        scoped = _has_dataset_stow(live)
        for dataset, instances in fed.studies.items():
            if scoped:
                root = f"{live.url}/datasets/{dataset}/dicom-web"
            else:  # no dataset-scoped STOW: the default dataset of a restarted gateway
                live.stop()
                live = LiveServer(data_dir, extra_env={"GATEWAY_DEFAULT_DATASET": dataset})
                fed.live = live.start()
                root = live.dicomweb
            DICOMwebClient(root).store_instances(instances)
        yield fed
    finally:
        fed.live.stop()


def test_capability_statement_lists_imaging_and_dataset_search_parameters(
    federation: Federation,
) -> None:
    raw = federation.fhir.execute("metadata", method="get")
    statement = CapabilityStatement.model_validate(raw)
    assert statement.fhirVersion == "4.0.1"
    resources = {r.type: r for rest in statement.rest or [] for r in rest.resource or []}
    imaging = {p.name for p in resources["ImagingStudy"].searchParam or []}
    assert {"started", "modality", "subject", "identifier", "bodysite", "dataset"} <= imaging
    datasets = {p.name for p in resources["ResearchStudy"].searchParam or []}
    assert {"title", "status", "date", "cancer-type"} <= datasets
    assert "ImagingStudy:subject" in (resources["ImagingStudy"].searchInclude or [])


@pytest.mark.parametrize("token", [BREAST_CANCER, f"{SNOMED}|{BREAST_CANCER}"])
def test_datasets_are_found_by_cancer_type(federation: Federation, token: str) -> None:
    raw = (
        federation.fhir.resources("ResearchStudy")
        .search(cancer_type=token, status="active")
        .fetch_raw()
    )
    found = Bundle.model_validate(raw)
    ids = [e.resource.id for e in found.entry or [] if e.search.mode == "match"]
    assert ids == [federation.breast]
    assert found.total == 1
    study = ResearchStudy.model_validate(found.entry[0].resource.model_dump())
    assert study.condition[0].coding[0].code == BREAST_CANCER


def test_lung_datasets_do_not_include_the_breast_one(federation: Federation) -> None:
    raw = federation.fhir.resources("ResearchStudy").search(cancer_type=LUNG_CANCER).fetch_raw()
    found = Bundle.model_validate(raw)
    assert [e.resource.id for e in found.entry or []] == [federation.lung]


def test_studies_of_a_dataset_are_exactly_those_stored_into_it(federation: Federation) -> None:
    for dataset in (federation.breast, federation.lung):
        raw = (
            federation.fhir.resources("ImagingStudy")
            .search(dataset=f"ResearchStudy/{dataset}")
            .limit(50)
            .fetch_raw()
        )
        found = Bundle.model_validate(raw)
        assert {e.resource.id for e in found.entry or []} == federation.study_uids(dataset)


def test_paging_studies_with_subjects_returns_each_study_once(federation: Federation) -> None:
    client = federation.fhir
    raw: dict[str, Any] | None = (
        client.resources("ImagingStudy").include("ImagingStudy", "subject").limit(2).fetch_raw()
    )
    seen: list[str] = []
    pages = 0
    while raw is not None:
        page = Bundle.model_validate(raw)
        pages += 1
        assert pages <= 10
        matched = [e.resource for e in page.entry or [] if e.search.mode == "match"]
        included = [e.resource for e in page.entry or [] if e.search.mode == "include"]
        assert len(matched) <= 2
        studies = [ImagingStudy.model_validate(r.model_dump()) for r in matched]
        subjects = {s.subject.reference for s in studies}
        for resource in included:
            patient = Patient.model_validate(resource.model_dump())
            assert f"Patient/{patient.id}" in subjects
        assert {f"Patient/{r.id}" for r in included} == subjects
        seen += [s.id for s in studies]
        nxt = link(page, "next")
        raw = client.execute(nxt, method="get") if nxt else None
    assert sorted(seen) == sorted(federation.study_uids())
    assert pages == 3


def test_endpoint_of_a_study_serves_its_instances_over_dicomweb(federation: Federation) -> None:
    client = federation.fhir
    uid = sorted(federation.study_uids(federation.lung))[0]
    study = ImagingStudy.model_validate(client.get("ImagingStudy", uid))
    endpoint_ref = study.endpoint[0].reference
    endpoint = Endpoint.model_validate(client.reference(reference=endpoint_ref).to_resource())
    assert endpoint.status == "active"
    assert endpoint.connectionType.code == "dicom-wado-rs"
    dicomweb = DICOMwebClient(endpoint.address)
    series = study.series[0]
    instance = series.instance[0]
    ds = dicomweb.retrieve_instance(uid, series.uid, instance.uid)
    assert ds.SOPInstanceUID == instance.uid
    assert ds.StudyInstanceUID == uid
    assert instance.sopClass.code == f"urn:oid:{ds.SOPClassUID}"
