"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3) over the retrieval service.

The identifier is resolved with the same search as C-FIND (within the datasets the
caller may search), then every study must allow retrieval under the caller's
agreements (``RetrieveService.authorize``, as WADO-RS): a study outside them, or one
whose agreement allows in-situ processing only, is answered exactly like a study that
does not exist (no sub-operations), and audited as refused. C-MOVE sends only to
registered destinations (``clients add --ae-title X --host H --port P``).

When the index cannot answer (Elasticsearch unreachable), both are refused with 0xA701
(out of resources, unable to calculate the number of matches) and an ErrorComment, not
answered with zero sub-operations as if nothing matched. pynetdicom sends a failure
only after the handler has announced at least one sub-operation, so the refusal counts
one failed sub-operation, and a C-MOVE opens (and releases, nothing sent) its
association with the destination first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import Dataset, dcmread
from pydicom.multival import MultiValue
from pynetdicom.presentation import build_context

from server.core.attributes import Level
from server.dimse.find import describe, parse_identifier, search_all
from server.dimse.session import (
    IDENTIFIER_DOES_NOT_MATCH,
    MOVE_DESTINATION_UNKNOWN,
    REFUSED_NOT_AUTHORISED,
    SUCCESS,
    Caller,
    audit,
    caller_of,
    patient_root,
)
from server.errors import GatewayError, NotFound, ServiceUnavailable
from server.index.base import Scope, StoredInstance
from server.security.model import Action

if TYPE_CHECKING:
    from server.app import Gateway

log = logging.getLogger("gateway.dimse")
PENDING = 0xFF00
# C-MOVE/C-GET: Refused: Out of Resources - Unable to calculate number of matches (PS3.4 C.4.2.1.5)
UNABLE_TO_CALCULATE = 0xA701
MAX_CONTEXTS = 128  # PS3.8 9.3.2: presentation context ids are odd numbers 1..255
NATIVE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
VERIFICATION = "1.2.840.10008.1.1"


@dataclass
class Selection:
    instances: list[StoredInstance]
    datasets: tuple[str, ...]
    studies: tuple[str, ...]
    refused: bool  # some matching study may not be retrieved by this caller


def select(gateway: Gateway, identifier: Dataset, caller: Caller, patient_model: bool) -> Selection:
    """The instances the identifier names that the caller may retrieve."""
    request = parse_identifier(identifier, patient_model, gateway.settings.qido.max_limit)
    scopes: dict[tuple[str, str | None, str | None], None] = {}
    for row in search_all(gateway, request.query, caller.principal):
        study = _first(row, "0020000D")
        series = _first(row, "0020000E") if request.query.level is not Level.STUDY else None
        sop = _first(row, "00080018") if request.query.level is Level.INSTANCE else None
        scopes[(study, series, sop)] = None
    allowed: dict[str, bool] = {}
    instances: list[StoredInstance] = []
    datasets: set[str] = set()
    for study, series, sop in scopes:
        if study not in allowed:
            allowed[study] = _may_retrieve(gateway, caller, study)
            if allowed[study]:
                dataset = gateway.index.study_dataset(study)[1]
                datasets.update([dataset] if dataset else [])
        if allowed[study]:
            instances += gateway.index.instances(Scope(study, series, sop))
    studies = tuple(s for s, ok in allowed.items() if ok)
    # as WADO-RS answers 404: a named study the caller may not retrieve (outside its
    # agreements, in-situ only, or absent) is a refusal for the audit, never for the peer
    named = _values(identifier, "StudyInstanceUID")
    refused = not all(allowed.values()) or any(uid not in studies for uid in named)
    return Selection(instances, tuple(sorted(datasets)), studies, refused)


def _values(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value in (None, ""):
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


def _may_retrieve(gateway: Gateway, caller: Caller, study: str) -> bool:
    try:
        gateway.retrieve.authorize(caller.principal, Scope(study), Action.RETRIEVE)
    except GatewayError:  # NotFound or InSituOnly: both answer "nothing here" over DIMSE
        return False
    return True


def _first(row: dict[str, Any], tag: str) -> str:
    values = row.get(tag, {}).get("Value") or [""]
    return str(values[0])


def datasets_of(gateway: Gateway, instances: list[StoredInstance]) -> Iterator[Dataset]:
    """The stored instances, read one at a time (memory does not grow with the study)."""
    for inst in instances:
        try:
            with gateway.store.open(inst.blob_key) as f:
                yield dcmread(f)
        except NotFound:
            log.error("blob %s of %s is missing; run 'check'", inst.blob_key, inst.sop_uid)


def contexts_for(instances: list[StoredInstance]) -> list[Any]:
    """Presentation contexts the move sub-association proposes: each SOP class in the
    transfer syntaxes it is stored in (native data also in both little-endian forms)."""
    wanted: dict[str, list[str]] = {}
    for inst in instances:
        syntaxes = wanted.setdefault(inst.sop_class_uid, [])
        for ts in (inst.transfer_syntax, *(NATIVE if inst.transfer_syntax in NATIVE else ())):
            if ts not in syntaxes:
                syntaxes.append(ts)
    return [build_context(sop, ts) for sop, ts in list(wanted.items())[:MAX_CONTEXTS]]


def handle_move(event: Any, gateway: Gateway) -> Iterator[Any]:
    """EVT_C_MOVE: destination, number of sub-operations, then one dataset per instance."""
    caller = caller_of(gateway, event)
    text = describe(event.identifier)
    destination = gateway.clients.dicom_node(str(event.move_destination).strip())
    if caller is None:
        audit(gateway, event, None, action="retrieve", method="C-MOVE",
              status=REFUSED_NOT_AUTHORISED, query=text)  # fmt: skip
        yield None, None
        return
    if destination is None or not destination.host or not destination.port:
        audit(gateway, event, caller, action="retrieve", method="C-MOVE",
              status=MOVE_DESTINATION_UNKNOWN, query=text)  # fmt: skip
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    try:
        chosen = select(gateway, event.identifier, caller, patient_root(event))
    except ServiceUnavailable as exc:  # the index cannot answer: not the peer's fault
        audit(gateway, event, caller, action="retrieve", method="C-MOVE",
              status=UNABLE_TO_CALCULATE, query=text)  # fmt: skip
        # pynetdicom associates with the destination before it takes the refusal: propose
        # only Verification (the association is released with nothing sent)
        yield destination.host, destination.port, {"contexts": [build_context(VERIFICATION)]}
        yield from _unavailable(exc)
        return
    except GatewayError as exc:
        audit(gateway, event, caller, action="retrieve", method="C-MOVE",
              status=IDENTIFIER_DOES_NOT_MATCH, query=text)  # fmt: skip
        log.info("C-MOVE identifier refused: %s", exc.message)
        yield destination.host, destination.port
        yield 0  # no sub-operations (pynetdicom then answers success with none done)
        return
    yield destination.host, destination.port, {"contexts": contexts_for(chosen.instances) or None}
    yield from _send(gateway, event, caller, chosen, "C-MOVE", text)


def handle_get(event: Any, gateway: Gateway) -> Iterator[Any]:
    """EVT_C_GET: number of sub-operations, then one dataset per instance (same association)."""
    caller = caller_of(gateway, event)
    text = describe(event.identifier)
    if caller is None:
        audit(gateway, event, None, action="retrieve", method="C-GET",
              status=REFUSED_NOT_AUTHORISED, query=text)  # fmt: skip
        yield 0
        return
    try:
        chosen = select(gateway, event.identifier, caller, patient_root(event))
    except ServiceUnavailable as exc:  # the index cannot answer: not the peer's fault
        audit(gateway, event, caller, action="retrieve", method="C-GET",
              status=UNABLE_TO_CALCULATE, query=text)  # fmt: skip
        yield from _unavailable(exc)
        return
    except GatewayError as exc:
        audit(gateway, event, caller, action="retrieve", method="C-GET",
              status=IDENTIFIER_DOES_NOT_MATCH, query=text)  # fmt: skip
        log.info("C-GET identifier refused: %s", exc.message)
        yield 0
        return
    yield from _send(gateway, event, caller, chosen, "C-GET", text)


def _unavailable(exc: ServiceUnavailable) -> Iterator[Any]:
    """0xA701 with the reason: one announced sub-operation, then the refusal instead of it."""
    log.warning("C-MOVE/C-GET refused, the index is unavailable: %s", exc.message)
    yield 1
    status = Dataset()
    status.Status = UNABLE_TO_CALCULATE
    status.ErrorComment = "the index is unavailable; try again later"
    yield status, None


def _send(
    gateway: Gateway, event: Any, caller: Caller, chosen: Selection, method: str, text: str
) -> Iterator[Any]:
    # audited first: with no sub-operations pynetdicom answers without resuming the handler
    audit(gateway, event, caller, action="retrieve", method=method, status=SUCCESS,
          datasets=chosen.datasets, entities=tuple(f"study:{s}" for s in chosen.studies),
          query=text, refused=chosen.refused and not chosen.instances)  # fmt: skip
    yield len(chosen.instances)
    for ds in datasets_of(gateway, chosen.instances):
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield PENDING, ds
