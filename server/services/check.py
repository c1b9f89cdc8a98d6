"""``imaging-gateway check``: compare index and blob store, plan repairs, apply them safely.

Safe for anyone at any time, also while the gateway serves:

* without ``repair`` it only reads and returns the plan;
* blobs are never deleted by ``check``: corrupted or orphaned ones are quarantined;
* keys in the write journal (writes in flight in a live process, or waiting for
  start-up recovery) are left alone, and every candidate is re-checked after the
  listing, so a write finishing meanwhile is not mistaken for damage;
* a plan that would remove many index rows (more than ``MASS_REMOVAL_ROWS`` and more
  than ``MASS_REMOVAL_SHARE`` of all rows, or every row) is refused unless forced:
  an empty blob folder is far more often an unmounted volume than lost data;
* re-indexed instances go back to the dataset named in their blob key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from server.core.blobkeys import parse_blob_key
from server.index.base import AddOutcome, Index
from server.services.recovery import BadBlob, Recovery, record_from_blob, sha256_of
from server.storage.base import BlobStore
from server.storage.journal import WriteJournal

log = logging.getLogger("gateway.check")

MASS_REMOVAL_ROWS = 10
MASS_REMOVAL_SHARE = 0.05
SPOOL_AGE_SECONDS = 3600.0


class Fix(StrEnum):
    REMOVE_ROW = "remove index row"  # its blob is gone
    QUARANTINE_ROW = "quarantine blob and remove index row"  # indexed, bytes corrupted
    QUARANTINE = "quarantine blob"  # not indexed, cannot be indexed
    REINDEX = "re-index blob"  # not indexed, intact: its write completed


@dataclass(frozen=True)
class Action:
    fix: Fix
    key: str
    why: str

    def __str__(self) -> str:
        return f"{self.fix.value} {self.key}: {self.why}"


@dataclass
class CheckPlan:
    indexed: int = 0
    blobs: int = 0
    verified: int = 0  # blobs whose content was hashed
    in_flight: int = 0  # journal entries left to their writer or to recovery
    actions: list[Action] = field(default_factory=list)

    @property
    def rows_removed(self) -> int:
        return sum(a.fix in (Fix.REMOVE_ROW, Fix.QUARANTINE_ROW) for a in self.actions)

    @property
    def consistent(self) -> bool:
        return not self.actions

    def mass_removal(self) -> bool:
        removed = self.rows_removed
        if removed == 0:
            return False
        if removed == self.indexed:
            return True
        return removed > MASS_REMOVAL_ROWS and removed > MASS_REMOVAL_SHARE * self.indexed


class MassRemovalRefused(Exception):
    def __init__(self, plan: CheckPlan) -> None:
        super().__init__(
            f"refusing to remove {plan.rows_removed} of {plan.indexed} index rows "
            f"({plan.blobs} blobs found): is the blob volume mounted? Re-run with --force "
            "if the data really is gone"
        )


@dataclass
class RepairReport:
    recovered: int = 0
    reindexed: list[str] = field(default_factory=list)
    removed_rows: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    spool_cleaned: int = 0


class CheckService:
    def __init__(
        self, store: BlobStore, index: Index, journal: WriteJournal, patient_secret: bytes
    ) -> None:
        self.store = store
        self.index = index
        self.journal = journal
        self.patient_secret = patient_secret

    def plan(self, *, verify: bool = True) -> CheckPlan:
        """What ``repair`` would change; reads only."""
        on_disk = set(self.store.keys())
        indexed = self.index.blob_keys()
        busy = self.journal.live_keys()
        plan = CheckPlan(indexed=len(indexed), blobs=len(on_disk), in_flight=len(busy))
        missing = sorted(k for k in indexed if k not in on_disk and k not in busy)
        for key in missing:
            if not self.store.exists(key):  # not renamed into place after the listing
                plan.actions.append(
                    Action(Fix.REMOVE_ROW, key, f"blob of {indexed[key]} is missing")
                )
        orphans = sorted(k for k in on_disk if k not in indexed and k not in busy)
        orphans = [k for k in orphans if k not in self.index.referenced(orphans)]
        busy = self.journal.live_keys()
        for key in orphans:
            if key not in busy and self.store.exists(key):
                plan.actions.append(self._orphan(key))
        if verify:
            for key in sorted(k for k in indexed if k in on_disk):
                plan.verified += 1
                action = self._verify(key, indexed[key])
                if action is not None:
                    plan.actions.append(action)
        return plan

    def _orphan(self, key: str) -> Action:
        try:
            record = record_from_blob(self.store, key, self.patient_secret)
        except BadBlob as exc:
            return Action(Fix.QUARANTINE, key, f"not indexed and {exc.reason}")
        except FileNotFoundError:
            return Action(Fix.QUARANTINE, key, "vanished while checked")
        name = parse_blob_key(key)
        if name is not None and name.legacy:
            return Action(Fix.QUARANTINE, key, f"not indexed; {record.sop_uid} names no dataset")
        known = self.index.find_by_sop(record.sop_uid)
        if known is not None:
            return Action(
                Fix.QUARANTINE, key, f"not indexed; {record.sop_uid} is (blob {known.blob_key})"
            )
        return Action(
            Fix.REINDEX, key, f"{record.sop_uid} into dataset {record.dataset or '(none)'}"
        )

    def _verify(self, key: str, sop_uid: str) -> Action | None:
        name = parse_blob_key(key)
        try:
            digest = sha256_of(self.store, key)
        except FileNotFoundError:
            return None  # deleted meanwhile
        if name is None or not name.matches(sop_uid, digest):
            return Action(Fix.QUARANTINE_ROW, key, f"content of {sop_uid} does not match its hash")
        return None

    def repair(self, *, verify: bool = True, force: bool = False) -> tuple[CheckPlan, RepairReport]:
        """Settle interrupted writes, then apply the plan (MassRemovalRefused if it is too big)."""
        report = RepairReport()
        report.recovered = (
            Recovery(self.store, self.index, self.journal, self.patient_secret).recover().settled
        )
        plan = self.plan(verify=verify)
        if plan.mass_removal() and not force:
            raise MassRemovalRefused(plan)
        report.spool_cleaned = self.store.clean_spool(older_than_seconds=SPOOL_AGE_SECONDS)
        for action in plan.actions:
            self._apply(action, report)
        return plan, report

    def _apply(self, action: Action, report: RepairReport) -> None:
        key = action.key
        if action.fix is Fix.REMOVE_ROW:
            if not self.store.exists(key):
                self.index.remove_by_blob_keys([key])
                report.removed_rows.append(key)
        elif action.fix is Fix.QUARANTINE_ROW:
            self.index.remove_by_blob_keys([key])
            report.removed_rows.append(key)
            self._quarantine(key, action.why, report)
        elif action.fix is Fix.QUARANTINE:
            self._quarantine(key, action.why, report)
        else:
            self._reindex(key, report)

    def _reindex(self, key: str, report: RepairReport) -> None:
        try:
            record = record_from_blob(self.store, key, self.patient_secret)
        except (BadBlob, FileNotFoundError):
            return  # changed since the plan: the next check sees it again
        result = self.index.add_instances([record], overwrite=False)[0]
        if result.outcome is AddOutcome.STORED:
            report.reindexed.append(key)
        elif not self.index.referenced([key]):
            self._quarantine(key, f"the index refused it ({result.outcome.value})", report)

    def _quarantine(self, key: str, why: str, report: RepairReport) -> None:
        if self.store.quarantine(key, why) is not None:
            report.quarantined.append(key)
            log.warning("quarantined %s: %s", key, why)
