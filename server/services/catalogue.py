"""The FAIR Data Point's records, computed live: ResearchStudy fields + index aggregations.

Public by design (a catalogue): every caller gets the same answer, so answers are cached
for ``catalogue.cache_seconds`` (one computation per record and format per period, however
many requests arrive). Only datasets that are listed (active, PUBLIC or RESTRICTED) exist
here; any other id, NON_PUBLIC ones included, is the same NotFound as an unknown one.
Counts obey the minimum cell count, as for any caller without row-level access.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rdflib import Graph

from server import __version__
from server.core.dcat.dataset import Figures, dataset_record, distribution_record
from server.core.dcat.fields import Contact, Description, describe
from server.core.dcat.records import CATALOG_ID, Node, catalog_record, fdp_record
from server.core.disclosure import floor_count
from server.core.fhir.conformance import Conformance
from server.errors import NotFound
from server.index.fhir_dicom import DicomFhirQueries
from server.index.fhir_es import EsFhirQueries
from server.index.fhir_store import FhirStore
from server.settings import Settings

MAX_CACHED = 4096
MAX_VALUES = (
    100  # distinct modalities, body parts, manufacturers per record (Elasticsearch's bucket size)
)


class CatalogueService:
    def __init__(
        self,
        store: FhirStore,
        queries: DicomFhirQueries | EsFhirQueries,
        conformance: Conformance,
        settings: Settings,
    ) -> None:
        self.store, self.queries, self.conformance = store, queries, conformance
        self.settings = settings
        self.started = _now()
        self._cache: dict[tuple[str, ...], tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def render(self, kind: str, key: str, base: str, fmt: str) -> bytes:
        """One record (fdp, catalog, dataset, distribution) serialised in an RDF format."""
        return self._cached(
            (kind, key, base, fmt),
            lambda: self._graph(kind, key, base).serialize(format=fmt, encoding="utf-8"),
        )

    def _cached(self, key: tuple[str, ...], compute: Callable[[], bytes]) -> bytes:
        ttl = self.settings.catalogue.cache_seconds
        now = time.monotonic()
        with self._lock:
            hit, generation = self._cache.get(key), self._generation
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        body = compute()
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            if generation == self._generation:  # no write happened while computing
                self._cache[key] = (now, body)
        return body

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def _graph(self, kind: str, key: str, base: str) -> Graph:
        if kind == "fdp":
            return fdp_record(self._node(base, self._listed()))
        if kind == "catalog":
            if key != CATALOG_ID:
                raise NotFound(f"no catalogue {key!r}")
            listed = self._listed()
            return catalog_record(self._node(base, listed), [d.id for d in listed])
        desc = self._description(key)
        node = self._node(base, [desc])
        if kind == "dataset":
            return dataset_record(node, desc, self.figures([desc.id])[desc.id])
        return distribution_record(node, desc)

    def listed_ids(self) -> list[str]:
        return [d.id for d in self._listed()]

    def _listed(self) -> list[Description]:
        out = []
        for resource in self.store.current("ResearchStudy"):  # by id, one query
            if (desc := describe(resource)).listed:
                out.append(desc)
        return out

    def _description(self, dataset_id: str) -> Description:
        resource, _ = self.store.read("ResearchStudy", dataset_id)
        desc = describe(resource) if resource is not None else None
        if desc is None or not desc.listed:
            raise NotFound(f"no dataset {dataset_id!r} in the catalogue")
        first = self.store.vread("ResearchStudy", dataset_id, 1)
        desc.issued = first.last_updated if first is not None else desc.last_updated
        desc.conditions = [self._display(c) for c in desc.conditions]
        return desc

    def _display(self, coding: dict[str, str]) -> dict[str, str]:
        known = self.conformance.cancer_type(coding.get("code", ""))
        return {
            **coding,
            **({"display": known["display"]} if known and known.get("display") else {}),
        }

    def _node(self, base: str, datasets: list[Description]) -> Node:
        cat = self.settings.catalogue
        changes = [d.last_updated for d in datasets if d.last_updated]
        gateway = base.rsplit("/fdp", 1)[0]
        return Node(
            base=base, gateway=gateway, title=cat.title, description=cat.description,
            version=__version__,
            publisher=Contact(cat.publisher_name, cat.publisher_email, cat.publisher_url),
            issued=min(changes, default=self.started), modified=max(changes, default=self.started),
        )  # fmt: skip

    def figures(self, dataset_ids: list[str]) -> dict[str, Figures]:
        """Index aggregations per dataset, counts floored at the minimum cell count."""
        minimum = self.settings.privacy.min_cell_count
        out = {}
        for dataset, stats in self.queries.dataset_statistics(dataset_ids).items():
            out[dataset] = Figures(
                subjects=floor_count(stats["subjects"], minimum),
                studies=floor_count(stats["studies"], minimum),
                sexes=list(stats["sexes"]), modalities=list(stats["modalities"])[:MAX_VALUES],
                body_parts=[(t, self._snomed(t)) for t in stats["body_parts"][:MAX_VALUES]],
                manufacturers=list(stats["manufacturers"])[:MAX_VALUES],
                first_year=_year(stats["first_date"]), last_year=_year(stats["last_date"]),
            )  # fmt: skip
        return out

    def _snomed(self, term: str) -> str | None:
        coding = self.conformance.body_site(term)
        return coding.get("code") if coding else None


def _year(date: Any) -> str | None:
    text = str(date or "")
    return text[:4] if len(text) >= 4 and text[:4].isdigit() else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
