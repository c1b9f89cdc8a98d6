"""Bring blobs and index back into agreement after a crash, with no manual step.

What becomes of a blob whose write was in flight when its process died (a ``put``
journal entry of a dead owner):

* an index row points to it: it is kept (the write had completed);
* no row points to it, and its bytes are intact: the index step is replayed, exactly
  as ingest would have done it (same dataset, never overwriting): the instance
  becomes stored, or, if the index refuses it (the SOP Instance UID is now stored
  with these or other bytes), the blob is removed: its key is unique to that write,
  so no other request can depend on it;
* its bytes do not match its key (a torn write after power loss): quarantined.

A ``drop`` entry (a DELETE, a replaced instance, a failed request) removes its blob
only if no index row points to it. Each removal is decided after the index change
that made the blob unreferenced was committed, and keys are never reused, so no row
can come to point at a removed blob.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from server.core.blobkeys import parse_blob_key
from server.core.records import InstanceRecord, UnreadableInstance, read_instance
from server.index.base import AddOutcome, Index
from server.storage.base import BlobStore
from server.storage.journal import Entry, WriteJournal

log = logging.getLogger("gateway.recovery")


class BadBlob(Exception):
    """A blob whose bytes cannot be indexed as the instance its key names."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_of(store: BlobStore, key: str) -> str:
    digest = hashlib.sha256()
    with store.open(key) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_from_blob(
    store: BlobStore, key: str, patient_secret: bytes, dataset: str | None = None
) -> InstanceRecord:
    """The index record of a stored blob, its dataset taken from the key (BadBlob if not)."""
    name = parse_blob_key(key)
    if name is None:
        raise BadBlob("not a blob name")
    local = store.path(key)  # S3: one download into the read cache; hashed and parsed there
    sha256 = _sha256_file(local)
    if not sha256.startswith(name.content_hash):
        raise BadBlob(f"content SHA-256 {sha256[:16]}... does not match the key")
    try:
        record = read_instance(local, sha256, patient_secret=patient_secret)
    except UnreadableInstance as exc:
        raise BadBlob(f"unreadable: {exc.message}") from exc
    if not name.matches(record.sop_uid, sha256):
        raise BadBlob("the SOP Instance UID inside does not match the key")
    record.blob_key = key
    record.dataset = name.dataset if not name.legacy else dataset
    return record


@dataclass
class RecoveryReport:
    indexed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # could not be settled now

    @property
    def settled(self) -> int:
        return len(self.indexed) + len(self.kept) + len(self.removed) + len(self.quarantined)


class Recovery:
    def __init__(
        self, store: BlobStore, index: Index, journal: WriteJournal, patient_secret: bytes
    ) -> None:
        self.store, self.index, self.journal = store, index, journal
        self.patient_secret = patient_secret

    def recover(self) -> RecoveryReport:
        """Settle every entry of dead processes (start-up; ``check --repair``)."""
        report = RecoveryReport()
        with self.journal.orphaned() as entries:
            if entries is None:
                return report  # another process is recovering
            for entry in entries:
                try:
                    self._settle(entry, report, replay=True)
                except Exception:  # the index is unreachable: the next start tries again
                    log.exception("could not settle %s %s yet", entry.op, entry.key)
                    report.pending.append(entry.key)
                    continue
                self.journal.settled(entry)
        if report.settled:
            log.warning(
                "recovered interrupted writes: %d indexed, %d kept, %d removed, %d quarantined",
                len(report.indexed), len(report.kept), len(report.removed), len(report.quarantined),
            )  # fmt: skip
        return report

    def settle_own(self, entries: Iterable[Entry]) -> None:
        """After a failed request: keep what the index points to, remove the rest.

        Entries that cannot be decided now (the index is unreachable) are handed to
        start-up recovery as ``drop``: a failed request never becomes a stored one.
        """
        report = RecoveryReport()
        for entry in entries:
            try:
                self._settle(Entry(entry.key, "drop"), report, replay=False)
            except Exception:
                log.warning("index unreachable: %s left for recovery", entry.key)
                self.journal.abandon(entry, "drop")
                continue
            self.journal.end(entry)

    def _settle(self, entry: Entry, report: RecoveryReport, *, replay: bool) -> None:
        key = entry.key
        if not self.store.exists(key):
            return
        if self.index.referenced([key]):
            report.kept.append(key)
            return
        if entry.op == "put" and replay:
            try:
                record = record_from_blob(self.store, key, self.patient_secret)
            except BadBlob as exc:
                self.store.quarantine(key, f"interrupted write: {exc.reason}")
                report.quarantined.append(key)
                log.warning("quarantined %s: %s", key, exc.reason)
                return
            result = self.index.add_instances([record], overwrite=False)[0]
            if result.outcome is AddOutcome.STORED:
                report.indexed.append(key)
                return
            if self.index.referenced([key]):
                report.kept.append(key)
                return
        self.store.delete(key)
        report.removed.append(key)
