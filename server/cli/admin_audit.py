"""One audit event per run of an administrative command (``imaging-gateway ...``).

Commands that run in the operator's shell against the data directory (quarantine,
instance, import, dataset secret, pseudonymize-csv) append to the same hash-chained
trail as HTTP requests, naming the command and the operating-system account that ran
it. Values (secrets, identifying data) are never part of an event.
"""

from __future__ import annotations

import getpass
from typing import Any

from server.security.audit_event import AccessRecord


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid
        return None


def cli_audit(
    gateway: Any,
    command: str,
    status: int,
    *,
    action: str = "admin",
    method: str = "POST",
    datasets: tuple[str, ...] = (),
    entities: tuple[str, ...] = (),
    deidentified: tuple[tuple[str, str], ...] = (),
) -> None:
    """Record one run of ``imaging-gateway COMMAND`` in the audit trail."""
    gateway.audit.record(
        AccessRecord(
            action=action,
            outcome=0 if status < 400 else (8 if status >= 500 else 4),
            http_status=status,
            method=method,
            path=f"imaging-gateway {command}",
            query=None,
            source_address=None,
            client_id=None,
            subject=_os_user(),
            datasets=datasets,
            entities=entities,
            deidentified=deidentified,
        )
    )
    gateway.audit.flush()
