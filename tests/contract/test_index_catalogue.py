"""The catalogue aggregations of a dataset (``dataset_statistics``), the same on every backend:
what the FAIR Data Point publishes as EUCAIM DCAT-AP figures."""

from __future__ import annotations

from collections.abc import Callable

from server.core.records import InstanceRecord
from server.index.base import Index
from server.index.elasticsearch import ElasticsearchIndex
from server.index.fhir_dicom import DicomFhirQueries
from server.index.fhir_es import EsFhirQueries
from server.index.sqlite import SqliteIndex


def _queries(index: Index) -> DicomFhirQueries | EsFhirQueries:
    if isinstance(index, SqliteIndex):
        return DicomFhirQueries(index.db, "dicomweb", lambda code: [])
    assert isinstance(index, ElasticsearchIndex)
    return EsFhirQueries(index.es, index.names, "dicomweb", lambda code: [])


def test_dataset_statistics(index: Index, record_of: Callable[..., InstanceRecord]) -> None:
    def rec(dataset: str, patient: str, study: str, **attrs: object) -> InstanceRecord:
        r = record_of(StudyInstanceUID=study, PatientID=patient, **attrs)
        r.dataset, r.patient_key = dataset, f"p-{patient}"
        return r

    records = [
        rec("a", "1", "1.2.3.1", PatientSex="F", StudyDate="20190304", Modality="MR",
            Manufacturer="SIEMENS", BodyPartExamined="BREAST"),
        rec("a", "1", "1.2.3.2", PatientSex="F", StudyDate="20210101", Modality="CT",
            Manufacturer="GE MEDICAL SYSTEMS", BodyPartExamined="CHEST"),
        rec("a", "2", "1.2.3.3", StudyDate="20200505", Modality="MR", Manufacturer="SIEMENS"),
        rec("b", "3", "1.2.3.4", PatientSex="M", Modality="PT"),
    ]  # fmt: skip
    index.add_instances(records, overwrite=False)
    stats = _queries(index).dataset_statistics(["a", "b", "empty"])
    a, b, empty = stats["a"], stats["b"], stats["empty"]
    assert (a["studies"], a["subjects"]) == (3, 2)
    assert sorted(a["sexes"]) == ["", "F"]  # '' = PatientSex absent
    assert sorted(a["modalities"]) == ["CT", "MR"]
    assert sorted(a["manufacturers"]) == ["GE MEDICAL SYSTEMS", "SIEMENS"]
    assert sorted(a["body_parts"]) == ["BREAST", "CHEST"]
    assert (a["first_date"], a["last_date"]) == ("20190304", "20210101")
    assert (b["studies"], b["subjects"], b["sexes"]) == (1, 1, ["M"])
    assert (b["first_date"], b["last_date"]) == (None, None)
    assert (empty["studies"], empty["subjects"], empty["sexes"], empty["modalities"]) == (
        0,
        0,
        [],
        [],
    )
