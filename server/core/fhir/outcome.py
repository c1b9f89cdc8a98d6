"""OperationOutcome (FHIR R4 2.36): the body of every FHIR error and of $validate."""

from __future__ import annotations

from typing import Any


def operation_outcome(issues: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Issues as (severity, code, diagnostics); no issue means all is well."""
    if not issues:
        issues = [("information", "informational", "All OK")]
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": severity, "code": code, "diagnostics": text}
            for severity, code, text in issues
        ],
    }
