"""Search parameters this server supports, per resource type (FHIR R4 3.1.1, and each resource's page).

One table: the parser validates against it, both translators implement exactly
these, and the CapabilityStatement is generated from it, so what is advertised is
what is implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ParamType(StrEnum):
    TOKEN = "token"
    STRING = "string"
    DATE = "date"
    REFERENCE = "reference"
    URI = "uri"


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: ParamType
    documentation: str
    targets: tuple[str, ...] = ()
    definition: str | None = None  # canonical URL for our custom parameters


BASE = "http://hl7.org/fhir/SearchParameter"
OURS = "https://cancer-imaging-gateway.eu/fhir/SearchParameter"
T, S, D, R = ParamType.TOKEN, ParamType.STRING, ParamType.DATE, ParamType.REFERENCE


def _p(
    name: str, type_: ParamType, doc: str, *targets: str, ours: str | None = None
) -> SearchParam:
    return SearchParam(name, type_, doc, targets, f"{OURS}/{ours}" if ours else None)


COMMON = {
    "_id": _p("_id", T, "Logical id of the resource"),
    "_lastUpdated": _p("_lastUpdated", D, "When the resource last changed"),
}

PARAMS: dict[str, dict[str, SearchParam]] = {
    "ImagingStudy": {p.name: p for p in (
        _p("identifier", T, "Study Instance UID (urn:oid:...) or Accession Number"),
        _p("patient", R, "The pseudonymous patient imaged", "Patient"),
        _p("subject", R, "Who the study is about", "Patient"),
        _p("started", D, "When the study started (StudyDate/StudyTime)"),
        _p("modality", T, "A modality of the study's series (DICOM DCM code)"),
        _p("bodysite", T, "Body part examined of a series (SNOMED CT, or the DICOM term)"),
        _p("series", T, "Series Instance UID of a series"),
        _p("instance", T, "SOP Instance UID of an instance"),
        _p("dicom-class", T, "SOP Class UID of an instance (urn:oid:...)"),
        _p("endpoint", R, "The endpoint that serves the study", "Endpoint"),
        _p("status", T, "Study status (always 'available' here)"),
        _p("dataset", R, "The dataset (ResearchStudy) the study belongs to", "ResearchStudy", ours="imagingstudy-dataset"),
    )},
    "Patient": {p.name: p for p in (
        _p("identifier", T, "Patient ID as stored in the DICOM data"),
        _p("gender", T, "Administrative gender"),
        _p("birthdate", D, "Birth year"),
    )},
    "Endpoint": {p.name: p for p in (
        _p("connection-type", T, "Protocol of the endpoint"),
        _p("status", T, "Endpoint status"),
    )},
    "ResearchStudy": {p.name: p for p in (
        _p("identifier", T, "Business identifier of the dataset"),
        _p("title", S, "Name of the dataset"),
        _p("status", T, "Dataset status"),
        _p("category", T, "Classification of the dataset"),
        _p("focus", T, "Drugs, devices, conditions etc. under study"),
        _p("keyword", T, "Keywords of the dataset"),
        _p("date", D, "When the dataset's data were collected (period)"),
        _p("partof", R, "Larger dataset this one is part of", "ResearchStudy"),
        _p("sponsor", R, "Organisation that provides the dataset", "Organization"),
        _p("site", R, "Where the data come from", "Location"),
        _p("cancer-type", T, "Cancer type (SNOMED CT) in ResearchStudy.condition", ours="researchstudy-cancer-type"),
        _p("modality", T, "Imaging modality in the dataset (DCM)", ours="researchstudy-modality"),
        _p("access-condition", T, "EUCAIM access condition", ours="researchstudy-access-condition"),
    )},
    "Group": {p.name: p for p in (
        _p("identifier", T, "Business identifier of the cohort"),
        _p("member", R, "Member of the cohort", "Patient"),
        _p("characteristic", T, "Kind of characteristic"),
        _p("type", T, "Kind of members"),
    )},
    "AuditEvent": {p.name: p for p in (
        _p("date", D, "When the access happened"),
        _p("agent", T, "Client id of the caller"),
        _p("entity", T, "What was accessed: a dataset id, ImagingStudy/<uid>, study:<uid>"),
        _p("outcome", T, "0 success, 4 refused, 8 server error"),
        _p("subtype", T, "The gateway's action: search, retrieve, metadata, store, read, ..."),
    )},
    "Contract": {p.name: p for p in (
        _p("identifier", T, "Business identifier of the agreement"),
        _p("status", T, "Agreement status (executed = active)"),
        _p("subject", R, "The datasets the agreement covers", "ResearchStudy"),
        _p("party", R, "Who the agreement grants access to", "Organization"),
    )},
    "ResearchSubject": {p.name: p for p in (
        _p("identifier", T, "Business identifier"),
        _p("study", R, "The dataset the subject belongs to", "ResearchStudy"),
        _p("individual", R, "The patient", "Patient"),
        _p("patient", R, "The patient", "Patient"),
        _p("status", T, "Subject status"),
    )},
}  # fmt: skip

# R5 names accepted as aliases of the R4 ones.
ALIASES = {"based-on": "basedon", "body-site": "bodysite", "part-of": "partof"}

# Which _include/_revinclude each type supports: (source type, param) -> target type.
INCLUDES: dict[tuple[str, str], str] = {
    ("ImagingStudy", "subject"): "Patient",
    ("ImagingStudy", "patient"): "Patient",
    ("ImagingStudy", "endpoint"): "Endpoint",
    ("ImagingStudy", "dataset"): "ResearchStudy",
    ("ResearchSubject", "study"): "ResearchStudy",
    ("ResearchSubject", "individual"): "Patient",
    ("ResearchSubject", "patient"): "Patient",
    ("ResearchStudy", "partof"): "ResearchStudy",
    ("Group", "member"): "Patient",
}

SORTS: dict[str, tuple[str, ...]] = {
    "ImagingStudy": ("started", "_lastUpdated", "_id"),
    "ResearchStudy": ("title", "date", "_lastUpdated", "_id"),
    "Patient": ("_id", "birthdate"),
    "Group": ("_lastUpdated", "_id"),
    "ResearchSubject": ("_lastUpdated", "_id"),
    "Contract": ("_lastUpdated", "_id"),
    "AuditEvent": ("_id",),
    "Endpoint": ("_id",),
}

# Modifiers each translator implements (FHIR R4 3.1.1.5): the parser refuses any other
# with a 400, so no translator ever sees a modifier it does not handle.
_STORED_MODIFIERS: dict[ParamType, frozenset[str]] = {
    ParamType.TOKEN: frozenset({"not", "missing", "text"}),
    ParamType.STRING: frozenset({"exact", "contains", "missing"}),
    ParamType.DATE: frozenset({"missing"}),
    ParamType.REFERENCE: frozenset({"missing"}),
    ParamType.URI: frozenset({"missing"}),
}
_NOT = frozenset({"not"})
_DERIVED_MODIFIERS: dict[str, dict[str, frozenset[str]]] = {
    "ImagingStudy": {
        **{n: _NOT for n in ("_id", "modality", "bodysite", "series", "instance", "dicom-class", "status")},
        "identifier": frozenset({"not", "missing"}),
        "started": frozenset({"missing"}),
        "dataset": frozenset({"missing"}),
    },
    "Patient": {"_id": _NOT, "identifier": frozenset({"not", "missing"}),
                "gender": frozenset({"not", "missing"}), "birthdate": frozenset({"missing"})},
    "Endpoint": {"_id": _NOT, "status": _NOT, "connection-type": _NOT},
}  # fmt: skip


def modifiers_of(resource_type: str, param: SearchParam) -> frozenset[str]:
    """The modifiers this server implements on ``param`` of ``resource_type``."""
    if resource_type in _DERIVED_MODIFIERS:
        return _DERIVED_MODIFIERS[resource_type].get(param.name, frozenset())
    if resource_type not in WRITABLE or param.name == "_lastUpdated":
        return frozenset()  # AuditEvent and the conformance resources: plain values only
    if param.name == "_id":
        return _NOT
    return _STORED_MODIFIERS[param.type]


WRITABLE = ("ResearchStudy", "Group", "ResearchSubject", "Contract")
DERIVED = ("ImagingStudy", "Patient", "Endpoint", "AuditEvent")


# Derived from the DICOM index without a change time of their own: no _lastUpdated.
NO_LAST_UPDATED = ("Patient", "Endpoint")


def params_of(resource_type: str) -> dict[str, SearchParam]:
    common = {k: p for k, p in COMMON.items()
              if not (k == "_lastUpdated" and resource_type in NO_LAST_UPDATED)}  # fmt: skip
    return {**common, **PARAMS.get(resource_type, {})}
