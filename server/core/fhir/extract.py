"""Search index entries of stored (writable) resources, per parameter (FHIR R4 search definitions).

Each entry is what the store keeps so that a search never parses resources: tokens
(system, code, display), normalised strings, date ranges and references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from server.core.fhir.search import date_range
from server.core.values import fold

EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
FAR_PAST, FAR_FUTURE = "0001-01-01T00:00:00.000000", "9999-12-31T23:59:59.999999"


@dataclass(frozen=True)
class Entry:
    param: str
    kind: str  # token | string | date | reference
    system: str | None = None
    code: str | None = None
    text: str | None = None  # folded string value, or token display for :text
    low: str | None = None
    high: str | None = None
    ref: str | None = None


def _codings(
    concepts: list[dict[str, Any]] | dict[str, Any] | None,
) -> Iterator[tuple[str | None, str | None, str | None]]:
    if concepts is None:
        return
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        text = concept.get("text")
        for coding in concept.get("coding", []):
            yield (
                coding.get("system"),
                coding.get("code"),
                fold(coding.get("display") or text or ""),
            )
        if not concept.get("coding") and text:
            yield None, None, fold(text)


def tokens(param: str, concepts: Any) -> list[Entry]:
    return [Entry(param, "token", s, c, t) for s, c, t in _codings(concepts)]


def identifiers(param: str, values: list[dict[str, Any]] | None) -> list[Entry]:
    return [
        Entry(param, "token", i.get("system"), i.get("value"), fold(i.get("value", "")))
        for i in values or []
    ]


def code(param: str, value: str | None, system: str | None = None) -> list[Entry]:
    return [Entry(param, "token", system, value, fold(value))] if value else []


def string(param: str, value: str | None) -> list[Entry]:
    return [Entry(param, "string", code=value, text=fold(value))] if value else []


def references(param: str, refs: Any) -> list[Entry]:
    out = []
    for ref in refs if isinstance(refs, list) else [refs] if refs else []:
        target = ref.get("reference") if isinstance(ref, dict) else None
        if target:
            out.append(Entry(param, "reference", ref="/".join(target.rstrip("/").split("/")[-2:])))
    return out


def period(param: str, value: dict[str, Any] | None) -> list[Entry]:
    if not value:
        return []
    low = date_range(value["start"])[0] if value.get("start") else FAR_PAST
    high = date_range(value["end"])[1] if value.get("end") else FAR_FUTURE
    return [Entry(param, "date", low=low or FAR_PAST, high=high or FAR_FUTURE)]


def extension_values(resource: dict[str, Any], name: str) -> list[Any]:
    url = f"{EXT}/{name}"
    return [e for e in resource.get("extension", []) if e.get("url") == url]


def _research_study(r: dict[str, Any]) -> list[Entry]:
    out = identifiers("identifier", r.get("identifier")) + string("title", r.get("title"))
    out += code("status", r.get("status")) + tokens("category", r.get("category"))
    out += tokens("focus", r.get("focus")) + tokens("keyword", r.get("keyword"))
    out += tokens("cancer-type", r.get("condition")) + period("date", r.get("period"))
    out += references("partof", r.get("partOf")) + references("sponsor", r.get("sponsor"))
    out += references("site", r.get("site"))
    for ext in extension_values(r, "dataset-modality"):
        out += tokens("modality", {"coding": [ext.get("valueCoding", {})]})
    for ext in extension_values(r, "dataset-access-condition"):
        out += code("access-condition", ext.get("valueCode"))
    return out


def _group(r: dict[str, Any]) -> list[Entry]:
    out = identifiers("identifier", r.get("identifier")) + code("type", r.get("type"))
    out += references("member", [m.get("entity") for m in r.get("member", []) if m.get("entity")])
    for characteristic in r.get("characteristic", []):
        out += tokens("characteristic", characteristic.get("code"))
    return out


def _research_subject(r: dict[str, Any]) -> list[Entry]:
    out = identifiers("identifier", r.get("identifier")) + code("status", r.get("status"))
    out += references("study", r.get("study")) + references("individual", r.get("individual"))
    out += references("patient", r.get("individual"))
    return out


def _contract(r: dict[str, Any]) -> list[Entry]:
    out = identifiers("identifier", r.get("identifier")) + code("status", r.get("status"))
    out += references("subject", r.get("subject"))
    for term in r.get("term", []):
        for party in (term.get("offer") or {}).get("party", []):
            out += references("party", party.get("reference"))
    return out


EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Entry]]] = {
    "ResearchStudy": _research_study,
    "Group": _group,
    "ResearchSubject": _research_subject,
    "Contract": _contract,
}


def entries(resource: dict[str, Any]) -> list[Entry]:
    """Every search index entry of a stored resource (``_id``/``_lastUpdated`` are columns)."""
    return EXTRACTORS[resource["resourceType"]](resource)
