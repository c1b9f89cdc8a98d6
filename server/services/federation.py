"""EUCAIM federated search (Tier 2): authorise, narrow to the answering datasets, count in
the index, protect the counts, answer as the reference mediator does.

See README "Joining EUCAIM" for the contract and the decisions where the reference has bugs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.core.federation import datasets as ds
from server.core.federation.obfuscation import Protection, laplace, protect
from server.core.federation.plan import Expr, resolve
from server.core.federation.query import Query, parse_request
from server.errors import Forbidden, NotFound, Unauthorized
from server.index.base import FederationIndex
from server.index.federation_noise import NoiseStore
from server.index.fhir_store import FhirStore
from server.security.model import Principal
from server.security.scopes import FEDERATION_SEARCH
from server.settings import FederationSettings

log = logging.getLogger("gateway.federation")
Statistics = Callable[[list[str]], dict[str, dict[str, Any]]]


@dataclass
class SearchOutcome:
    answer: dict[str, Any]
    datasets: tuple[str, ...]  # those in the answer (for the audit)
    query_hash: str
    issues: list[str] = field(default_factory=list)


class FederatedSearch:
    def __init__(
        self, fhir_store: FhirStore, index: FederationIndex, statistics: Statistics,
        settings: FederationSettings, noise: NoiseStore, rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self.fhir_store = fhir_store
        self.index = index
        self.statistics = statistics
        self.settings = settings
        self.noise = noise
        self.rng = rng or random.SystemRandom()
        self.unknown: Counter[str] = Counter()  # conditions evaluated as false, by reason

    # -- who may ask ----------------------------------------------------------
    def check_secret(self, presented: str | None) -> None:
        """``Authorization: Secret <token>``: 404 when no token is configured (the reference
        disables the route then), 401 when it does not match (compared in constant time)."""
        configured = self.settings.eucaim_search_token
        if configured is None:
            raise NotFound("Not found: '/api/datasets/eucaimSearch'")
        expected = configured.get_secret_value().encode()
        if presented is None or not hmac.compare_digest(presented.encode(), expected):
            raise Unauthorized("unauthorized user")

    @staticmethod
    def check_bearer(caller: Principal) -> None:
        if caller.unrestricted or FEDERATION_SEARCH in caller.resource_scopes:
            return
        if caller.anonymous:
            raise Unauthorized("a token with the scope federation:search is required")
        raise Forbidden(f"the token lacks the scope {FEDERATION_SEARCH}")

    # -- the search -----------------------------------------------------------
    def search(self, body: Any) -> SearchOutcome:
        query = parse_request(body)
        for issue in query.issues:
            self.unknown[" ".join(issue.split()[:2])] += 1  # bounded: the reason, not the value
            log.warning("federated search: condition evaluated as false: %s", issue)
        answering = self.answering()
        groups = _groups(query, answering)
        counts = self.index.federation_counts(groups)
        hits = [a for a in answering if a.id in counts]
        profiles = self.index.federation_profiles([a.id for a in hits])
        stats = self.statistics([a.id for a in hits])
        collections = []
        for a in hits:
            studies, subjects = counts[a.id]
            p, s = profiles[a.id], stats[a.id]
            collections.append({
                "id": a.id, "name": a.name,
                "studies_count": self._protect(a.id, "studies", studies),
                "subjects_count": self._protect(a.id, "subjects", subjects),
                "age_range": ds.age_range(p.age_min, p.age_max),
                "gender": ds.genders(p.sexes),
                "modality": list(s["modalities"]), "body_parts": list(s["body_parts"]),
                "description": a.description,
            })  # fmt: skip
        digest = hashlib.sha256(orjson.dumps(body.get("ast"), option=orjson.OPT_SORT_KEYS))
        return SearchOutcome(
            {"collections": collections},
            tuple(a.id for a in hits),
            digest.hexdigest()[:16],
            query.issues,
        )

    def answering(self) -> list[ds.Answering]:
        out = []
        for resource in self.fhir_store.current("ResearchStudy"):  # by id, one query
            if ds.answers(resource):
                out.append(ds.answering(resource))
        return out

    def _protect(self, dataset: str, measure: str, true_count: int) -> int:
        s = self.settings
        delta = s.delta_subjects if measure == "subjects" else s.delta_studies
        p = Protection(s.min_count, s.rounding_step, s.noise, s.epsilon, delta)

        def draw() -> float:
            key = (dataset, measure, true_count, s.epsilon, delta)
            return self.noise.sample(key, lambda: laplace(delta / s.epsilon, self.rng))

        return protect(true_count, p, draw)


def _groups(query: Query, answering: Sequence[ds.Answering]) -> list[tuple[Expr, list[str]]]:
    """Datasets grouped by their resolved plan (diagnosis known per dataset): one index
    query per distinct plan, usually one or two."""
    groups: dict[Expr, list[str]] = {}
    for a in answering:
        groups.setdefault(resolve(query.plan, a.cancer_types), []).append(a.id)
    return list(groups.items())
