"""Audit events for administrative commands that use a dataset's pseudonym secret.

``dataset secret`` (shows it) and ``pseudonymize-csv`` (uses it) run in the operator's
shell, not over HTTP; each run appends one AuditEvent to the same hash-chained trail as
the HTTP requests (action ``admin``), naming the command, the dataset, the operating
system account that ran it and whether it succeeded. The secret itself is never part
of an event.
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


def audit_admin(gateway: Any, command: str, dataset: str, status: int) -> None:
    """Record one run of ``imaging-gateway COMMAND`` on ``dataset`` (status as HTTP would say)."""
    gateway.audit.record(
        AccessRecord(
            action="admin",
            outcome=0 if status < 400 else 4,
            http_status=status,
            method="GET" if command == "dataset secret" else "POST",
            path=f"imaging-gateway {command}",
            query=None,
            source_address=None,
            client_id=None,
            subject=_os_user(),
            datasets=(dataset,),
            entities=(f"ResearchStudy/{dataset}",),
        )
    )
    gateway.audit.flush()
