"""Audit events for administrative commands that use a dataset's pseudonym secret.

``dataset secret`` (shows it) and ``pseudonymize-csv`` (uses it) run in the operator's
shell, not over HTTP; each run appends one AuditEvent to the same hash-chained trail as
the HTTP requests (action ``admin``), naming the command, the dataset, the operating
system account that ran it and whether it succeeded. The secret itself is never part
of an event.
"""

from __future__ import annotations

from typing import Any

from server.cli.admin_audit import cli_audit


def audit_admin(gateway: Any, command: str, dataset: str, status: int) -> None:
    """Record one run of ``imaging-gateway COMMAND`` on ``dataset`` (status as HTTP would say)."""
    cli_audit(
        gateway,
        command,
        status,
        method="GET" if command == "dataset secret" else "POST",
        datasets=(dataset,),
        entities=(f"ResearchStudy/{dataset}",),
    )
