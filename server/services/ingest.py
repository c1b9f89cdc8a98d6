"""Ingest pipeline shared by STOW-RS, ``imaging-gateway import`` and quarantine release (PS3.18 10.5).

Every instance is de-identified before anything is stored: the dataset's policy
(``gateway.deid_policies``, looked up once per request) rewrites each spooled file in
place into its de-identified form (the original header is overwritten; a file the
engine cannot rewrite is deleted), and only that is parsed, stored and indexed. The
original bytes never reach the blob store or the index; spool files of original bytes
are removed on every path.

Order of writes, so that a crash never leaves a half instance visible:
de-identify → parse → journal entry → blob (spooled file renamed into place, under a
key no other write uses) → sync → index commit → acknowledge → journal entry closed.
An index entry never exists without its blob. A blob written but not indexed when
the process dies is settled at the next start (``services/recovery.py``). A refused
or failed write removes only the blob it wrote itself, so it never changes what is
stored.

The STOW answer: a failed part names what the client sent (its SOP Class and SOP
Instance UIDs); a stored part names what is stored (the pseudonymised UIDs and the
RetrieveURL a client can retrieve), since the sent UIDs no longer exist here.

Every refusal caused by UIDs already in use answers the same (see ``UID_IN_USE``), so
a store client learns nothing about which dataset holds a UID or whether it is its own.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
import pydicom

from server.core import stow
from server.core.blobkeys import new_blob_key
from server.core.decoded_size import check_inflated_size
from server.core.deid.engine import Written, deidentify
from server.core.deid.policy import (
    BurnedIn,
    BurnedInSuspected,
    DeidPolicy,
    DeidRecord,
)
from server.core.deid.raw import Sent
from server.core.limits import TooLarge
from server.core.mediatypes import parse_media_type
from server.core.records import (
    InstanceRecord,
    UnreadableInstance,
    read_instance,
    record_from_parsed,
)
from server.core.stow import PartOutcome
from server.errors import NoDataset, ServiceUnavailable
from server.index.base import AddOutcome, Index
from server.metrics import observe_ingest
from server.security.keys import patient_id_key
from server.services.backup_files import sha256_file
from server.services.quarantine import Held, Quarantine
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
BURNED_IN_REFUSED = "burned-in text suspected; refused by the dataset policy"
BURNED_IN_HELD = "burned-in text suspected; held for an administrator"
DEID_FAILED = "the instance could not be de-identified; nothing stored"
_SENT_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")


class PolicyLookup(Protocol):
    def for_dataset(self, dataset: str | None) -> tuple[DeidPolicy, str]: ...

    def active(self, dataset: str | None) -> bool: ...


@dataclass
class IngestItem:
    """One spooled instance waiting to be stored."""

    path: Path
    sha256: str | None  # of the sent bytes; None: not taken while spooling (hashed if kept)
    content_type: str = "application/dicom"
    # SOP Class and Instance UIDs the sender named beside the bytes (a C-STORE request's
    # Affected SOP Class/Instance UID): with no study to match, the header is not parsed
    # once more just to name them in an outcome
    sent_uids: tuple[str, str] | None = None


@dataclass
class _Ready:
    """A de-identified instance parsed and ready to be stored."""

    record: InstanceRecord
    path: Path


class IngestService:
    def __init__(
        self,
        store: BlobStore,
        index: Index,
        settings: Settings,
        journal: WriteJournal,
        policies: PolicyLookup,
    ) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.journal = journal
        self.policies = policies
        self.patient_secret = patient_id_key(settings.data_dir, settings.database())
        self.recovery = Recovery(store, index, journal, self.patient_secret)
        self.quarantine = Quarantine(settings.data_dir)

    def store_instances(
        self,
        items: list[IngestItem],
        study_uid: str | None = None,
        dataset: str | None = None,
        *,
        replace: bool = False,
    ) -> list[PartOutcome]:
        """PS3.18 10.5.1: de-identify and store each item; one failing item never stops the others.

        ``replace``: an instance whose SOP Instance UID is already stored in this dataset
        with other content replaces it (a correction; the caller checked the right to).
        The old content is served until the new one is stored and indexed, in one index
        transaction; its blob is removed after. Raises NoDataset (nothing stored) when
        neither ``dataset`` nor GATEWAY_DEFAULT_DATASET names one (see ``needs_dataset``).
        """
        dataset = dataset if dataset is not None else self.settings.default_dataset
        outcomes = [PartOutcome() for _ in items]
        sizes = [_size(item.path) for item in items]
        try:
            if dataset is None and self.needs_dataset:
                raise NoDataset
            policy, secret = self.policies.for_dataset(dataset)
            ready: list[tuple[int, _Ready]] = []
            for n, item in enumerate(items):
                prepared = self._prepare(item, outcomes[n], study_uid, dataset, policy, secret)
                if prepared is not None:
                    ready.append((n, prepared))
            self._store(ready, outcomes, dataset, replace)
        finally:
            for item in items:  # original bytes never outlive the request, whatever happened
                item.path.unlink(missing_ok=True)
        observe_ingest(sizes, [o.failure for o in outcomes])
        return outcomes

    def keeps_sent_bytes(self, dataset: str | None) -> bool:
        """Whether a store into ``dataset`` keeps the bytes as sent (profile ``none``), so
        their sha256 is worth taking while they are spooled. A de-identified instance is
        new bytes, hashed as they are written: hashing the sent bytes too is wasted work."""
        dataset = dataset if dataset is not None else self.settings.default_dataset
        try:
            return not self.policies.active(dataset)
        except Exception:  # the store answers this again, with its own error
            return True

    @property
    def needs_dataset(self) -> bool:
        """Whether a store must name a dataset: with authorisation on, a study in no dataset
        would be visible to nobody (not even administrators), so it is refused. With
        authorisation off (development only) every study is visible and none is needed."""
        return self.settings.auth.enabled

    def store_deidentified(self, path: Path, deid: DeidRecord, dataset: str | None) -> PartOutcome:
        """Store one already de-identified file (quarantine release): parse, store, index."""
        outcome = PartOutcome()
        try:
            record = self._read(path, sha256_file(path), outcome)
            if record is not None:
                record.deid = orjson.dumps(deid.to_json())
                self._store([(0, _Ready(record, path))], [outcome], dataset)
        finally:
            path.unlink(missing_ok=True)
        return outcome

    def release(self, held_id: str) -> tuple[Held, PartOutcome]:
        """Store a quarantined instance (an administrator looked at it); removed once stored."""
        spool = self.journal.spool_dir()
        try:
            held, path = self.quarantine.take(held_id, spool)
            outcome = self.store_deidentified(path, held.deid, held.dataset)
            if outcome.stored:
                self.quarantine.delete(held_id)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        return held, outcome

    # -- de-identification ------------------------------------------------------------------

    def _prepare(
        self,
        item: IngestItem,
        outcome: PartOutcome,
        study_uid: str | None,
        dataset: str | None,
        policy: DeidPolicy,
        secret: str,
    ) -> _Ready | None:
        media = parse_media_type(item.content_type)
        if media.type != "application/dicom":
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = f"part media type {media.type} is not application/dicom"
            return None
        try:  # a deflated data set is inflated (counted, capped) before any parser sees it
            with item.path.open("rb") as f:
                check_inflated_size(f, self.settings.stow.max_inflated_bytes)
        except TooLarge as exc:
            item.path.unlink(missing_ok=True)
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = exc.message
            log.info("refused part: %s", exc.message)
            return None
        if not policy.active and study_uid is None and item.sent_uids is not None:
            outcome.sop_class_uid, outcome.sop_uid = item.sent_uids
        elif not policy.active:  # the engine parses the header once and hands it over
            sent_study = _sent_uids(item.path, outcome)
            if _study_mismatch(study_uid, sent_study, outcome):
                return None
        out = self._deidentify(item, outcome, study_uid, dataset, policy, secret)
        if out is None:
            return None
        path, deid, digest, written = out
        sha256 = digest or sha256_file(path)
        record = self._read(path, sha256, outcome, written)
        if record is None:
            path.unlink(missing_ok=True)
            return None
        record.deid = orjson.dumps(deid.to_json())
        return _Ready(record, path)

    def _deidentify(
        self,
        item: IngestItem,
        outcome: PartOutcome,
        study_uid: str | None,
        dataset: str | None,
        policy: DeidPolicy,
        secret: str,
    ) -> tuple[Path, DeidRecord, str | None, Written | None] | None:
        """The de-identified item (its spooled file rewritten in place: the original bytes
        are gone), its record, sha256 (None: not known yet) and header as written (None:
        parse the file), or None (failed; the spooled file is deleted)."""
        if not policy.active:  # ``none``: the data arrives de-identified; the file is as sent
            none = DeidRecord(profile="none", options=[], edition="")
            return item.path, none, item.sha256, None

        def sent(uids: Sent) -> None:
            if uids.readable and uids.sop_class and uids.sop_instance and uids.study:
                outcome.sop_class_uid, outcome.sop_uid = uids.sop_class, uids.sop_instance
            if _study_mismatch(study_uid, uids.study, outcome):
                raise _Mismatch

        path = item.path
        try:  # rewritten in place: the original header is overwritten, no copy made
            done = deidentify(path, path, policy, secret, on_read=sent)
            return path, done.record, done.sha256, done.written
        except _Mismatch:
            pass
        except BurnedInSuspected as exc:
            if policy.burned_in is BurnedIn.quarantine:
                dst = path.with_name(path.name + ".held")
                self._hold(path, dst, outcome, dataset, policy, secret, exc.reason)
            else:
                outcome.failure = stow.CANNOT_UNDERSTAND
                outcome.message = BURNED_IN_REFUSED
                log.info("refused part: burned-in text suspected (%s)", exc.reason)
        except UnreadableInstance as exc:
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = exc.message
            log.info("refused part: %s", exc.message)
        except Exception:  # hostile bytes the engine could not handle: the part fails
            log.exception("de-identification failed")
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = DEID_FAILED
        path.unlink(missing_ok=True)  # failed: the original (or what is left of it) goes
        return None

    def _hold(
        self,
        src: Path,
        dst: Path,
        outcome: PartOutcome,
        dataset: str | None,
        policy: DeidPolicy,
        secret: str,
        reason: str,
    ) -> None:
        """Quarantine: the de-identified copy (never the original) is held for an administrator."""
        outcome.failure = stow.CANNOT_UNDERSTAND
        outcome.message = BURNED_IN_HELD
        try:
            deid = _deidentify_suspect(src, dst, policy, secret)
            held = self.quarantine.hold(dst, deid, dataset, reason)
        except Exception:
            log.exception("could not quarantine an instance; it was refused instead")
            outcome.message = BURNED_IN_REFUSED
            return
        finally:
            dst.unlink(missing_ok=True)
        log.info("quarantined instance %s: burned-in text suspected (%s)", held, reason)

    def _read(
        self, path: Path, sha256: str, outcome: PartOutcome, written: Written | None = None
    ) -> InstanceRecord | None:
        limits = self.settings.pixel_limits()
        try:
            if written is None:
                record = read_instance(path, sha256, limits, patient_secret=self.patient_secret)
            else:  # the engine's header is the written file's: no second parse
                record = record_from_parsed(
                    path,
                    written.ds,
                    written.pixel_offset,
                    sha256,
                    limits,
                    patient_secret=self.patient_secret,
                )
        except UnreadableInstance as exc:
            outcome.failure = stow.CANNOT_UNDERSTAND
            outcome.message = exc.message
            log.info("refused part: %s", exc.message)
            return None
        return record

    # -- store and index ---------------------------------------------------------------------

    def _store(
        self,
        ready: list[tuple[int, _Ready]],
        outcomes: list[PartOutcome],
        dataset: str | None,
        replace: bool = False,
    ) -> None:
        pending: list[tuple[int, InstanceRecord, Entry]] = []
        for n, item in ready:
            record = item.record
            record.dataset = dataset
            record.blob_key = new_blob_key(record.sop_uid, record.sha256, record.dataset)
            entry = self.journal.begin(record.blob_key, "put")
            try:
                self.store.put_file(record.blob_key, item.path)
            except OSError as exc:
                log.error("blob write failed for %s: %s", record.sop_uid, exc)
                item.path.unlink(missing_ok=True)
                self.recovery.settle_own([entry])
                outcomes[n].failure = stow.OUT_OF_RESOURCES
                outcomes[n].message = "storage write failed"
                continue
            pending.append((n, record, entry))
        if pending:
            self.store.sync()
        self._failpoint("after_blob_write")
        if pending:
            self._index(pending, outcomes, replace)

    def _index(
        self,
        pending: list[tuple[int, InstanceRecord, Entry]],
        outcomes: list[PartOutcome],
        replace: bool,
    ) -> None:
        overwrite = replace or self.settings.stow.duplicate_policy is DuplicatePolicy.overwrite
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
            if outcomes[n].stored:
                _stored(outcomes[n], record)
                outcomes[n].added = result.outcome.value

    def _drop(self, key: str) -> None:
        """Remove the blob of a replaced instance (its row is gone; keys are never reused)."""
        entry = self.journal.begin(key, "drop")
        self.recovery.settle_own([entry])

    def _failpoint(self, name: str) -> None:
        if self.settings.failpoint == name:
            log.critical("failpoint %s reached: exiting without cleanup", name)
            os._exit(137)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _stored(outcome: PartOutcome, record: InstanceRecord) -> None:
    """A stored part is answered with what is stored: the pseudonymised UIDs."""
    outcome.sop_class_uid, outcome.sop_uid = record.sop_class_uid, record.sop_uid
    outcome.study_uid, outcome.series_uid = record.study_uid, record.series_uid
    outcome.warnings = list(record.warnings)
    outcome.deid = record.deid


class _Mismatch(Exception):
    """The sent StudyInstanceUID is not the one in the URL (the outcome says so)."""


def _study_mismatch(study_uid: str | None, sent_study: str, outcome: PartOutcome) -> bool:
    if study_uid is not None and sent_study and sent_study != study_uid:
        outcome.failure = stow.DATA_SET_DOES_NOT_MATCH
        outcome.message = "StudyInstanceUID does not match the URL"
        return True
    return False


def _sent_uids(path: Path, outcome: PartOutcome) -> str:
    """Note the sent SOP Class/Instance UIDs (a failure names them); the sent Study UID."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_SENT_TAGS))
        values = [str(ds.get(k, "") or "").strip().rstrip("\x00")[:64] for k in _SENT_TAGS]
        readable = "TransferSyntaxUID" in ds.file_meta
    except Exception:  # unreadable: de-identification refuses it with the reason
        return ""
    if readable and all(values):  # a file the pipeline can read at all
        outcome.sop_class_uid, outcome.sop_uid = values[0], values[1]
    return values[2]


def _deidentify_suspect(src: Path, dst: Path, policy: DeidPolicy, secret: str) -> DeidRecord:
    """De-identify an instance the burned-in check stopped, for the quarantine.

    The header is de-identified exactly as usual and streamed like any other instance;
    BurnedInAnnotation stays as sent. Releasing it is the administrator's statement that
    the pixels carry no identifying text (a held copy is never served before).
    """
    return deidentify(src, dst, policy, secret, check_burned_in=False).record
