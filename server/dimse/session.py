"""Who is calling (registered AE → client → Principal) and the audit record of each operation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.security.audit_event import AccessRecord
from server.security.clients import DicomNode
from server.security.model import Principal

if TYPE_CHECKING:
    from server.app import Gateway

log = logging.getLogger("gateway.dimse")

# DIMSE status -> the HTTP status an equivalent DICOMweb request would have answered, so
# audit searches by status find both protocols' refusals alike.
SUCCESS, REFUSED_NOT_AUTHORISED, CANNOT_UNDERSTAND = 0x0000, 0x0124, 0xC000
IDENTIFIER_DOES_NOT_MATCH, MOVE_DESTINATION_UNKNOWN = 0xA900, 0xA801


@dataclass(frozen=True)
class Caller:
    """The registered client behind one association, with its rights as of now."""

    node: DicomNode
    principal: Principal
    address: str | None


PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1."


def patient_root(event: Any) -> bool:
    """The request's information model is Patient Root (PS3.4 C.6.1)."""
    return str(event.request.AffectedSOPClassUID).startswith(PATIENT_ROOT)


def calling_ae(event: Any) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def caller_of(gateway: Gateway, event: Any) -> Caller | None:
    """The association's client, its grants looked up again for every operation.

    A revoked agreement or a removed client bites at the next operation, not only at
    the next association. None if the calling AE is no longer registered.
    """
    node = gateway.clients.dicom_node(calling_ae(event))
    if node is None:
        return None
    principal = gateway.authenticator.client_principal(node.client_id)
    if principal is None:
        return None
    return Caller(node, principal, event.assoc.requestor.address)


def http_equivalent(status: int) -> int:
    if status in (SUCCESS, 0xB000, 0xB007, 0xB006):
        return 200
    if status == REFUSED_NOT_AUTHORISED:
        return 403
    if status in (0xA700, 0xA701, 0xA702):
        return 503
    if status in (0x0110, 0xC511):
        return 500
    return 400 if status != MOVE_DESTINATION_UNKNOWN else 404


def audit(
    gateway: Gateway,
    event: Any,
    caller: Caller | None,
    *,
    action: str,
    method: str,
    status: int,
    datasets: tuple[str, ...] = (),
    entities: tuple[str, ...] = (),
    query: str | None = None,
    refused: bool = False,
) -> None:
    """One AuditEvent per DIMSE operation (or refused association), as HTTP requests get."""
    http = 403 if refused and status == SUCCESS else http_equivalent(status)
    grants = caller.principal.grants if caller else {}
    agreements = tuple(
        sorted({g.agreement for d, g in grants.items() if g.agreement and d in datasets})
    )
    purposes = sorted(
        {g.purpose for g in grants.values() if g.purpose and g.agreement in agreements}
    )
    called = str(event.assoc.acceptor.ae_title).strip()
    record = AccessRecord(
        action=action,
        outcome=0 if http < 400 else (8 if http >= 500 else 4),
        http_status=http,
        method=method,
        path=f"/dimse/{called}",
        query=query,
        source_address=event.assoc.requestor.address,
        client_id=caller.node.client_id if caller else None,
        subject=None,
        agreements=agreements,
        purpose=purposes[0] if purposes else None,
        datasets=datasets,
        entities=entities,
        bases=caller.principal.bases(datasets) if caller else (),
        outcome_text=f"DIMSE {method} status 0x{status:04X} (calling AE {calling_ae(event)!r})",
    )
    try:
        gateway.audit.record(record)
    except Exception:  # auditing never breaks an operation; the failure is logged
        log.exception("could not queue an audit event for %s", method)
