"""``imaging-gateway quarantine`` and ``imaging-gateway instance``: administrators only.

Both run in the operator's shell against the data directory (there is no HTTP route:
a researcher cannot learn that an instance is held, nor read a de-identification
record). Each run appends one AuditEvent (action ``admin``, or ``store`` for a
release, with the instance's de-identification record) naming the operating-system
account that ran it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import orjson

from server.cli.admin_audit import cli_audit
from server.cli.config import load_settings
from server.errors import GatewayError, NotFound

_DATA_DIR = click.option("--data-dir", type=click.Path(path_type=Path), default=None)


def _status(exc: GatewayError) -> int:
    return 404 if isinstance(exc, NotFound) else 400


def _gateway(data_dir: Path | None) -> Any:
    from server.app import build_gateway

    return build_gateway(load_settings(data_dir))


@click.group()
def quarantine() -> None:
    """Instances held for burned-in text (dataset policy ``--burned-in quarantine``)."""


@quarantine.command("list")
@_DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(data_dir: Path | None, as_json: bool) -> None:
    """List held instances: id, dataset, modality, when, why."""
    gateway = _gateway(data_dir)
    try:
        held = gateway.ingest.quarantine.list()
        cli_audit(gateway, "quarantine list", 200, method="GET")
    finally:
        gateway.close()
    for h in held:
        if as_json:
            click.echo(orjson.dumps(h.to_json()).decode())
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.held_at))
            click.echo(f"{h.id}  {h.dataset or '-'}  {h.modality or '-'}  {when}  {h.reason}")
    if not held and not as_json:
        click.echo("no instances held")


@quarantine.command("release")
@click.argument("held_id")
@_DATA_DIR
def release_command(held_id: str, data_dir: Path | None) -> None:
    """Store a held instance (you checked its pixels): the ingest pipeline minus the burned-in check."""
    gateway = _gateway(data_dir)
    try:
        try:
            held, outcome = gateway.ingest.release(held_id)
        except GatewayError as exc:
            cli_audit(gateway, f"quarantine release {held_id[:40]}", _status(exc))
            raise click.ClickException(exc.message) from exc
        datasets = (held.dataset,) if held.dataset else ()
        status = 201 if outcome.stored else 409
        deid = ((outcome.sop_uid, outcome.deid.decode()),) if outcome.deid else ()
        cli_audit(gateway, f"quarantine release {held_id}", status, action="store",
                  datasets=datasets, deidentified=deid)  # fmt: skip
    finally:
        gateway.close()
    if not outcome.stored:
        raise click.ClickException(f"not stored: 0x{outcome.failure or 0:04X} {outcome.message}")
    click.echo(f"released {held_id}: stored {outcome.sop_uid}")


@quarantine.command("delete")
@click.argument("held_id")
@_DATA_DIR
def delete_command(held_id: str, data_dir: Path | None) -> None:
    """Delete a held instance for good."""
    gateway = _gateway(data_dir)
    try:
        try:
            held = gateway.ingest.quarantine.get(held_id)
            gateway.ingest.quarantine.delete(held_id)
        except GatewayError as exc:
            cli_audit(gateway, f"quarantine delete {held_id[:40]}", _status(exc), method="DELETE")
            raise click.ClickException(exc.message) from exc
        datasets = (held.dataset,) if held.dataset else ()
        cli_audit(gateway, f"quarantine delete {held_id}", 200, method="DELETE", datasets=datasets)
    finally:
        gateway.close()
    click.echo(f"deleted {held_id}")


@click.group()
def instance() -> None:
    """Stored instances (administrators)."""


@instance.command("deid-record")
@click.argument("sop_uid")
@_DATA_DIR
def deid_record_command(sop_uid: str, data_dir: Path | None) -> None:
    """Print what de-identification did to a stored instance (names, never values); audited."""
    gateway = _gateway(data_dir)
    try:
        found = gateway.index.deid_record(sop_uid)
        status = 200 if found is not None else 404
        datasets = (found[0],) if found is not None and found[0] else ()
        cli_audit(gateway, "instance deid-record", status, method="GET", datasets=datasets,
                  entities=(f"instance:{sop_uid[:64]}",))  # fmt: skip
    finally:
        gateway.close()
    if found is None:
        raise click.ClickException(f"no stored instance {sop_uid[:64]}")
    dataset, record = found
    body: dict[str, Any] = {"sopInstanceUID": sop_uid, "dataset": dataset}
    body["deidentification"] = orjson.loads(record) if record else None
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
