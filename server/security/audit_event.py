"""The FHIR R4 AuditEvent of one access record (IHE BALP style), and its search columns.

An event is rendered once, when it is written, and stored (hash-chained) exactly as
rendered: what a search or read serves is that stored event. Every code system an
event uses is either a FHIR/HL7 one the HL7 validator knows, DICOM's (DCM), or one this
gateway serves (``terminology/CodeSystem-access-action.json`` for the gateway's
actions, kept equal to :data:`ACTIONS` by a test).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

CLIENT_ID_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/sid/client-id"
ACTION_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/CodeSystem/access-action"
EVENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
# PurposeOfUse codes (HRESCH, ...) are concepts of ActReason; there is no v3-PurposeOfUse CodeSystem
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPE_SYSTEM = "http://hl7.org/fhir/resource-types"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"

REQUEST_ID_DETAIL = "request-id"  # entity.detail.type on the request entity: X-Request-ID
# agent.policy of an access granted other than by an agreement (data holder, admin, public)
BASIS_POLICY = "https://cancer-imaging-gateway.eu/fhir/access-basis#"
DEID_DETAIL = "deidentification"  # entity.detail.type: the DeidRecord JSON of a stored instance

OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}

# gateway action -> (restful-interaction code, AuditEvent.action); BALP records queries as E.
_INTERACTIONS: dict[str, tuple[str, str]] = {
    "search": ("search-type", "E"),
    "count": ("search-type", "E"),
    "catalogue": ("read", "R"),
    "read": ("read", "R"),
    "vread": ("vread", "R"),
    "history": ("history-instance", "R"),
    "metadata": ("read", "R"),
    "retrieve": ("read", "R"),
    "store": ("create", "C"),
    "create": ("create", "C"),
    "update": ("update", "U"),
    "patch": ("patch", "U"),
    "delete": ("delete", "D"),
    "token": ("operation", "E"),
    "associate": ("operation", "E"),
    "export": ("operation", "E"),
    "export-download": ("read", "R"),
}
# The codes of the gateway's access-action CodeSystem (terminology/CodeSystem-access-action.json).
ACTIONS: dict[str, str] = {
    "search": "A search (QIDO-RS, FHIR search)",
    "count": "An aggregate answer (a count, catalogue figures)",
    "catalogue": "Reading a dataset description",
    "read": "A read of one resource",
    "vread": "A read of one version of a resource",
    "history": "A read of the history of a resource",
    "metadata": "A read of DICOM metadata (WADO-RS metadata)",
    "retrieve": "A retrieval of instances, frames, bulk data or rendered images (WADO-RS)",
    "store": "A store of DICOM instances (STOW-RS)",
    "create": "A create",
    "update": "An update",
    "patch": "A patch",
    "delete": "A delete",
    "token": "A request for an access token",
    "admin": "An administrative action (datasets, agreements, clients, audit)",
    "associate": "A DICOM association request (DIMSE A-ASSOCIATE)",
    "export": "A FHIR bulk export: its kick-off, status requests and completion",
    "export-download": "A download of a FHIR bulk export file",
}
# anything else (e.g. "admin") is classified by its HTTP method
_BY_METHOD: dict[str, tuple[str, str]] = {
    "GET": ("read", "R"),
    "HEAD": ("read", "R"),
    "POST": ("create", "C"),
    "PUT": ("update", "U"),
    "PATCH": ("patch", "U"),
    "DELETE": ("delete", "D"),
}
_DICOM_KINDS = {
    "study": "Study Instance UID",
    "series": "Series Instance UID",
    "instance": "SOP Instance UID",
}
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_DATASET = "dataset"


@dataclass(frozen=True)
class AccessRecord:
    """One access or refused attempt, as the enforcement layer reports it."""

    action: str  # e.g. "search", "retrieve", "store", "read", "create", "token", "admin"
    outcome: int  # 0 success, 4 minor failure (refused by policy), 8 serious failure (5xx)
    http_status: int
    method: str  # HTTP method
    path: str  # request path (no query string)
    query: str | None  # query string
    source_address: str | None
    client_id: str | None
    subject: str | None  # user subject (external identity) if any
    agreements: tuple[str, ...] = ()  # Contract ids that granted the access
    purpose: str | None = None  # v3 PurposeOfUse code
    datasets: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()  # "ImagingStudy/1.2.3", "study:1.2.3", "instance:..."
    recorded: float | None = None  # epoch seconds; filled in by the log if None
    issuer: str | None = None  # identity provider of ``subject``, if known
    request_id: str | None = None  # the X-Request-ID of the HTTP request (access log join)
    # outcome in the caller's protocol when it is not HTTP, e.g. "DIMSE status 0xA900";
    # ``http_status`` then holds the HTTP equivalent (for searches by status)
    outcome_text: str | None = None
    # (stored SOP Instance UID, DeidRecord JSON) of each instance an ingest stored: what
    # de-identification did (names of attributes, never values)
    deidentified: tuple[tuple[str, str], ...] = ()
    # why the caller may use the datasets: "agreement", "data-holder", "admin", "public"
    bases: tuple[str, ...] = ()


# -- the AuditEvent ---------------------------------------------------------------------------


def instant(epoch: float) -> str:
    """A FHIR instant in UTC with microseconds; sorts as text in time order."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _network(address: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return {"address": address, "type": "1"}  # machine name
    return {"address": address, "type": "2"}  # IP address


def _entity(value: str) -> dict[str, Any]:
    if _REFERENCE.match(value):
        return {
            "what": {"reference": value},
            "type": _coding(RESOURCE_TYPE_SYSTEM, value.split("/", 1)[0]),
            "role": _coding(OBJECT_ROLE_SYSTEM, "4", "Domain Resource"),
        }
    kind, _, uid = value.partition(":")
    if kind in _DICOM_KINDS and uid:
        return {
            "what": {
                "identifier": {
                    "type": {"text": _DICOM_KINDS[kind]},
                    "system": DICOM_UID_SYSTEM,
                    "value": f"urn:oid:{uid}",
                }
            },
            "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
            "name": value,
            "description": f"DICOM {kind}",
        }
    return {
        "what": {"identifier": {"value": value}},
        "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
        "name": value,
    }


def _deidentified(sop_uid: str, deid: str) -> dict[str, Any]:
    """A stored instance with its de-identification record (DICOM PS3.15 Annex E)."""
    entity = _entity(f"instance:{sop_uid}")
    entity["detail"] = [{"type": DEID_DETAIL, "valueString": deid}]
    return entity


def audit_event(record: AccessRecord, *, event_id: str, observer: str) -> dict[str, Any]:
    """The FHIR R4 AuditEvent (as JSON-ready dict) for one access record."""
    if record.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {record.outcome!r}")
    method = record.method.upper()
    interaction, crude = _INTERACTIONS.get(record.action) or _BY_METHOD.get(
        method, ("operation", "E")
    )
    try:
        phrase = HTTPStatus(record.http_status).phrase
    except ValueError:
        phrase = ""
    policy = [f"Contract/{agreement}" for agreement in record.agreements] + [
        BASIS_POLICY + basis for basis in record.bases if basis != "agreement"
    ]

    client: dict[str, Any] = {
        "type": {"coding": [_coding(DCM_SYSTEM, "110153", "Source Role ID")]},
        "who": (
            {"identifier": {"system": CLIENT_ID_SYSTEM, "value": record.client_id}}
            if record.client_id
            else {"display": "anonymous"}
        ),
        "requestor": True,
    }
    if record.source_address:
        client["network"] = _network(record.source_address)
    agents: list[dict[str, Any]] = [client]
    if record.subject:
        identifier = {"value": record.subject}
        if record.issuer:
            identifier["system"] = record.issuer
        agents.append(
            {
                "type": {
                    "coding": [_coding(PARTICIPATION_SYSTEM, "IRCP", "information recipient")]
                },
                "who": {"identifier": identifier},
                "requestor": True,
            }
        )
    if policy:  # on the party the agreements were granted to: the user if any, else the client
        agents[-1]["policy"] = policy
    agents.append(
        {
            "type": {"coding": [_coding(DCM_SYSTEM, "110152", "Destination Role ID")]},
            "who": {"display": observer},
            "requestor": False,
        }
    )

    request: dict[str, Any] = {
        "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
        "description": f"{method} {record.path}",
    }
    if record.request_id:
        request["detail"] = [{"type": REQUEST_ID_DETAIL, "valueString": record.request_id}]
    if record.query:
        request["role"] = _coding(OBJECT_ROLE_SYSTEM, "24", "Query")
        request["query"] = base64.b64encode(record.query.encode()).decode("ascii")
    entities: list[dict[str, Any]] = [request]
    entities.extend(
        {
            "what": {"reference": f"ResearchStudy/{dataset}"},
            "type": _coding(RESOURCE_TYPE_SYSTEM, "ResearchStudy"),
            "role": _coding(OBJECT_ROLE_SYSTEM, "4", "Domain Resource"),
            "description": _DATASET,
        }
        for dataset in record.datasets
    )
    entities.extend(_entity(value) for value in record.entities)
    entities.extend(_deidentified(uid, deid) for uid, deid in record.deidentified)

    recorded = instant(time.time() if record.recorded is None else record.recorded)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "meta": {"lastUpdated": recorded},
        "type": _coding(EVENT_TYPE_SYSTEM, "rest", "Restful Operation"),
        "subtype": [_coding(INTERACTION_SYSTEM, interaction)],
        "action": crude,
        "recorded": recorded,
        "outcome": str(record.outcome),
        "outcomeDesc": record.outcome_text or f"HTTP {record.http_status} {phrase}".rstrip(),
        "agent": agents,
        "source": {
            "observer": {"display": observer},
            "type": [_coding(SOURCE_TYPE_SYSTEM, "4", "Application Server")],
        },
        "entity": entities,
    }
    if record.action in ACTIONS:  # an unknown action keeps the interaction code only
        event["subtype"].append(_coding(ACTION_SYSTEM, record.action))
    if record.purpose:
        event["purposeOfEvent"] = [{"coding": [_coding(PURPOSE_SYSTEM, record.purpose)]}]
    return event


def joined(values: list[str]) -> str:
    """Index text for a set of values: each between newlines, so ``instr`` finds exact ones."""
    return "\n" + "\n".join(values) + "\n" if values else ""


def needle(value: str) -> str:
    return f"\n{value}\n"


def index_values(event: dict[str, Any]) -> tuple[Any, ...]:
    """The search columns of an event, taken from the event itself (so verify can recheck them)."""
    client_id = subject = action = None
    for agent in event.get("agent", []):
        identifier = agent.get("who", {}).get("identifier") or {}
        codes = {c.get("code") for c in agent.get("type", {}).get("coding", [])}
        if identifier.get("system") == CLIENT_ID_SYSTEM:
            client_id = identifier.get("value")
        elif "IRCP" in codes:
            subject = identifier.get("value")
    for coding in event.get("subtype", []):
        if coding.get("system") == ACTION_SYSTEM:
            action = coding.get("code")
    datasets: list[str] = []
    entities: list[str] = []
    for entity in event.get("entity", []):
        reference = entity.get("what", {}).get("reference")
        if entity.get("description") == _DATASET and reference:
            datasets.append(reference.split("/", 1)[1])
        elif entity.get("name"):
            entities.append(entity["name"])
        elif reference:
            entities.append(reference)
    outcome = event.get("outcome")
    return (
        client_id,
        subject,
        action,
        int(outcome) if outcome is not None else None,
        event.get("recorded"),
        joined(datasets),
        joined(entities),
    )
