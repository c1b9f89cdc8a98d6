"""Ingest pipeline shared by STOW-RS and ``imaging-gateway import`` (PS3.18 10.5).

Order of writes, so that a crash never leaves a half instance visible:
parse → blob (spooled file renamed into place) → sync → index commit → acknowledge.
A blob written but not indexed when the process dies is indexed again by
``imaging-gateway check --repair``; an index entry never exists without its blob.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from server.core import stow
from server.core.mediatypes import parse_media_type
from server.core.records import InstanceRecord, UnreadableInstance, read_instance
from server.core.stow import PartOutcome
from server.errors import ServiceUnavailable
from server.index.base import AddOutcome, Index
from server.security.keys import patient_id_key
from server.settings import DuplicatePolicy, Settings
from server.storage.base import BlobStore

log = logging.getLogger("gateway.ingest")


@dataclass
class IngestItem:
    """One spooled instance waiting to be stored."""

    path: Path
    sha256: str
    content_type: str = "application/dicom"


class IngestService:
    def __init__(self, store: BlobStore, index: Index, settings: Settings) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.patient_secret = patient_id_key(settings.data_dir)

    def store_instances(
        self, items: list[IngestItem], study_uid: str | None = None, dataset: str | None = None
    ) -> list[PartOutcome]:
        """PS3.18 10.5.1: store each item; one failing item never stops the others."""
        outcomes = [PartOutcome() for _ in items]
        pending: list[tuple[int, InstanceRecord, bool]] = []
        for n, item in enumerate(items):
            record = self._parse(item, outcomes[n], study_uid)
            if record is None:
                continue
            record.dataset = dataset if dataset is not None else self.settings.default_dataset
            try:
                written = self._write_blob(record, item.path)
            except OSError as exc:
                log.error("blob write failed for %s: %s", record.sop_uid, exc)
                outcomes[n].failure = stow.OUT_OF_RESOURCES
                outcomes[n].message = "storage write failed"
                continue
            pending.append((n, record, written))
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
            record = read_instance(item.path, item.sha256, patient_secret=self.patient_secret)
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

    def _write_blob(self, record: InstanceRecord, source: Path) -> bool:
        """Move the spooled file into the store.

        Keys are content-addressed, so renaming over an existing blob with the same
        key replaces it with identical bytes; no existence check is needed.
        """
        self.store.put_file(record.blob_key, source)
        return True

    def _index(
        self, pending: list[tuple[int, InstanceRecord, bool]], outcomes: list[PartOutcome]
    ) -> None:
        overwrite = self.settings.stow.duplicate_policy is DuplicatePolicy.overwrite
        try:
            results = self.index.add_instances([r for _, r, _ in pending], overwrite=overwrite)
        except ServiceUnavailable:
            # The index is down: answer 503 (Retry-After) for the whole request. Nothing was
            # acknowledged; blobs already moved are reconciled by `check --repair`.
            raise
        except Exception:
            # Blobs stay: one may be the (identical) blob of an already indexed
            # instance. Those not indexed are reconciled by ``check --repair``.
            log.exception("index write failed; %d instance(s) not stored", len(pending))
            for n, _, _ in pending:
                outcomes[n].failure = stow.PROCESSING_FAILURE
                outcomes[n].message = "index write failed"
            return
        for (n, record, written), result in zip(pending, results, strict=True):
            if result.outcome in (AddOutcome.CONFLICT, AddOutcome.HIERARCHY, AddOutcome.DATASET):
                if written:
                    self.store.delete(record.blob_key)
                if result.outcome is AddOutcome.CONFLICT:
                    outcomes[n].failure = stow.DUPLICATE_SOP_INSTANCE
                    outcomes[n].message = "SOP Instance UID already stored with other content"
                elif result.outcome is AddOutcome.HIERARCHY:
                    outcomes[n].failure = stow.DATA_SET_DOES_NOT_MATCH
                    outcomes[n].message = "SeriesInstanceUID belongs to another study"
                else:
                    outcomes[n].failure = stow.DATA_SET_DOES_NOT_MATCH
                    outcomes[n].message = "StudyInstanceUID belongs to another dataset"
            elif result.replaced_blob_key and result.replaced_blob_key != record.blob_key:
                self.store.delete(result.replaced_blob_key)

    def _failpoint(self, name: str) -> None:
        if self.settings.failpoint == name:
            log.critical("failpoint %s reached: exiting without cleanup", name)
            os._exit(137)
