"""The index protocol every backend implements, and the values it trades in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from server.core.federation.plan import Expr
from server.core.qido import QidoQuery
from server.core.records import InstanceRecord


class AddOutcome(StrEnum):
    STORED = "stored"  # new instance
    IDENTICAL = "identical"  # same SOP Instance UID, same content: nothing changed
    REPLACED = "replaced"  # same SOP Instance UID, other content, policy overwrite
    CONFLICT = "conflict"  # same SOP Instance UID, other content, policy reject
    HIERARCHY = "hierarchy"  # series already belongs to another study
    DATASET = "dataset"  # study already belongs to another dataset


@dataclass(frozen=True)
class AddResult:
    outcome: AddOutcome
    replaced_blob_key: str | None = None


class StoredInstance(NamedTuple):
    """What retrieval needs to find and serve one instance's bytes (a named tuple: a series
    of thousands is built per request, and a tuple is several times cheaper to make)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    pixel_index: bytes | None


@dataclass(frozen=True)
class Scope:
    """A study, series or instance addressed by a URL."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None


@dataclass(frozen=True)
class SearchPage:
    rows: list[dict[str, Any]]
    has_more: bool


class Index(Protocol):
    def add_instances(
        self, records: Sequence[InstanceRecord], *, overwrite: bool
    ) -> list[AddResult]:
        """Add records in one durable transaction; one result per record, in order."""

    def find_by_sop(self, sop_uid: str) -> StoredInstance | None: ...

    def deid_record(self, sop_uid: str) -> tuple[str | None, bytes | None] | None:
        """(dataset, DeidRecord JSON or None if stored before de-identification), None if absent."""

    def study_dataset(self, study_uid: str) -> tuple[bool, str | None]:
        """(study exists, its dataset) — what authorisation needs before any retrieval."""

    def search(self, query: QidoQuery) -> SearchPage:
        """PS3.18 10.6: DICOM JSON objects (level JSON merged with computed attributes)."""

    def instances(self, scope: Scope) -> list[StoredInstance]:
        """Instances in the scope, ordered by series then instance number; [] if none."""

    def metadata(self, scope: Scope) -> Iterator[bytes]:
        """Precomputed metadata JSON objects of the scope's instances (relative BulkDataURIs)."""

    def delete(self, scope: Scope) -> list[StoredInstance]:
        """Remove the scope's instances and now-empty series/studies; returns what was removed."""

    def blob_keys(self) -> dict[str, str]:
        """Every indexed instance as blob key -> SOP Instance UID (for consistency checks)."""

    def referenced(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` an index row points to (blobs that must not be removed)."""

    def remove_by_blob_keys(self, keys: Sequence[str]) -> int: ...

    def counts(self) -> dict[str, int]: ...

    def ping(self) -> None:
        """Raise unless the index answers a read of each level now, in constant time (a
        readiness probe; counts() grows with the index)."""

    def close(self) -> None: ...


@dataclass
class DatasetProfile:
    """Whole-dataset figures of a federated-search answer (not narrowed by the query)."""

    age_min: int | None = None  # age at diagnosis (first study), over the dataset's patients
    age_max: int | None = None
    sexes: set[str | None] = field(default_factory=set)  # PatientSex values; None: absent


class FederationIndex(Protocol):
    """EUCAIM federated search on an index backend (contract: tests/contract/test_federation.py)."""

    def federation_counts(
        self, groups: Sequence[tuple[Expr, Sequence[str]]]
    ) -> dict[str, tuple[int, int]]:
        """For each (plan, datasets): (matching studies, distinct patients among them) per
        dataset, aggregated in the engine; datasets with no match are absent."""

    def federation_profiles(self, datasets: Sequence[str]) -> dict[str, DatasetProfile]: ...
