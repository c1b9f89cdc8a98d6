"""The security vocabulary shared by tokens, agreements, enforcement and audit.

Access conditions are EUCAIM's (see terminology/CodeSystem-access-condition.json):

==============================  =================================================
condition                       what it allows
==============================  =================================================
``download``                    search, metadata and instance/pixel retrieval
``in-situ-processing``          search and metadata; no instances or pixels out
``remote-processing``           aggregate answers only (counts, the catalogue)
==============================  =================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Condition(StrEnum):
    DOWNLOAD = "download"
    IN_SITU = "in-situ-processing"
    REMOTE = "remote-processing"


class Action(StrEnum):
    COUNT = "count"  # aggregate answers: _summary=count, catalogue figures
    CATALOGUE = "catalogue"  # read the dataset (ResearchStudy) itself
    SEARCH = "search"  # QIDO, FHIR search/read of study-level resources
    METADATA = "metadata"  # WADO metadata, full ImagingStudy with instances
    RETRIEVE = "retrieve"  # instances, frames, bulk data, rendered images
    STORE = "store"  # STOW into a dataset
    REPLACE = "replace"  # store new content under a SOP Instance UID already stored (corrections)
    DELETE = "delete"  # remove studies (admin)
    ADMIN = "admin"  # datasets, agreements, clients, audit


ALLOWED: dict[Condition, frozenset[Action]] = {
    Condition.DOWNLOAD: frozenset(
        {Action.COUNT, Action.CATALOGUE, Action.SEARCH, Action.METADATA, Action.RETRIEVE}
    ),
    Condition.IN_SITU: frozenset({Action.COUNT, Action.CATALOGUE, Action.SEARCH, Action.METADATA}),
    Condition.REMOTE: frozenset({Action.COUNT, Action.CATALOGUE}),
}
RANK = {Condition.REMOTE: 0, Condition.IN_SITU: 1, Condition.DOWNLOAD: 2}


class Basis(StrEnum):
    """Why a caller may use a dataset (recorded in the audit of every access)."""

    AGREEMENT = "agreement"  # an active data-access agreement names the caller
    DATA_HOLDER = "data-holder"  # the caller pushes into (or curates) the dataset
    ADMIN = "admin"  # an administrator's token
    PUBLIC = "public"  # the dataset is PUBLIC and anonymous reads are allowed


@dataclass(frozen=True)
class Grant:
    """One dataset a caller may use, under the most permissive of its active agreements (or as
    the dataset's data holder, or as an administrator)."""

    dataset: str
    condition: Condition
    agreement: str | None = None  # Contract id; None unless the basis is an agreement
    purpose: str | None = None  # v3 PurposeOfUse code, e.g. HRESCH
    basis: Basis = Basis.AGREEMENT


@dataclass(frozen=True)
class Party:
    """Who a token speaks for, as agreements name parties."""

    client_id: str | None = None
    organization: str | None = None  # Organization id the client belongs to
    issuer: str | None = None  # external identity provider, for user identities
    subject: str | None = None  # user subject at that issuer


@dataclass(frozen=True)
class Principal:
    """The caller of one request, after token validation and agreement lookup."""

    party: Party = field(default_factory=Party)
    anonymous: bool = True
    admin: bool = False
    resource_scopes: frozenset[str] = frozenset()  # SMART v2, e.g. "system/ImagingStudy.rs"
    grants: dict[str, Grant] = field(default_factory=dict)
    store_datasets: frozenset[str] = frozenset()
    curate_datasets: frozenset[str] = frozenset()  # may replace instances (corrections)
    token_id: str | None = None
    unrestricted: bool = False  # authorisation switched off (development only)

    def allows(self, action: Action, dataset: str | None) -> bool:
        if self.unrestricted:
            return True
        if action in (Action.ADMIN, Action.DELETE):
            return self.admin
        if action is Action.STORE:
            return self.admin or (dataset is not None and dataset in self.store_datasets)
        if action is Action.REPLACE:
            return self.admin or (dataset is not None and dataset in self.curate_datasets)
        grant = self.grants.get(dataset or "")
        return grant is not None and action in ALLOWED[grant.condition]

    def datasets_for(self, action: Action) -> frozenset[str] | None:
        """Datasets this caller may do ``action`` on; None means all (no restriction)."""
        if self.unrestricted:
            return None
        return frozenset(d for d, g in self.grants.items() if action in ALLOWED[g.condition])

    def bases(self, datasets: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The bases of the grants on ``datasets`` (all grants if none named), for the audit."""
        return tuple(
            sorted({g.basis.value for d, g in self.grants.items() if not datasets or d in datasets})
        )
