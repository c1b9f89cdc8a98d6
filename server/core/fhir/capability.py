"""CapabilityStatement (FHIR R4 2.40), generated from the tables that drive the implementation."""

from __future__ import annotations

from typing import Any

from server.core.fhir.bulk import CAPABILITY_URL, OPERATION_URLS
from server.core.fhir.params import DERIVED, INCLUDES, PARAMS, SORTS, WRITABLE, params_of

PROFILES = {
    "ImagingStudy": "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/gateway-imagingstudy",
    "ResearchStudy": "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/dataset-researchstudy",
}
CONFORMANCE = ("StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet", "ConceptMap")


def capability_statement(
    base: str, version: str, published: str, token_endpoint: str | None = None
) -> dict[str, Any]:
    """What this server implements, and nothing else."""
    resources = [_resource(t) for t in (*DERIVED, *WRITABLE)]
    resources += [_conformance_resource(t) for t in CONFORMANCE]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "Cancer-imaging interoperability gateway",
        "kind": "instance",
        "instantiates": [CAPABILITY_URL],
        "software": {"name": "cancer-imaging-gateway", "version": version},
        "implementation": {"description": "Cancer-imaging interoperability gateway FHIR facade", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "ImagingStudy, Patient and Endpoint are derived live from the DICOM index "
            "and read-only; datasets (ResearchStudy), cohorts (Group) and ResearchSubject are stored.",
            "security": _security(token_endpoint),
            "resource": resources,
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
            "operation": [{"name": "export", "definition": OPERATION_URLS["system"]}],
        }],
    }  # fmt: skip


def _security(token_endpoint: str | None) -> dict[str, Any]:
    """SMART App Launch 2.0 backend services: discovery is .well-known/smart-configuration.

    The SMART ``oauth-uris`` extension is not declared: it requires an ``authorize``
    endpoint (the EHR/standalone launch), which this server does not have, and SMART 2.0
    makes .well-known/smart-configuration the way to find the token endpoint.
    """
    if token_endpoint is None:
        return {"description": "Authorisation is switched off (development mode)."}
    return {
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}]}],
        "description": f"OAuth2 bearer tokens from {token_endpoint} (SMART backend services: "
        "client_credentials with client_secret_basic/post or private_key_jwt; RFC 8693 token "
        "exchange). Scopes: SMART v2 system/<Type>.<crus> plus dataset:<id> and "
        "dataset:<id>:store; access follows active data-access agreements (Contract). "
        "Discovery: .well-known/smart-configuration.",
    }  # fmt: skip


def _resource(rtype: str) -> dict[str, Any]:
    writable = rtype in WRITABLE
    interactions = ["read", "search-type"]
    if writable:
        interactions += ["vread", "create", "update", "delete", "history-instance", "history-type"]
    entry: dict[str, Any] = {
        "type": rtype,
        "interaction": [{"code": c} for c in interactions],
        "versioning": "versioned-update" if writable else "no-version",
        "readHistory": writable,
        "updateCreate": writable,
        "conditionalCreate": writable,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchInclude": [f"{s}:{p}" for (s, p) in INCLUDES if s == rtype],
        "searchRevInclude": [f"{s}:{p}" for (s, p), t in INCLUDES.items() if t == rtype],
        "searchParam": [_param(p.name, p.type.value, p.documentation, p.definition)
                        for p in params_of(rtype).values()],
    }  # fmt: skip
    if rtype in PROFILES:
        entry["profile"] = PROFILES[rtype]
    if rtype in ("ImagingStudy", "ResearchStudy"):
        entry["operation"] = [
            {
                "name": "validate",
                "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
            }
        ]
    if rtype in ("Patient", "Group"):  # Bulk Data v2.0.0 (Group/[id]: a dataset's cohort)
        entry["operation"] = [{"name": "export", "definition": OPERATION_URLS[rtype.lower()]}]
    entry["searchParam"] += [_param(p, "special", f"sort key; supported: {', '.join(SORTS.get(rtype, ()))}")
                             for p in ("_sort",)]  # fmt: skip
    return entry


def _conformance_resource(rtype: str) -> dict[str, Any]:
    return {"type": rtype, "interaction": [{"code": "read"}, {"code": "search-type"}]}


def _param(name: str, type_: str, doc: str, definition: str | None = None) -> dict[str, Any]:
    out = {"name": name, "type": "special" if type_ == "special" else type_, "documentation": doc}
    if definition:
        out["definition"] = definition
    return out


__all__ = ["PARAMS", "capability_statement"]
