"""Chained search parameters the target's own store cannot answer (FHIR R4 3.1.1.5.5).

A chain within one store is a subquery there (stored resources: fhir_store; ImagingStudy
to Patient: the study row). A chain across stores (ResearchSubject to Patient, Group to
Patient, ImagingStudy to ResearchStudy) is resolved here into the list of matching ids,
by a search of the target that carries the restriction :func:`fhir_access.narrow` put on
the chain: ids from datasets the caller may not see are never in that list.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.core.fhir import imaging
from server.core.fhir.conformance import Conformance
from server.core.fhir.params import WRITABLE, params_of
from server.core.fhir.search import Criterion, ReferenceValue, SearchRequest, TokenValue
from server.errors import InvalidQuery
from server.index.fhir_dicom import DicomFhirQueries
from server.index.fhir_es import EsFhirQueries
from server.index.fhir_store import FhirStore

CHAIN_LIMIT = 1000
NONE = "\x00none"


class ChainResolver:
    def __init__(
        self, store: FhirStore, queries: DicomFhirQueries | EsFhirQueries, conformance: Conformance
    ) -> None:
        self.store = store
        self.queries = queries
        self.conformance = conformance

    def resolve(self, req: SearchRequest) -> SearchRequest:
        """``req`` with every cross-store chain turned into a list of references."""
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
            ) or (c.chain is not None and req.resource_type in WRITABLE
                  and c.chain.resource_type in WRITABLE)  # fmt: skip
            if c.chain is None:
                out.append(c)
                continue
            if native:  # a subquery in the same store, restriction included
                out.append(replace(c, chain=self.resolve(c.chain)))
                continue
            inner = self.resolve(replace(c.chain, count=CHAIN_LIMIT + 1, total="none"))
            ids = self.ids(inner)
            if len(ids) > CHAIN_LIMIT:
                raise InvalidQuery(
                    f"the chained parameter {c.param.name} matches more than {CHAIN_LIMIT}"
                    f" {inner.resource_type} resources; narrow it",
                    c.param.name,
                )
            values = tuple(ReferenceValue(inner.resource_type, i) for i in ids) or (
                ReferenceValue(inner.resource_type, NONE),
            )
            out.append(Criterion(c.param, None, values))
        return replace(req, criteria=tuple(out))

    def _cancer_types_as_snomed(self, c: Criterion) -> Criterion:
        """A short cancer-type code (``breast``) searches as the SNOMED CT concept that
        ``dataset create --cancer-type breast`` stores (the cancer-type ConceptMap)."""
        values: list[Any] = []
        for v in c.values:
            coding = None
            if isinstance(v, TokenValue) and v.code and not v.code.isdigit() and v.system is None:
                coding = self.conformance.cancer_type(v.code)
            values.append(TokenValue(coding["system"], coding["code"]) if coding else v)
        return replace(c, values=tuple(values))

    def _modality_as_ids(self, c: Criterion) -> Criterion:
        codes = [
            v.code
            for v in c.values
            if isinstance(v, TokenValue) and v.code and v.system in (None, imaging.DCM)
        ]
        ids = self.queries.datasets_with_modality(codes) if codes else []
        id_param = params_of("ResearchStudy")["_id"]
        return Criterion(
            id_param, None, tuple(TokenValue(None, i) for i in ids) or (TokenValue(None, NONE),)
        )

    def ids(self, req: SearchRequest) -> list[str]:
        """Ids of what ``req`` matches (within its restriction)."""
        if req.resource_type in WRITABLE:
            return [r["id"] for r in self.store.search(req).resources]
        if req.resource_type == "Patient":
            return [r.patient_key for r in self.queries.search_patients(req).rows]
        if req.resource_type == "ImagingStudy":
            return [r.json["0020000D"]["Value"][0] for r in self.queries.search_studies(req).rows]
        return []
