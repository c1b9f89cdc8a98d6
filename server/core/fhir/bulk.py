"""FHIR Bulk Data Access v2.0.0 export: kick-off parameters and the completion manifest.

Pure logic (no web, database or file access): the HTTP edge hands the kick-off's query
parameters and ``Prefer`` header to :func:`parse_kickoff`, the service stores the
resulting :class:`ExportRequest` with the job and renders :func:`manifest` when done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, unquote

from server.errors import BadRequest, InvalidQuery

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
CAPABILITY_URL = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
OPERATION_URLS = {
    "system": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "patient": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    "group": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
}


class Level(StrEnum):
    SYSTEM = "system"
    PATIENT = "patient"
    GROUP = "group"


# Resource types an export writes, in this order. The patient compartment (Patient and
# Group exports) holds the patients, their imaging studies and their study enrolments;
# a system export adds the datasets themselves.
PATIENT_TYPES = ("Patient", "ImagingStudy", "ResearchSubject")
SYSTEM_TYPES = ("ResearchStudy", *PATIENT_TYPES)
TYPES = {Level.SYSTEM: SYSTEM_TYPES, Level.PATIENT: PATIENT_TYPES, Level.GROUP: PATIENT_TYPES}
# Search parameters a _typeFilter may not carry (Bulk Data v2.0.0: no _include, _sort;
# paging and rendering are the export's business).
_FILTER_FORBIDDEN = frozenset(
    {"_include", "_revinclude", "_sort", "_count", "_summary", "_elements", "_total",
     "_cursor", "_format", "_pretty", "_contained", "_containedType"}
)  # fmt: skip
KNOWN = frozenset({"_outputFormat", "_type", "_since", "_elements", "_typeFilter"})
# Known to the specification but not supported here: a 400 in strict handling, ignored
# (and reported) in lenient handling.
UNSUPPORTED = frozenset({"patient", "includeAssociatedData", "_until", "organizeOutputBy"})


@dataclass(frozen=True)
class TypeFilter:
    resource_type: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ExportRequest:
    """One kick-off request, parsed (stored with its job as JSON)."""

    level: Level
    group: str | None
    types: tuple[str, ...]
    since: str | None  # a FHIR instant, normalised to UTC ``...Z``
    elements: tuple[str, ...]  # ``Type.elem`` or ``elem``, as sent
    type_filters: tuple[TypeFilter, ...] = ()
    ignored: tuple[str, ...] = ()  # parameters ignored under Prefer: handling=lenient
    types_named: bool = False  # _type was sent (else: every type the token's scope allows)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        filters = tuple(
            TypeFilter(f["resource_type"], tuple((k, v) for k, v in f["pairs"]))
            for f in data.get("type_filters", ())
        )
        return cls(
            level=Level(data["level"]),
            group=data.get("group"),
            types=tuple(data["types"]),
            since=data.get("since"),
            elements=tuple(data.get("elements", ())),
            type_filters=filters,
            ignored=tuple(data.get("ignored", ())),
            types_named=bool(data.get("types_named")),
        )

    def elements_for(self, rtype: str) -> tuple[str, ...]:
        """The ``_elements`` that apply to ``rtype`` (``Type.elem`` for it, and bare ``elem``)."""
        out = []
        for e in self.elements:
            owner, _, name = e.rpartition(".")
            if not owner or owner == rtype:
                out.append(name)
        return tuple(out)

    def filters_for(self, rtype: str) -> list[tuple[tuple[str, str], ...]]:
        """The searches of ``rtype``'s ``_typeFilter`` entries (OR-ed); [()] = no filter."""
        found = [f.pairs for f in self.type_filters if f.resource_type == rtype]
        return found or [()]


def prefers(prefer: str | None) -> tuple[bool, bool]:
    """(respond-async, lenient) from a ``Prefer`` header (RFC 7240)."""
    tokens = {t.strip().lower().replace(" ", "") for t in (prefer or "").split(",")}
    tokens |= {p.strip() for t in list(tokens) for p in t.split(";")}
    return "respond-async" in tokens, "handling=lenient" in tokens


def _split(values: list[str]) -> list[str]:
    """Bulk Data 2.0.0: a comma-delimited parameter may also be repeated; one list."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def parameters_pairs(data: Any) -> list[tuple[str, str]]:
    """Bulk Data v2.0.0 POST kick-off: the (name, value) pairs of a FHIR Parameters body,
    checked as the query of a GET kick-off is. A ``valueReference`` gives its reference
    (``patient``, which this server does not support: 400 unless lenient)."""
    if not isinstance(data, dict) or data.get("resourceType") != "Parameters":
        raise BadRequest("a POST kick-off body is a FHIR Parameters resource")
    parameters = data.get("parameter", [])
    if not isinstance(parameters, list):
        raise BadRequest("Parameters.parameter must be a list")
    pairs: list[tuple[str, str]] = []
    for p in parameters:
        name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest("every Parameters.parameter needs a name")
        values = [(k, v) for k, v in p.items() if k.startswith("value")]
        if len(values) != 1:
            raise InvalidQuery(f"parameter {name!r} needs exactly one value[x]", name)
        kind, value = values[0]
        if kind == "valueReference" and isinstance(value, dict):
            value = value.get("reference")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str):
            raise InvalidQuery(f"parameter {name!r}: {kind} is not a text value", name)
        pairs.append((name, value))
    return pairs


def parse_kickoff(
    level: Level,
    group: str | None,
    pairs: list[tuple[str, str]],
    prefer: str | None,
) -> ExportRequest:
    """Bulk Data v2.0.0 kick-off request: parameters checked, a clear 400 for anything else."""
    asynchronous, lenient = prefers(prefer)
    if not asynchronous:
        raise BadRequest("a bulk export needs the header 'Prefer: respond-async'")
    by_name: dict[str, list[str]] = {}
    ignored: list[str] = []
    for key, value in pairs:
        if key in ("_format", "_pretty"):
            continue
        if key not in KNOWN:
            what = "is not supported" if key in UNSUPPORTED else "is not a $export parameter"
            if not lenient:
                raise InvalidQuery(f"{key} {what} (Prefer: handling=lenient ignores it)", key)
            ignored.append(key)
            continue
        by_name.setdefault(key, []).append(value)
    for fmt in _split(by_name.get("_outputFormat", [])):
        if fmt not in OUTPUT_FORMATS:
            raise InvalidQuery(
                f"_outputFormat {fmt!r}: this server writes {NDJSON} only", "_outputFormat"
            )
    allowed = TYPES[level]
    types = _types(_split(by_name.get("_type", [])), allowed, lenient, ignored)
    since = parse_instant(by_name["_since"][-1]) if by_name.get("_since") else None
    elements = tuple(_split(by_name.get("_elements", [])))
    for e in elements:
        owner, _, name = e.rpartition(".")
        if not name or (owner and owner not in allowed) or "." in owner:
            raise InvalidQuery(f"_elements {e!r}: use 'Type.element' or 'element'", "_elements")
    filters = tuple(_type_filter(f, types) for f in _split(by_name.get("_typeFilter", [])))
    named = bool(by_name.get("_type"))
    return ExportRequest(level, group, types, since, elements, filters, tuple(ignored), named)


def _types(
    asked: list[str], allowed: tuple[str, ...], lenient: bool, ignored: list[str]
) -> tuple[str, ...]:
    if not asked:
        return allowed
    out: list[str] = []
    for rtype in asked:
        if rtype not in allowed:
            if not lenient:
                raise InvalidQuery(
                    f"_type {rtype!r} is not exported here (supported: {', '.join(allowed)})",
                    "_type",
                )
            ignored.append(f"_type={rtype}")
            continue
        if rtype not in out:
            out.append(rtype)
    return tuple(t for t in allowed if t in out)


def _type_filter(text: str, types: tuple[str, ...]) -> TypeFilter:
    """``ImagingStudy%3Fmodality%3DCT`` → a search of ImagingStudy (Bulk Data _typeFilter)."""
    query = unquote(text) if "?" not in text else text
    rtype, sep, rest = query.partition("?")
    if not sep or not rtype:
        raise InvalidQuery(f"_typeFilter {text!r} is not 'Type?search'", "_typeFilter")
    if rtype not in types:
        raise InvalidQuery(f"_typeFilter names {rtype!r}, which is not exported", "_typeFilter")
    pairs = tuple(parse_qsl(rest, keep_blank_values=True))
    if not pairs:
        raise InvalidQuery(f"_typeFilter {text!r} has no search parameter", "_typeFilter")
    for key, _ in pairs:
        if key.split(":")[0] in _FILTER_FORBIDDEN:
            raise InvalidQuery(f"_typeFilter may not use {key}", "_typeFilter")
    return TypeFilter(rtype, pairs)


def parse_instant(text: str) -> str:
    """A FHIR instant (with a zone) as UTC ``YYYY-MM-DDThh:mm:ss.ffffffZ`` (400 otherwise)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or "T" not in text:
        raise InvalidQuery(
            f"_since {text!r} is not a FHIR instant (e.g. 2024-01-31T12:00:00Z)", "_since"
        )
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def after(last_updated: str | None, since: str | None) -> bool:
    """True if ``meta.lastUpdated`` is after ``since`` (both instants); no ``since``: True."""
    if since is None:
        return True
    if not last_updated:
        return False
    return parse_instant(last_updated) > since


@dataclass(frozen=True)
class OutputFile:
    resource_type: str
    name: str
    count: int


def manifest(
    transaction_time: str,
    request_url: str,
    files_base: str,
    output: list[OutputFile],
    errors: list[OutputFile],
) -> dict[str, Any]:
    """Bulk Data v2.0.0 complete status body (the manifest)."""
    return {
        "transactionTime": transaction_time,
        "request": request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": f.resource_type, "url": f"{files_base}/{f.name}", "count": f.count}
            for f in output
        ],
        "error": [
            {"type": "OperationOutcome", "url": f"{files_base}/{f.name}", "count": f.count}
            for f in errors
        ],
    }


def progress(done: int, current: str | None, index: int, total: int) -> str:
    """An ``X-Progress`` value (under 100 characters)."""
    if current is None:
        return "queued"
    return f"{done} resources written; exporting {current} ({index + 1} of {total} types)"[:99]
