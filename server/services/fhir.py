"""FHIR R4 reads: read, vread, search-type, history, for stored and derived resources.

Derived resources (ImagingStudy, Patient, Endpoint) are built live from the DICOM
index; stored ones (ResearchStudy, Group, ResearchSubject) come from the FHIR store.
Narrowing to the caller's datasets: fhir_access; chains: fhir_chains; paging cursors:
fhir_paging; building derived resources: fhir_derived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from server.core.disclosure import floor_count
from server.core.fhir import bundle, imaging
from server.core.fhir.conformance import Conformance
from server.core.fhir.outcome import operation_outcome
from server.core.fhir.params import DERIVED, WRITABLE
from server.core.fhir.search import PagePosition, SearchRequest, parse_search
from server.errors import Forbidden, Gone, InvalidQuery, NotFound, Unauthorized
from server.index.fhir_dicom import DicomFhirQueries
from server.index.fhir_es import EsFhirQueries
from server.index.fhir_store import FhirStore
from server.security.audit import AuditLog
from server.security.model import Action, Principal
from server.services.fhir_access import exact_counts, exact_statistics, may_read, narrow
from server.services.fhir_chains import CHAIN_LIMIT, ChainResolver
from server.services.fhir_derived import (
    ENDPOINT_ID,
    DerivedResources,
    endpoint_matches,
    history_entry,
    id_matches,
)
from server.services.fhir_paging import SearchCursors

CONFORMANCE_TYPES = (
    "StructureDefinition",
    "SearchParameter",
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
)
AUDIT_OUTCOMES = ("0", "4", "8", "12")
Matches = tuple[list[dict[str, Any]], int | None, PagePosition | None, PagePosition | None]


class FhirReadService:
    def __init__(
        self,
        store: FhirStore,
        queries: DicomFhirQueries | EsFhirQueries,
        conformance: Conformance,
        cursors: SearchCursors,
        audit: AuditLog | None = None,
        min_cell_count: int = 10,
    ) -> None:
        self.store = store
        self.queries = queries
        self.conformance = conformance
        self.cursors = cursors
        self.audit = audit
        self.min_cell_count = min_cell_count
        self.derived = DerivedResources(queries, conformance, min_cell_count)
        self.chains = ChainResolver(store, queries, conformance)

    # -- read / vread ------------------------------------------------------
    def read(
        self, rtype: str, rid: str, dicomweb_root: str, principal: Principal
    ) -> dict[str, Any]:
        """FHIR R4 3.1.0.1 read, within what the caller may see (404 otherwise)."""
        may_read(rtype, principal)
        resource = self._read(rtype, rid, dicomweb_root, principal)
        if resource is None:
            raise NotFound(f"{rtype}/{rid} is not known")
        return resource

    def _read(
        self, rtype: str, rid: str, dicomweb_root: str, principal: Principal
    ) -> dict[str, Any] | None:
        if rtype in WRITABLE:
            if not self._visible(rtype, rid, principal):
                return None
            resource, deleted = self.store.read(rtype, rid)
            if deleted:
                raise Gone(f"{rtype}/{rid} was deleted")
            if resource is not None and rtype == "ResearchStudy":
                resource = self.with_statistics([resource], principal)[0]
        elif rtype in CONFORMANCE_TYPES:
            resource = self.conformance.get(rtype, rid)
        else:
            resource = self._derived(rtype, rid, dicomweb_root, principal)
        return resource

    def _visible(self, rtype: str, rid: str, principal: Principal) -> bool:
        """Stored resources outside the caller's datasets are treated as absent."""
        if principal.unrestricted or principal.admin:
            return True
        if rtype == "ResearchStudy":
            return principal.allows(Action.CATALOGUE, rid)
        if rtype == "ResearchSubject":
            resource, _ = self.store.read(rtype, rid)
            study = ((resource or {}).get("study") or {}).get("reference", "")
            return principal.allows(Action.SEARCH, study.rsplit("/", 1)[-1])
        return False

    def vread(self, rtype: str, rid: str, version: str, principal: Principal) -> dict[str, Any]:
        """FHIR R4 3.1.0.2 vread (stored resources keep every version)."""
        may_read(rtype, principal)
        if not self._visible(rtype, rid, principal):
            raise NotFound(f"{rtype}/{rid} has no version {version}")
        found = self.store.vread(rtype, rid, int(version)) if version.isdigit() else None
        if found is None:
            raise NotFound(f"{rtype}/{rid} has no version {version}")
        if found.resource is None:
            raise Gone(f"{rtype}/{rid} version {version} is a deletion")
        return found.resource

    def _derived(
        self, rtype: str, rid: str, root: str, principal: Principal
    ) -> dict[str, Any] | None:
        if rtype == "Endpoint":
            return imaging.endpoint(ENDPOINT_ID, root) if rid == ENDPOINT_ID else None
        if rtype == "Patient":
            row = self.queries.patient(rid, principal.datasets_for(Action.SEARCH))
            return self.derived.patient(row) if row else None
        if rtype == "AuditEvent":
            return self.audit.read(rid) if self.audit is not None else None
        if rtype == "ImagingStudy":
            study = self.queries.study(rid)
            if study is None or not principal.allows(Action.METADATA, study.dataset):
                return None
            return self.derived.imaging_studies([study])[0]
        return None

    def with_statistics(
        self, studies: list[dict[str, Any]], principal: Principal
    ) -> list[dict[str, Any]]:
        return self.derived.with_statistics(studies, lambda d: exact_statistics(d, principal))

    # -- search ------------------------------------------------------------
    def search(
        self,
        rtype: str,
        pairs: list[tuple[str, str]],
        *,
        strict: bool,
        base: str,
        dicomweb_root: str,
        principal: Principal,
    ) -> dict[str, Any]:
        """FHIR R4 3.1.1 search-type, with paging links that survive concurrent changes.

        A count-only search (``_summary=count``) reads no row and has no paging link.
        """
        req = narrow(parse_search(rtype, pairs, strict=strict), principal)
        count_only = req.summary == "count"
        kept = [(k, v) for k, v in pairs if k not in req.ignored and k != "_cursor"]
        binding = self.cursors.binding(principal, rtype, kept)  # what the links repeat
        if count_only:
            req = replace(req, count=0, cursor=None, include=(), revinclude=())
        else:
            req = self.cursors.open(req, binding)
        req = self.chains.resolve(req)
        matches, total, next_p, prev_p = self._matches(req, dicomweb_root, principal)
        if total is not None and not exact_counts(req, principal):
            total = floor_count(total, self.min_cell_count)
        included = self._includes(req, matches, dicomweb_root, principal)
        shown = [bundle.summarize(r, req.summary, req.elements) for r in matches]
        outcome = None
        if req.ignored:
            text = f"ignored unknown search parameter(s): {', '.join(req.ignored)}"
            outcome = operation_outcome([("warning", "not-supported", text)])
        return bundle.searchset(
            base,
            rtype,
            shown,
            included,
            total=total,
            params=kept,
            next_cursor=self.cursors.seal(next_p, binding),
            previous_cursor=self.cursors.seal(prev_p, binding),
            outcome=outcome,
        )

    def pages(
        self, req: SearchRequest, root: str, principal: Principal
    ) -> Iterator[list[dict[str, Any]]]:
        """Every match of an already narrowed ``req``, one keyset page after another (exports)."""
        req = self.chains.resolve(replace(req, total="none", cursor=None, position=None))
        while True:
            found, _, next_p, _ = self._matches(req, root, principal)
            yield found
            if next_p is None or not found:
                return
            req = replace(req, position=next_p)

    def _matches(self, req: SearchRequest, root: str, principal: Principal) -> Matches:
        rtype = req.resource_type
        if rtype in WRITABLE:
            page = self.store.search(req)
            found = page.resources
            if rtype == "ResearchStudy":
                found = self.with_statistics(found, principal)
            return found, page.total, page.next_cursor, page.previous_cursor
        if rtype == "ImagingStudy":
            spage = self.queries.search_studies(req)
            studies = self.derived.imaging_studies(spage.rows, req.summary != "true")
            return studies, spage.total, spage.next_cursor, spage.previous_cursor
        if rtype == "Patient":
            spage = self.queries.search_patients(req)
            patients = [self.derived.patient(r) for r in spage.rows]
            return patients, spage.total, spage.next_cursor, spage.previous_cursor
        if rtype == "AuditEvent":
            return self._audit_events(req)
        if rtype == "Endpoint":
            found = [r for r in [imaging.endpoint(ENDPOINT_ID, root)] if endpoint_matches(r, req)]
            return found[: req.count], len(found), None, None
        if rtype in CONFORMANCE_TYPES:
            found = [dict(r) for r in self.conformance.of_type(rtype) if id_matches(r, req)]
            return found[: req.count], len(found), None, None
        raise NotFound(f"resource type {rtype} is not supported")

    def _audit_events(self, req: SearchRequest) -> Matches:
        """AuditEvent search (administrators): the hash-chained log, oldest first, keyset paged."""
        if self.audit is None or req.count == 0:
            return [], None, None, None
        after = None
        if req.position is not None:
            if req.position.backwards or not isinstance(req.position.values[0], int):
                raise InvalidQuery("_cursor does not belong to this search", "_cursor")
            after = req.position.values[0]
        rows = self.audit.fhir_search(req, after_seq=after)
        more = len(rows) > req.count
        rows = rows[: req.count]
        events = [event for _, event in rows]
        next_p = PagePosition(False, (rows[-1][0],)) if more and rows else None
        return events, None, next_p, None

    def _includes(
        self, req: SearchRequest, matches: list[dict[str, Any]], root: str, principal: Principal
    ) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for inc in req.include:
            for target in _references(matches, inc.param):
                rtype, _, rid = target.partition("/")
                try:
                    out.setdefault(target, self.read(rtype, rid, root, principal))
                except (NotFound, Forbidden, Unauthorized):
                    continue  # what the caller may not see is simply not included
        for inc in req.revinclude:
            ids = [m["id"] for m in matches]
            if not ids:
                continue
            rev = parse_search(
                inc.source,
                [(inc.param, ",".join(f"{inc.target}/{i}" for i in ids)),
                 ("_count", str(CHAIN_LIMIT))],
            )  # fmt: skip
            try:
                narrowed = narrow(replace(rev, total="none"), principal)
            except (Forbidden, Unauthorized):
                continue
            found, _, _, _ = self._matches(narrowed, root, principal)
            for r in found:
                out.setdefault(f"{r['resourceType']}/{r['id']}", r)
        return list(out.values())

    # -- history -----------------------------------------------------------
    def history(
        self,
        rtype: str,
        rid: str | None,
        base: str,
        count: int,
        since: str | None,
        principal: Principal,
    ) -> dict[str, Any]:
        """FHIR R4 3.1.0.11 history (instance and type level), within what the caller may see."""
        may_read(rtype, principal)
        if rid is not None and not self._visible(rtype, rid, principal):
            raise NotFound(f"{rtype}/{rid} is not known")
        versions = self.store.history(rtype, rid, count, since)
        if rid is None:
            versions = [v for v in versions if self._visible(rtype, v.id, principal)]
        if rid is not None and not versions:
            raise NotFound(f"{rtype}/{rid} is not known")
        return bundle.history_bundle(base, [history_entry(base, rtype, rid, v) for v in versions])


def _references(matches: list[dict[str, Any]], param: str) -> list[str]:
    getters: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
        "subject": lambda r: [r.get("subject")], "patient": lambda r: [r.get("subject") or r.get("individual")],
        "endpoint": lambda r: r.get("endpoint", []), "study": lambda r: [r.get("study")],
        "individual": lambda r: [r.get("individual")], "partof": lambda r: r.get("partOf", []),
        "member": lambda r: [m.get("entity") for m in r.get("member", [])],
        "dataset": lambda r: [e.get("valueReference") for e in r.get("extension", []) if e.get("url") == imaging.DATASET_EXTENSION],
    }  # fmt: skip
    refs: list[str] = []
    for resource in matches:
        for ref in getters[param](resource):
            if ref and ref.get("reference") and ref["reference"] not in refs:
                refs.append(ref["reference"])
    return refs


__all__ = ["CONFORMANCE_TYPES", "DERIVED", "ENDPOINT_ID", "FhirReadService"]
