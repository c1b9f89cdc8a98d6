"""FHIR resources derived from the DICOM index (ImagingStudy, Patient) and the live
catalogue figures of datasets (ResearchStudy extensions), within what the caller may see."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from server.core.disclosure import floor_count
from server.core.fhir import imaging
from server.core.fhir.conformance import Conformance
from server.core.fhir.search import SearchRequest
from server.errors import InvalidQuery
from server.index.fhir_dicom import DicomFhirQueries, StudyRow
from server.index.fhir_es import EsFhirQueries
from server.index.fhir_store import Version

ENDPOINT_ID = "dicomweb"
EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
BODY_PART_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/CodeSystem/dicom-body-part-examined"
_COMPUTED = {f"{EXT}/{n}" for n in ("dataset-number-of-subjects", "dataset-number-of-studies",
                                    "dataset-modality", "dataset-body-part", "dataset-manufacturer")}  # fmt: skip


class DerivedResources:
    def __init__(
        self, queries: DicomFhirQueries | EsFhirQueries, conformance: Conformance, min_cell: int
    ) -> None:
        self.queries = queries
        self.conformance = conformance
        self.min_cell = min_cell

    def imaging_studies(
        self, rows: list[StudyRow], with_instances: bool = True
    ) -> list[dict[str, Any]]:
        series = self.queries.series_of([r.pk for r in rows], with_instances)
        return [
            imaging.imaging_study(
                r.json,
                series[r.pk],
                endpoint_id=ENDPOINT_ID,
                dataset_id=r.dataset,
                patient_key=r.patient_key,
                body_site=self._body_site,
                laterality=self._laterality,
                last_updated=instant(r.updated),
            )
            for r in rows
        ]

    def patient(self, row: StudyRow) -> dict[str, Any]:
        return imaging.patient(
            row.json, patient_key=row.patient_key, last_updated=instant(row.updated)
        )

    def _body_site(self, term: str) -> dict[str, Any] | None:
        coding = self.conformance.body_site(term)
        return dict(coding) if coding else None

    def _laterality(self, term: str) -> dict[str, Any] | None:
        coding = self.conformance.laterality(term)
        return dict(coding) if coding else None

    def with_statistics(
        self, studies: list[dict[str, Any]], exact: Callable[[str], bool]
    ) -> list[dict[str, Any]]:
        """Datasets with their catalogue extensions computed live from the DICOM index.

        Number of subjects/studies, modalities, body parts and manufacturers always
        reflect what is stored; values of those extensions sent by a client are replaced.
        Where ``exact(dataset)`` is false (no row-level access), the numbers obey the
        minimum cell count.
        """
        stats = self.queries.dataset_statistics([r["id"] for r in studies])
        out = []
        for r in studies:
            figures = dict(stats[r["id"]])
            if not exact(r["id"]):
                for key in ("subjects", "studies"):
                    figures[key] = floor_count(figures[key], self.min_cell)
            out.append(_add_statistics(r, figures))
        return out


def _add_statistics(resource: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    kept = [e for e in resource.get("extension", []) if e.get("url") not in _COMPUTED]
    computed = [
        {"url": f"{EXT}/dataset-number-of-subjects", "valueInteger": stats["subjects"]},
        {"url": f"{EXT}/dataset-number-of-studies", "valueInteger": stats["studies"]},
    ]
    computed += [{"url": f"{EXT}/dataset-modality", "valueCoding": {"system": imaging.DCM, "code": m}}
                 for m in stats["modalities"]]  # fmt: skip
    computed += [{"url": f"{EXT}/dataset-body-part", "valueCoding": {"system": BODY_PART_SYSTEM, "code": b}}
                 for b in stats["body_parts"]]  # fmt: skip
    computed += [
        {"url": f"{EXT}/dataset-manufacturer", "valueString": m} for m in stats["manufacturers"]
    ]
    return {**resource, "extension": kept + computed}


def id_matches(resource: Any, req: SearchRequest) -> bool:
    """Conformance resources are searchable by ``_id`` only (other parameters are unknown)."""
    for c in req.criteria:
        if c.param.name != "_id":
            raise InvalidQuery(f"{req.resource_type} can be searched by _id only", c.param.name)
        if not any(getattr(v, "code", None) == resource.get("id") for v in c.values):
            return False
    return True


def endpoint_matches(resource: dict[str, Any], req: SearchRequest) -> bool:
    fields = {
        "_id": resource["id"],
        "status": resource["status"],
        "connection-type": resource["connectionType"]["code"],
    }
    for c in req.criteria:
        codes = {getattr(v, "code", None) for v in c.values}
        hit = fields.get(c.param.name) in codes
        if hit == (c.modifier == "not"):
            return False
    return True


def history_entry(base: str, rtype: str, rid: str | None, v: Version) -> dict[str, Any]:
    resource_id = v.id or rid
    entry: dict[str, Any] = {"fullUrl": f"{base}/{rtype}/{resource_id}"}
    if v.resource is not None:
        entry["resource"] = v.resource
    entry["request"] = {
        "method": v.method,
        "url": f"{rtype}/{resource_id}" if v.method != "POST" else rtype,
    }
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[v.method]
    entry["response"] = {
        "status": status,
        "etag": f'W/"{v.version}"',
        "lastModified": v.last_updated,
    }
    return entry


def instant(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
