"""C-STORE SCP (PS3.4 B.2): each received instance goes through the one ingest pipeline.

The instance is written, as received (preamble, File Meta Information and data set
bytes exactly as the peer encoded them), into a spool folder of this process's write
journal and handed to ``IngestService.store_instances`` like one STOW part: validation,
de-identification, atomic write, index and audit all apply. One C-STORE is one ingest
call, so an association that dies half-way leaves every earlier instance complete and
nothing of the one in flight.

Audit: as PS3.15 A.5.3.7 ("DICOM Instances Transferred") has it, the instances an
association stores into one study are audited together: the first one at once (study,
dataset, its SOP Instance UID), the later ones as one event written when the association
moves on to another study, when it ends (release, abort, a dead peer), or after
``AUDIT_BATCH_SECONDS`` / ``AUDIT_BATCH_SIZE`` instances, whichever comes first; a
refused or failed C-STORE is audited at once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from server.dimse.session import (
    REFUSED_NOT_AUTHORISED,
    SUCCESS,
    Caller,
    audit,
    caller_of,
)
from server.errors import ServiceUnavailable
from server.security.model import Action
from server.services.ingest import IngestItem

if TYPE_CHECKING:
    from server.app import Gateway

log = logging.getLogger("gateway.dimse")
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
AUDIT_BATCH_SECONDS = 5.0  # a crash may lose this much of a study's instance list
AUDIT_BATCH_SIZE = 500
_BATCH, _CLOSED = "_gateway_stored", "_gateway_closed"
_flush_lock = threading.Lock()


@dataclass
class _Transferred:
    """Instances one association stored into one study, not audited yet."""

    caller: Caller
    dataset: str
    study: str
    since: float = field(default_factory=time.monotonic)
    instances: list[str] = field(default_factory=list)


def target_dataset(gateway: Gateway, caller: Caller) -> str | None:
    """The dataset a client's C-STOREs go to: the first it is registered to store into."""
    client = gateway.clients.get(caller.node.client_id)
    if client is None:
        return None
    for dataset in client.store_datasets:
        if caller.principal.allows(Action.STORE, dataset):
            return dataset
    if caller.principal.unrestricted:  # authorisation off (development): stored as sent
        return gateway.settings.default_dataset or ""
    return None


def handle_store(event: Any, gateway: Gateway) -> Any:
    """EVT_C_STORE: store one instance; the answer is its C-STORE status."""
    caller = caller_of(gateway, event)
    dataset = target_dataset(gateway, caller) if caller else None
    sop_uid = str(event.request.AffectedSOPInstanceUID or "")
    entities = (f"instance:{sop_uid}",) if sop_uid else ()
    if caller is None or dataset is None:
        # a registered AE with no store dataset, or (authorisation off) no default dataset:
        # refused, nothing stored (a study in no dataset would be visible to nobody)
        audit(gateway, event, caller, action="store", method="C-STORE",
              status=REFUSED_NOT_AUTHORISED, entities=entities)  # fmt: skip
        reason = "no store dataset for this AE (clients add --store DATASET)"
        return _status(REFUSED_NOT_AUTHORISED, reason)
    status, comment, study = _ingest(gateway, event, dataset or None)
    if status == SUCCESS and study and sop_uid:
        _transferred(gateway, event, caller, dataset, study, sop_uid)
        return _status(status, comment)
    if study:
        entities = (f"study:{study}", *entities)
    audit(gateway, event, caller, action="store", method="C-STORE", status=status,
          datasets=(dataset,) if dataset else (), entities=entities)  # fmt: skip
    return _status(status, comment)


def _transferred(
    gateway: Gateway, event: Any, caller: Caller, dataset: str, study: str, sop_uid: str
) -> None:
    """Add a stored instance to its association's audit batch (see the module docstring)."""
    batch: _Transferred | None = getattr(event.assoc, _BATCH, None)
    if batch is not None and (
        batch.study != study
        or batch.dataset != dataset
        or batch.caller.node.client_id != caller.node.client_id
        or len(batch.instances) >= AUDIT_BATCH_SIZE
        or time.monotonic() - batch.since > AUDIT_BATCH_SECONDS
    ):
        flush_transferred(event, gateway)
        batch = None
    if batch is None:
        # the first instance of a study on this association is audited at once, so that a
        # crash can lose at most the list of the study's later instances, never the access
        batch = _Transferred(caller, dataset, study)
        setattr(event.assoc, _BATCH, batch)
        audit(gateway, event, caller, action="store", method="C-STORE", status=SUCCESS,
              datasets=(dataset,) if dataset else (),
              entities=(f"study:{study}", f"instance:{sop_uid}"))  # fmt: skip
        return
    batch.instances.append(sop_uid)
    if getattr(event.assoc, _CLOSED, False):
        flush_transferred(event, gateway)


def on_connection_close(event: Any, gateway: Gateway) -> None:
    """EVT_CONN_CLOSE: the batch is audited; a store still finishing is audited alone."""
    setattr(event.assoc, _CLOSED, True)
    flush_transferred(event, gateway)


def flush_transferred(event: Any, gateway: Gateway) -> None:
    """Audit the association's batch of stored instances, if any."""
    with _flush_lock:  # the association's thread and its connection's close may both flush
        batch: _Transferred | None = getattr(event.assoc, _BATCH, None)
        setattr(event.assoc, _BATCH, None)
    if batch is None or not batch.instances:
        return
    entities = (f"study:{batch.study}", *(f"instance:{uid}" for uid in batch.instances))
    audit(gateway, event, batch.caller, action="store", method="C-STORE", status=SUCCESS,
          datasets=(batch.dataset,) if batch.dataset else (), entities=entities)  # fmt: skip


def _ingest(gateway: Gateway, event: Any, dataset: str | None) -> tuple[int, str, str | None]:
    spool = gateway.journal.spool_dir()
    try:
        path = spool / "instance.dcm"
        request = event.request
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        head = PREAMBLE + file_meta(sop_class, sop_instance, str(event.context.transfer_syntax))
        body = request.DataSet.getvalue()  # the data set as received, not decoded
        with path.open("wb") as f:
            f.write(head)
            f.write(body)
        sha256 = None
        if gateway.ingest.keeps_sent_bytes(dataset):  # stored as sent: its hash is its ETag
            digest = hashlib.sha256(head)
            digest.update(body)
            sha256 = digest.hexdigest()
        del body
        item = IngestItem(path, sha256, sent_uids=(sop_class, sop_instance))
        outcome = gateway.ingest.store_instances([item], None, dataset)[0]
    except ServiceUnavailable:
        return OUT_OF_RESOURCES, "the index is unavailable; try again later", None
    except OSError as exc:
        log.error("C-STORE spool write failed: %s", exc)
        return OUT_OF_RESOURCES, "storage write failed", None
    except Exception:
        log.exception("C-STORE failed")
        return PROCESSING_FAILURE, "processing failure", None
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    if outcome.failure is not None:
        return int(outcome.failure), (outcome.message or "")[:64], outcome.study_uid
    return SUCCESS, "", outcome.study_uid


PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element of the File Meta Information (PS3.5 7.1.2)."""
    tag = struct.pack("<HH", group_element >> 16, group_element & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _even(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """The File Meta Information pynetdicom writes for a received C-STORE (PS3.10 7.1),
    encoded directly: the same bytes as ``Event.encoded_dataset(include_meta=True)`` puts
    before the data set, without building and writing a pydicom data set per instance."""
    elements = b"".join((
        _element(0x00020001, b"OB", b"\x00\x01"),
        _element(0x00020002, b"UI", _even(sop_class, b"\x00")),
        _element(0x00020003, b"UI", _even(sop_instance, b"\x00")),
        _element(0x00020010, b"UI", _even(transfer_syntax, b"\x00")),
        _element(0x00020012, b"UI", _even(PYNETDICOM_IMPLEMENTATION_UID, b"\x00")),
        _element(0x00020013, b"SH", _even(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
    ))  # fmt: skip
    return _element(0x00020000, b"UL", struct.pack("<I", len(elements))) + elements


def _status(code: int, comment: str) -> Any:
    if code == SUCCESS or not comment:
        return code  # pynetdicom takes a bare status: no data set to build per instance
    from pydicom import Dataset

    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO
    return status
