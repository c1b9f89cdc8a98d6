"""Bundles and result shaping for FHIR search and history (FHIR R4 2.36 Bundle, 3.1.1.5)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
MANDATORY = ("resourceType", "id", "meta")
# Elements with minimum cardinality 1 in FHIR R4, kept by _elements so results stay valid.
REQUIRED = {
    "ImagingStudy": ("status", "subject"),
    "ResearchStudy": ("status",),
    "ResearchSubject": ("status", "study", "individual"),
    "Group": ("type", "actual"),
    "Endpoint": ("status", "connectionType", "payloadType", "address"),
}


def full_url(base: str, resource: dict[str, Any]) -> str:
    return f"{base}/{resource['resourceType']}/{resource['id']}"


def searchset(
    base: str,
    resource_type: str,
    matches: list[dict[str, Any]],
    included: list[dict[str, Any]],
    *,
    total: int | None,
    params: list[tuple[str, str]],
    next_cursor: str | None,
    previous_cursor: str | None,
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """FHIR R4 3.1.1.5: a searchset Bundle with self/next/previous links."""
    url = f"{base}/{resource_type}"
    links = [{"relation": "self", "url": _url(url, params)}]
    if next_cursor:
        links.append({"relation": "next", "url": _url(url, [*params, ("_cursor", next_cursor)])})
    if previous_cursor:
        links.append(
            {"relation": "previous", "url": _url(url, [*params, ("_cursor", previous_cursor)])}
        )
    entries = [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "match"}} for r in matches
    ]
    entries += [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "include"}}
        for r in included
    ]
    if outcome is not None:
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


def _url(url: str, params: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(params)}" if params else url


def summarize(
    resource: dict[str, Any], summary: str | None, elements: tuple[str, ...]
) -> dict[str, Any]:
    """FHIR R4 3.1.1.5.8 ``_summary`` and 3.1.1.5.9 ``_elements``; marks the result SUBSETTED."""
    if elements:
        required = REQUIRED.get(str(resource.get("resourceType")), ())
        kept = {
            k: v for k, v in resource.items() if k in MANDATORY or k in required or k in elements
        }
        return _subsetted(kept)
    if summary in (None, "false"):
        return resource
    if summary == "text":
        return _subsetted({k: v for k, v in resource.items() if k in (*MANDATORY, "text")})
    out = {k: v for k, v in resource.items() if k != "text"}
    if summary == "true":
        out.pop("extension", None)
        if resource.get("resourceType") == "ImagingStudy":  # instances are not summary elements
            out["series"] = [
                {k: v for k, v in s.items() if k != "instance"} for s in out.get("series", [])
            ]
    return _subsetted(out)


def _subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**resource, "meta": meta}


def history_bundle(base: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """FHIR R4 3.1.0.11: a history Bundle, newest first."""
    return {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}
