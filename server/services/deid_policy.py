"""Find the de-identification policy and pseudonym secret of a dataset; guard its writes.

``DeidPolicies.for_dataset(dataset)`` answers the policy carried on the dataset's
ResearchStudy (extension ``dataset-deidentification``) and the dataset's secret,
creating the secret on first use. A dataset without a policy (not created yet, or
stored before datasets carried policies), and ``None`` (an instance stored without a
dataset), get ``settings.deid.default_profile``; ``None`` has a secret of its own.

It is called on every ingest, so answers are cached. A policy never changes once a
dataset carries it (:func:`settle_research_study` refuses that, even across a delete),
so a cached answer stays right in every process; datasets without a stored policy
are looked up each time, and every write of a dataset clears the cache anyway.
"""

from __future__ import annotations

import threading
from typing import Any

from server.core.deid.policy import DeidPolicy, PolicyError
from server.core.fhir import deidentification as ext
from server.errors import Conflict, Unprocessable
from server.index.fhir_store import FhirStore, Writer
from server.security.pseudonym_secrets import PseudonymSecrets, SecretError
from server.settings import Settings

RESEARCH_STUDY = "ResearchStudy"


class DeidPolicies:
    def __init__(self, settings: Settings, store: FhirStore, secrets: PseudonymSecrets) -> None:
        self.settings = settings
        self.store = store
        self.secrets = secrets
        self._cache: dict[str | None, tuple[DeidPolicy, str]] = {}
        self._secrets: dict[str | None, str] = {}
        self._lock = threading.Lock()

    @property
    def default(self) -> DeidPolicy:
        return DeidPolicy(profile=self.settings.deid.default_profile)

    def for_dataset(self, dataset: str | None) -> tuple[DeidPolicy, str]:
        """The policy and secret to apply to an instance stored into ``dataset``."""
        hit = self._cache.get(dataset)
        if hit is not None:
            return hit
        policy, fixed = self.policy(dataset)
        secret = self._secrets.get(dataset)
        if secret is None:  # secrets never change once written: cached for good
            secret, _ = self.secrets.get_or_create(dataset)
            self._secrets[dataset] = secret
        if fixed:
            with self._lock:
                self._cache[dataset] = (policy, secret)
        return policy, secret

    def active(self, dataset: str | None) -> bool:
        """Whether instances stored into ``dataset`` are de-identified (no secret made)."""
        hit = self._cache.get(dataset)
        return (hit[0] if hit is not None else self.policy(dataset)[0]).active

    def policy(self, dataset: str | None) -> tuple[DeidPolicy, bool]:
        """(policy, fixed): fixed when the dataset's ResearchStudy carries it."""
        if dataset is None:
            return self.default, True
        stored = self.store.last_content(RESEARCH_STUDY, dataset)
        try:
            carried = ext.policy_of(stored)
        except PolicyError as exc:  # only a damaged store gets here: writes are checked
            raise Unprocessable(f"dataset {dataset}: {exc}") from exc
        return (carried, True) if carried is not None else (self.default, False)

    def invalidate(self, rtype: str = RESEARCH_STUDY) -> None:
        """After a write of ``rtype`` (datasets and Bundles may change policies)."""
        if rtype in (RESEARCH_STUDY, "Bundle"):
            with self._lock:
                self._cache.clear()

    def settle(self, writer: Writer, resource: dict[str, Any]) -> dict[str, Any]:
        """The resource to store for a write (FhirWriteService.prepare): see settle_research_study."""
        if resource.get("resourceType") != RESEARCH_STUDY:
            return resource
        rid = str(resource.get("id"))
        settled = settle_research_study(
            resource, writer.last_content(RESEARCH_STUDY, rid), self.default
        )
        try:
            self.secrets.get_or_create(rid)  # every dataset has its secret from the start
        except SecretError as exc:
            raise Unprocessable(f"dataset {rid}: {exc}") from exc
        return settled

    def secret_of(self, dataset: str) -> str | None:
        """The stored secret of ``dataset`` (administrators only: ``dataset secret``)."""
        try:
            return self.secrets.read(dataset)
        except SecretError as exc:
            raise Unprocessable(str(exc)) from exc


def settle_research_study(
    resource: dict[str, Any], stored: dict[str, Any] | None, default: DeidPolicy
) -> dict[str, Any]:
    """A written ResearchStudy with its policy settled; 422 if invalid, 409 if it changes."""
    try:
        return ext.settle(resource, stored, default)
    except ext.PolicyConflict as exc:
        raise Conflict(str(exc)) from exc
    except PolicyError as exc:
        raise Unprocessable(str(exc)) from exc
