"""FHIR R4 reads: read, vread, search-type, history, for stored and derived resources.

Derived resources (ImagingStudy, Patient, Endpoint) are built live from the DICOM
index; stored ones (ResearchStudy, Group, ResearchSubject) come from the FHIR store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.core.fhir import bundle, imaging
from server.core.fhir.conformance import Conformance
from server.core.fhir.outcome import operation_outcome
from server.core.fhir.params import DERIVED, WRITABLE, params_of
from server.core.fhir.search import (
    Criterion,
    ReferenceValue,
    SearchRequest,
    TokenValue,
    parse_search,
)
from server.errors import Forbidden, Gone, InvalidQuery, NotFound, Unauthorized
from server.index.fhir_dicom import DicomFhirQueries, StudyRow
from server.index.fhir_es import EsFhirQueries
from server.index.fhir_store import FhirStore, Version
from server.security.audit import AuditLog
from server.security.enforce import require, require_admin
from server.security.model import Action, Principal

ENDPOINT_ID = "dicomweb"
EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
BODY_PART_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/CodeSystem/dicom-body-part-examined"
CHAIN_LIMIT = 1000
CONFORMANCE_TYPES = (
    "StructureDefinition",
    "SearchParameter",
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
)


class FhirReadService:
    def __init__(
        self,
        store: FhirStore,
        queries: DicomFhirQueries | EsFhirQueries,
        conformance: Conformance,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.queries = queries
        self.conformance = conformance
        self.audit = audit

    # -- read / vread ------------------------------------------------------
    def read(
        self, rtype: str, rid: str, dicomweb_root: str, principal: Principal
    ) -> dict[str, Any]:
        """FHIR R4 3.1.0.1 read, within what the caller may see (404 otherwise)."""
        self._may_read(rtype, principal)
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
                resource = self.with_statistics([resource])[0]
        elif rtype in CONFORMANCE_TYPES:
            resource = self.conformance.get(rtype, rid)
        else:
            resource = self._derived(rtype, rid, dicomweb_root, principal)
        return resource

    def _may_read(self, rtype: str, principal: Principal) -> None:
        if rtype in ("Group", "Contract", "AuditEvent"):
            require_admin(principal)
        require(principal, rtype, "r")

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

    def _narrow(self, req: SearchRequest, principal: Principal) -> SearchRequest:
        """The one place searches are narrowed to the caller's datasets (before the index)."""
        self._may_read(req.resource_type, principal)
        require(principal, req.resource_type, "s")
        if (
            principal.unrestricted
            or principal.admin
            or req.resource_type in ("Endpoint", *CONFORMANCE_TYPES)
        ):
            return req
        if req.summary == "count":
            action = Action.COUNT
        elif req.resource_type == "ResearchStudy":
            action = Action.CATALOGUE
        else:
            action = Action.SEARCH
        return SearchRequest(**{**req.__dict__, "restrict": principal.datasets_for(action)})

    def vread(self, rtype: str, rid: str, version: str, principal: Principal) -> dict[str, Any]:
        """FHIR R4 3.1.0.2 vread (stored resources keep every version)."""
        self._may_read(rtype, principal)
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
            return self.patient(row) if row else None
        if rtype == "AuditEvent":
            return self.audit.read(rid) if self.audit is not None else None
        if rtype == "ImagingStudy":
            study = self.queries.study(rid)
            if study is None or not principal.allows(Action.METADATA, study.dataset):
                return None
            return self.imaging_studies([study])[0]
        return None

    # -- building derived resources ---------------------------------------
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
                body_site=self._body_site,
                laterality=self._laterality,
                last_updated=_instant(r.updated),
            )
            for r in rows
        ]

    def patient(self, row: StudyRow) -> dict[str, Any]:
        return imaging.patient(row.json, last_updated=_instant(row.updated))

    def _body_site(self, term: str) -> dict[str, Any] | None:
        coding = self.conformance.body_site(term)
        return dict(coding) if coding else None

    def _laterality(self, term: str) -> dict[str, Any] | None:
        coding = self.conformance.laterality(term)
        return dict(coding) if coding else None

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
        """FHIR R4 3.1.1 search-type, with paging links that survive concurrent changes."""
        req = self._narrow(parse_search(rtype, pairs, strict=strict), principal)
        req = self.resolve_chains(req, principal)
        matches, total, next_c, prev_c = self._matches(req, dicomweb_root)
        included = (
            self._includes(req, matches, dicomweb_root, principal) if req.summary != "count" else []
        )
        shown = (
            []
            if req.summary == "count"
            else [bundle.summarize(r, req.summary, req.elements) for r in matches]
        )
        kept = [(k, v) for k, v in pairs if k not in req.ignored and k != "_cursor"]
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
            next_cursor=next_c,
            previous_cursor=prev_c,
            outcome=outcome,
        )

    def _matches(
        self, req: SearchRequest, root: str
    ) -> tuple[list[dict[str, Any]], int | None, str | None, str | None]:
        rtype = req.resource_type
        if rtype in WRITABLE:
            page = self.store.search(req)
            found = (
                self.with_statistics(page.resources) if rtype == "ResearchStudy" else page.resources
            )
            return found, page.total, page.next_cursor, page.previous_cursor
        if rtype == "ImagingStudy":
            spage = self.queries.search_studies(req)
            studies = self.imaging_studies(spage.rows, with_instances=req.summary != "true")
            return studies, spage.total, spage.next_cursor, spage.previous_cursor
        if rtype == "Patient":
            spage = self.queries.search_patients(req)
            return (
                [self.patient(r) for r in spage.rows],
                spage.total,
                spage.next_cursor,
                spage.previous_cursor,
            )
        if rtype == "AuditEvent":
            return self._audit_events(req)
        if rtype == "Endpoint":
            found = [r for r in [imaging.endpoint(ENDPOINT_ID, root)] if _endpoint_matches(r, req)]
            return found, len(found), None, None
        if rtype in CONFORMANCE_TYPES:
            found = [dict(r) for r in self.conformance.of_type(rtype) if _id_matches(r, req)]
            return found, len(found), None, None
        raise NotFound(f"resource type {rtype} is not supported")

    def with_statistics(self, studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Datasets with their catalogue extensions computed live from the DICOM index.

        Number of subjects/studies, modalities, body parts and manufacturers always
        reflect what is stored; values of those extensions sent by a client are replaced.
        """
        stats = self.queries.dataset_statistics([r["id"] for r in studies])
        return [_add_statistics(r, stats[r["id"]]) for r in studies]

    def _audit_events(
        self, req: SearchRequest
    ) -> tuple[list[dict[str, Any]], int | None, str | None, str | None]:
        """AuditEvent search (administrators): the hash-chained log, oldest first, keyset paged."""
        if self.audit is None:
            return [], 0, None, None
        after = int(req.cursor) if req.cursor and req.cursor.isdigit() else None
        rows = self.audit.fhir_search(req, after_seq=after)
        more = len(rows) > req.count
        rows = rows[: req.count]
        events = [event for _, event in rows]
        return events, None, str(rows[-1][0]) if more and rows else None, None

    def resolve_chains(self, req: SearchRequest, principal: Principal) -> SearchRequest:
        """Chains the target's own store cannot answer become lists of references."""
        out: list[Criterion] = []
        for c in req.criteria:
            if req.resource_type == "ResearchStudy" and c.param.name == "cancer-type":
                c = self._cancer_types_as_snomed(c)
            if (
                req.resource_type == "ResearchStudy"
                and c.param.name == "modality"
                and c.modifier is None
            ):
                out.append(self._modality_as_ids(c))  # computed from the images, not stored
                continue
            native = (
                req.resource_type == "ImagingStudy"
                and c.chain is not None
                and c.chain.resource_type == "Patient"
            )
            if c.chain is None or native:
                out.append(c)
                continue
            inner = SearchRequest(
                c.chain.resource_type, c.chain.criteria, count=CHAIN_LIMIT, total="none"
            )
            ids = self._ids(inner)
            values = tuple(ReferenceValue(inner.resource_type, i) for i in ids) or (
                ReferenceValue(inner.resource_type, "\x00none"),
            )
            out.append(Criterion(c.param, None, values))
        return SearchRequest(**{**req.__dict__, "criteria": tuple(out)})

    def _cancer_types_as_snomed(self, c: Criterion) -> Criterion:
        """A short cancer-type code (``breast``) searches as the SNOMED CT concept that
        ``dataset create --cancer-type breast`` stores (the cancer-type ConceptMap)."""
        values: list[Any] = []
        for v in c.values:
            coding = None
            if isinstance(v, TokenValue) and v.code and not v.code.isdigit() and v.system is None:
                coding = self.conformance.cancer_type(v.code)
            values.append(TokenValue(coding["system"], coding["code"]) if coding else v)
        return Criterion(c.param, c.modifier, tuple(values), c.chain)

    def _modality_as_ids(self, c: Criterion) -> Criterion:
        codes = [
            v.code
            for v in c.values
            if isinstance(v, TokenValue) and v.code and v.system in (None, imaging.DCM)
        ]
        ids = self.queries.datasets_with_modality(codes) if codes else []
        id_param = params_of("ResearchStudy")["_id"]
        return Criterion(
            id_param,
            None,
            tuple(TokenValue(None, i) for i in ids) or (TokenValue(None, "\x00none"),),
        )

    def _ids(self, req: SearchRequest) -> list[str]:
        if req.resource_type in WRITABLE:
            return [r["id"] for r in self.store.search(req).resources]
        if req.resource_type == "Patient":
            return [r.patient_key for r in self.queries.search_patients(req).rows]
        if req.resource_type == "ImagingStudy":
            return [r.json["0020000D"]["Value"][0] for r in self.queries.search_studies(req).rows]
        return []

    def _includes(
        self, req: SearchRequest, matches: list[dict[str, Any]], root: str, principal: Principal
    ) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for inc in req.include:
            for target in self._references(matches, inc.param):
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
                [
                    (inc.param, ",".join(f"{inc.target}/{i}" for i in ids)),
                    ("_count", str(CHAIN_LIMIT)),
                ],
            )
            try:
                narrowed = self._narrow(
                    SearchRequest(**{**rev.__dict__, "total": "none"}), principal
                )
            except (Forbidden, Unauthorized):
                continue
            found, _, _, _ = self._matches(narrowed, root)
            for r in found:
                out.setdefault(f"{r['resourceType']}/{r['id']}", r)
        return list(out.values())

    @staticmethod
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
        self._may_read(rtype, principal)
        if rid is not None and not self._visible(rtype, rid, principal):
            raise NotFound(f"{rtype}/{rid} is not known")
        versions = self.store.history(rtype, rid, count, since)
        if rid is None:
            versions = [v for v in versions if self._visible(rtype, v.id, principal)]
        if rid is not None and not versions:
            raise NotFound(f"{rtype}/{rid} is not known")
        return bundle.history_bundle(base, [_history_entry(base, rtype, rid, v) for v in versions])


_COMPUTED = {f"{EXT}/{n}" for n in ("dataset-number-of-subjects", "dataset-number-of-studies",
                                    "dataset-modality", "dataset-body-part", "dataset-manufacturer")}  # fmt: skip


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


def _id_matches(resource: Any, req: SearchRequest) -> bool:
    """Conformance resources are searchable by ``_id`` only (other parameters are unknown)."""
    for c in req.criteria:
        if c.param.name != "_id":
            raise InvalidQuery(f"{req.resource_type} can be searched by _id only", c.param.name)
        if not any(getattr(v, "code", None) == resource.get("id") for v in c.values):
            return False
    return True


def _endpoint_matches(resource: dict[str, Any], req: SearchRequest) -> bool:
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


def _history_entry(base: str, rtype: str, rid: str | None, v: Version) -> dict[str, Any]:
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


def _instant(epoch: float) -> str:
    from datetime import UTC, datetime

    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


__all__ = ["DERIVED", "ENDPOINT_ID", "FhirReadService"]
