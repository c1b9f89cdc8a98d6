"""Bundles and result shaping for FHIR search and history (FHIR R4 2.36 Bundle, 3.1.1.5)."""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any
from urllib.parse import urlencode

from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
MANDATORY = ("resourceType", "id", "meta", "implicitRules")
# Elements a subset keeps with the mandatory ones because a FHIR R4 invariant needs them:
# a StructureDefinition has a base (sdf-4) and so a derivation, context if an extension (sdf-5),
# and a differential (sdf-6).
INVARIANTS = {"StructureDefinition": ("baseDefinition", "derivation", "context", "differential")}


@cache
def top_level(resource_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """(required, summary) top-level elements of a resource type, from the FHIR R4 definitions.

    Required: minimum cardinality 1; summary: ``isSummary`` (FHIR R4 3.1.1.5.8).
    """
    try:
        model = get_fhir_model_class(resource_type)
    except KeyError:
        return frozenset(), frozenset()
    required, summary = set(), set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        key = info.alias or name
        if extra.get("element_required") or info.is_required():
            required.add(key)
        if extra.get("summary_element_property"):
            summary.add(key)
    return frozenset(required), frozenset(summary) | frozenset(required)


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
    listed = {full_url(base, r) for r in matches}
    entries = [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "match"}} for r in matches
    ]
    for r in included:  # a resource is listed once: as a match if it is one (FHIR R4 3.1.1.5.6)
        if (url := full_url(base, r)) not in listed:
            listed.add(url)
            entries.append({"fullUrl": url, "resource": r, "search": {"mode": "include"}})
    if outcome is not None:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": outcome,
                "search": {"mode": "outcome"},
            }
        )
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
    """FHIR R4 3.1.1.5.8 ``_summary`` and 3.1.1.5.9 ``_elements``; marks the result SUBSETTED.

    Every subset keeps the top-level mandatory elements, so it stays a valid resource, and
    drops ``meta.profile``: a subset need not meet the profiles the full resource meets.
    """
    rtype = str(resource.get("resourceType"))
    required, summary_elements = top_level(rtype)
    required |= frozenset(INVARIANTS.get(rtype, ()))
    summary_elements |= required
    if elements:
        return _subsetted(_keep(resource, {*MANDATORY, *required, *elements}))
    if summary in (None, "false"):
        return resource
    if summary == "text":
        return _subsetted(_keep(resource, {*MANDATORY, *required, "text"}))
    if summary == "data":
        return _subsetted({k: v for k, v in resource.items() if k != "text"})
    out = _keep(resource, {*MANDATORY, *summary_elements})
    if resource.get("resourceType") == "ImagingStudy" and "series" in out:
        # instances are not summary elements
        out["series"] = [{k: v for k, v in s.items() if k != "instance"} for s in out["series"]]
    return _subsetted(out)


def _keep(resource: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The top-level elements named (with their primitive extensions ``_name``)."""
    return {k: v for k, v in resource.items() if k.removeprefix("_") in names}


def _subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    if resource.get("resourceType") == "CodeSystem" and "concept" not in resource:
        resource = {k: v for k, v in resource.items() if k != "count"}  # counts the concepts
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k != "profile"}
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**resource, "meta": meta}


def response_entry(base: str, resource: dict[str, Any], status: str) -> dict[str, Any]:
    """A batch/transaction-response entry for a resource read or written (FHIR R4 3.1.0.12)."""
    meta = resource.get("meta", {})
    ref = f"{resource['resourceType']}/{resource['id']}"
    response: dict[str, Any] = {"status": status}
    if "versionId" in meta:
        response["location"] = f"{ref}/_history/{meta['versionId']}"  # relative, as R4 shows
        response["etag"] = f'W/"{meta["versionId"]}"'
    if "lastUpdated" in meta:
        response["lastModified"] = meta["lastUpdated"]
    return {"fullUrl": f"{base}/{ref}", "resource": resource, "response": response}


def history_bundle(base: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """FHIR R4 3.1.0.11: a history Bundle, newest first."""
    return {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}
