"""Studies of one dataset for its administrators: list them, delete them (``imaging-gateway studies``).

The listing is the QIDO study-level search (PS3.18 10.6.1) narrowed to one dataset; a
deletion goes through the same DeleteService as ``DELETE /studies/{uid}``, so blobs are
removed only after the index change committed. A study outside the named dataset is
refused with the same message whether or not it exists elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from server.core.attributes import Level
from server.core.qido import parse_query
from server.errors import NotFound
from server.index.base import Index, Scope
from server.services.maintenance import DeleteService

_RETURN_KEYS = (
    "StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)  # fmt: skip


class ResourceReader(Protocol):
    def read(self, rtype: str, rid: str) -> tuple[Any, ...]: ...


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    patient: str
    study_date: str
    modalities: tuple[str, ...]
    series: int
    instances: int

    def to_json(self) -> dict[str, Any]:
        return {
            "studyInstanceUID": self.study_uid, "patientID": self.patient,
            "studyDate": self.study_date, "modalities": list(self.modalities),
            "series": self.series, "instances": self.instances,
        }  # fmt: skip


@dataclass(frozen=True)
class StudyPage:
    studies: list[StudySummary]
    has_more: bool


def _value(row: dict[str, Any], tag: str) -> list[Any]:
    return list(row.get(tag, {}).get("Value", []))


def _summary(row: dict[str, Any]) -> StudySummary:
    first = lambda tag, default: (_value(row, tag) or [default])[0]  # noqa: E731
    return StudySummary(
        study_uid=str(first("0020000D", "")),
        patient=str(first("00100020", "")),
        study_date=str(first("00080020", "")),
        modalities=tuple(str(m) for m in _value(row, "00080061")),
        series=int(first("00201206", 0)),
        instances=int(first("00201208", 0)),
    )


class DatasetStudies:
    """List and delete the studies of one dataset (administrators, in the operator's shell)."""

    def __init__(self, index: Index, deleter: DeleteService, resources: ResourceReader) -> None:
        self.index = index
        self.deleter = deleter
        self.resources = resources

    def _known(self, dataset: str) -> None:
        if self.resources.read("ResearchStudy", dataset)[0] is None:
            raise NotFound(f"dataset {dataset} is not known")

    def list(self, dataset: str, *, limit: int = 100, offset: int = 0) -> StudyPage:
        """PS3.18 10.6.1 study-level search within ``dataset`` (ordered as QIDO orders)."""
        self._known(dataset)
        pairs = [("includefield", key) for key in _RETURN_KEYS]
        pairs += [("limit", str(limit)), ("offset", str(offset))]
        query = parse_query(Level.STUDY, pairs, max_limit=10000)
        query = replace(query, datasets=frozenset({dataset}))
        page = self.index.search(query)
        return StudyPage([_summary(row) for row in page.rows], page.has_more)

    def delete(self, dataset: str, study_uid: str) -> int:
        """Delete one study of ``dataset``; the number of instances removed."""
        self._known(dataset)
        exists, owner = self.index.study_dataset(study_uid)
        if not exists or owner != dataset:  # one answer: no leak of other datasets' studies
            raise NotFound(f"no study {study_uid[:64]} in dataset {dataset}")
        return len(self.deleter.delete(Scope(study_uid)))
