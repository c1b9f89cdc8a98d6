"""Who may see what in a FHIR search: the narrowing every request and every hop goes through.

A search is narrowed to the caller's datasets before it reaches an index, and so is
every chained parameter inside it (``partof.title``, ``individual:Patient.birthdate``):
each chain carries its own restriction, and every translator applies a request's
restriction wherever it evaluates it (stored-resource subqueries, the DICOM index's
patient columns, chains resolved to lists of ids). A value stored only in a dataset the
caller has no agreement for can therefore never make a row match.
"""

from __future__ import annotations

from server.core.fhir.search import Criterion, SearchRequest
from server.security.enforce import require, require_admin
from server.security.model import Action, Principal

OPEN_TYPES = ("Endpoint", "StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet",
              "ConceptMap")  # fmt: skip
ADMIN_TYPES = ("Group", "Contract", "AuditEvent")
# Resources about patients: aggregate answers on them obey the minimum cell count.
PATIENT_LEVEL = ("ImagingStudy", "Patient", "ResearchSubject", "Group")


def may_read(rtype: str, principal: Principal) -> None:
    if rtype in ADMIN_TYPES:
        require_admin(principal)
    require(principal, rtype, "r")


def action_for(rtype: str, count_only: bool) -> Action:
    if count_only:
        return Action.COUNT
    return Action.CATALOGUE if rtype == "ResearchStudy" else Action.SEARCH


def narrow(req: SearchRequest, principal: Principal) -> SearchRequest:
    """``req`` restricted to the caller's datasets, at the top and inside every chain."""
    may_read(req.resource_type, principal)
    require(principal, req.resource_type, "s")
    return _restricted(req, principal, req.summary == "count")


def _restricted(req: SearchRequest, principal: Principal, count_only: bool) -> SearchRequest:
    restrict = None
    if not (principal.unrestricted or principal.admin or req.resource_type in OPEN_TYPES):
        restrict = principal.datasets_for(action_for(req.resource_type, count_only))
    criteria = tuple(
        c
        if c.chain is None
        else Criterion(c.param, c.modifier, c.values, _restricted(c.chain, principal, count_only))
        for c in req.criteria
    )
    return SearchRequest(**{**req.__dict__, "restrict": restrict, "criteria": criteria})


def exact_counts(req: SearchRequest, principal: Principal) -> bool:
    """May this caller see the exact total of ``req``? Only with row-level access to all of it."""
    if principal.unrestricted or principal.admin or req.restrict is None:
        return True
    if req.resource_type not in PATIENT_LEVEL:
        return True
    rows = principal.datasets_for(Action.SEARCH) or frozenset()
    return req.restrict <= rows


def exact_statistics(dataset: str, principal: Principal) -> bool:
    """May this caller see a dataset's catalogue figures exactly (row-level access to it)?"""
    return principal.unrestricted or principal.admin or principal.allows(Action.SEARCH, dataset)
