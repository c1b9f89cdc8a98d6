"""``imaging-gateway audit``: check the audit trail for tampering and look at recent events."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import click

from server.security.audit import (
    AUDIT_FILE,
    index_values,
    tail,
    tail_shared,
    verify,
    verify_shared,
)

_OUTCOME_WORDS = {0: "ok", 4: "refused", 8: "error", 12: "error"}


def _audit_path(data_dir: Path | None) -> Path:
    return _settings(data_dir).data_dir / AUDIT_FILE


def _settings(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from server.settings import Settings

    if data_dir is not None:
        os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    try:
        settings = Settings()
    except ValueError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc
    return settings


def _request(event: dict[str, Any]) -> str:
    for entity in event.get("entity", []):
        if "what" not in entity and entity.get("description"):
            text = str(entity["description"])
            if entity.get("query"):
                try:
                    text += "?" + base64.b64decode(entity["query"]).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    text += "?<unreadable query>"
            return text
    return "-"


def summary_line(seq: int, event: dict[str, Any]) -> str:
    """One line per event: seq, time, outcome, action, status, client, user, request, datasets."""
    client_id, subject, action, outcome, recorded, datasets, _ = index_values(event)
    status = str(event.get("outcomeDesc", "")).split(" ")[1:2] or ["-"]
    word = _OUTCOME_WORDS.get(outcome, str(outcome)) if outcome is not None else "-"
    sets = ",".join(d for d in datasets.split("\n") if d) or "-"
    return (
        f"{seq:>8} {recorded or '-'} {word:<7} {action or '-':<9} {status[0]:>3} "
        f"client={client_id or '-'} user={subject or '-'} datasets={sets} {_request(event)}"
    )


@click.group()
def audit() -> None:
    """Verify the audit trail and show recent events."""


@audit.command("verify")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def verify_command(data_dir: Path | None) -> None:
    """Recompute the hash chain; exit 1 if events were changed, removed or inserted."""
    settings = _settings(data_dir)
    url = settings.database()
    if url:
        report = verify_shared(url)
        click.echo("audit log: the shared database (GATEWAY_DATABASE_URL)")
    else:
        path = settings.data_dir / AUDIT_FILE
        report = verify(path)
        click.echo(f"audit log: {path}" + ("" if path.exists() else " (not created yet)"))
    click.echo(f"events: {report.events}; last: {report.last_seq} {report.last_hash}")
    for problem in report.problems:
        click.echo(f"  {problem}")
    if not report.ok:
        click.echo(f"TAMPERED: {len(report.problems)} problem(s) found")
        raise SystemExit(1)
    click.echo("ok: chain and anchor intact")


@audit.command("show")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def show_command(data_dir: Path | None, limit: int) -> None:
    """The last LIMIT events, one line each, oldest first."""
    settings = _settings(data_dir)
    url = settings.database()
    events = tail_shared(url, limit) if url else tail(settings.data_dir / AUDIT_FILE, limit)
    for seq, event in events:
        click.echo(summary_line(seq, event))


if __name__ == "__main__":
    audit()
