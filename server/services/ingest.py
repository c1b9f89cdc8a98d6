"""Ingest pipeline shared by STOW-RS and ``imaging-gateway import`` (PS3.18 10.5).

Order of writes, so that a crash never leaves a half instance visible:
parse → journal entry → blob (spooled file renamed into place, under a key no other
write uses) → sync → index commit → acknowledge → journal entry closed.
An index entry never exists without its blob. A blob written but not indexed when
the process dies is settled at the next start (``services/recovery.py``). A refused
or failed write removes only the blob it wrote itself, so it never changes what is
stored.

Every refusal caused by UIDs already in use answers the same (see ``UID_IN_USE``), so
a store client learns nothing about which dataset holds a UID or whether it is its own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from server.core import stow
from server.core.blobkeys import new_blob_key
from server.core.mediatypes import parse_media_type
from server.core.records import InstanceRecord, UnreadableInstance, read_instance
from server.core.stow import PartOutcome
from server.errors import ServiceUnavailable
from server.index.base import AddOutcome, Index
from server.security.keys import patient_id_key
from server.services.recovery import Recovery
from server.settings import DuplicatePolicy, Settings
from server.storage.base import BlobStore
from server.storage.journal import Entry, WriteJournal

log = logging.getLogger("gateway.ingest")

# One answer for every refusal that depends on what is already stored (the SOP Instance
# UID stored with other content, or any of the instance's UIDs held by another dataset
# or study): the client cannot tell its own dataset's instances from others'.
UID_IN_USE = "UIDs already in use by another instance; nothing stored"  # fits LO (64)
_UID_REFUSALS = (AddOutcome.CONFLICT, AddOutcome.HIERARCHY, AddOutcome.DATASET)


@dataclass
class IngestItem:
    """One spooled instance waiting to be stored."""

    path: Path
    sha256: str
    content_type: str = "application/dicom"


class IngestService:
    def __init__(
        self, store: BlobStore, index: Index, settings: Settings, journal: WriteJournal
    ) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.journal = journal
        self.patient_secret = patient_id_key(settings.data_dir)
        self.recovery = Recovery(store, index, journal, self.patient_secret)

    def store_instances(
        self, items: list[IngestItem], study_uid: str | None = None, dataset: str | None = None
    ) -> list[PartOutcome]:
        """PS3.18 10.5.1: store each item; one failing item never stops the others."""
        outcomes = [PartOutcome() for _ in items]
        pending: list[tuple[int, InstanceRecord, Entry]] = []
        for n, item in enumerate(items):
            record = self._parse(item, outcomes[n], study_uid)
            if record is None:
                continue
            record.dataset = dataset if dataset is not None else self.settings.default_dataset
            record.blob_key = new_blob_key(record.sop_uid, record.sha256, record.dataset)
            entry = self.journal.begin(record.blob_key, "put")
            try:
                self.store.put_file(record.blob_key, item.path)
            except OSError as exc:
                log.error("blob write failed for %s: %s", record.sop_uid, exc)
                self.recovery.settle_own([entry])
                outcomes[n].failure = stow.OUT_OF_RESOURCES
                outcomes[n].message = "storage write failed"
                continue
            pending.append((n, record, entry))
        if pending:
            self.store.sync()
        self._failpoint("after_blob_write")
        if pending:
            self._index(pending, outcomes)
        return outcomes

    def _parse(
        self, item: IngestItem, outcome: PartOutcome, study_uid: str | None
    ) -> InstanceRecord | None:
        media = parse_media_type(item.content_type)
        if media.type != "application/dicom":
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = f"part media type {media.type} is not application/dicom"
            return None
        try:
            record = read_instance(
                item.path,
                item.sha256,
                self.settings.pixel_limits(),
                patient_secret=self.patient_secret,
            )
        except UnreadableInstance as exc:
            outcome.sop_class_uid, outcome.sop_uid = exc.sop_class_uid, exc.sop_uid
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = exc.message
            log.info("refused part: %s", exc.message)
            return None
        outcome.sop_class_uid, outcome.sop_uid = record.sop_class_uid, record.sop_uid
        outcome.study_uid, outcome.series_uid = record.study_uid, record.series_uid
        if study_uid is not None and record.study_uid != study_uid:
            outcome.failure = stow.DATA_SET_DOES_NOT_MATCH
            outcome.message = "StudyInstanceUID does not match the URL"
            return None
        outcome.warnings = list(record.warnings)
        return record

    def _index(
        self, pending: list[tuple[int, InstanceRecord, Entry]], outcomes: list[PartOutcome]
    ) -> None:
        overwrite = self.settings.stow.duplicate_policy is DuplicatePolicy.overwrite
        entries = [entry for _, _, entry in pending]
        try:
            if self.settings.failpoint == "index_write_fails":  # tests: a failing index write
                raise RuntimeError("failpoint index_write_fails")
            results = self.index.add_instances([r for _, r, _ in pending], overwrite=overwrite)
        except ServiceUnavailable:
            # The index is down: answer 503 (Retry-After) for the whole request. Nothing
            # is acknowledged; blobs the index may or may not point to are settled.
            self.recovery.settle_own(entries)
            raise
        except Exception:
            log.exception("index write failed; %d instance(s) not stored", len(pending))
            self.recovery.settle_own(entries)
            for n, _, _ in pending:
                outcomes[n].failure = stow.PROCESSING_FAILURE
                outcomes[n].message = "index write failed"
            return
        self._failpoint("after_index_commit")
        for (n, record, entry), result in zip(pending, results, strict=True):
            if result.outcome in _UID_REFUSALS:
                outcomes[n].failure = stow.DATA_SET_DOES_NOT_MATCH
                outcomes[n].message = UID_IN_USE
            if result.outcome not in (AddOutcome.STORED, AddOutcome.REPLACED):
                self.store.delete(record.blob_key)  # this write's own key: nothing points to it
            elif result.replaced_blob_key and result.replaced_blob_key != record.blob_key:
                self._drop(result.replaced_blob_key)
            self.journal.end(entry)

    def _drop(self, key: str) -> None:
        """Remove the blob of a replaced instance (its row is gone; keys are never reused)."""
        entry = self.journal.begin(key, "drop")
        self.recovery.settle_own([entry])

    def _failpoint(self, name: str) -> None:
        if self.settings.failpoint == name:
            log.critical("failpoint %s reached: exiting without cleanup", name)
            os._exit(137)
