"""``imaging-gateway studies``: list and delete the studies of one dataset (administrators).

Runs in the operator's shell against the data directory; every run appends one
AuditEvent naming the command, the dataset and (for a deletion) the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from server.cli.admin_audit import cli_audit
from server.cli.config import load_settings
from server.errors import GatewayError, NotFound
from server.services.studies import DatasetStudies, StudySummary

_DATA_DIR = click.option("--data-dir", type=click.Path(path_type=Path), default=None)
_DATASET = click.option("--dataset", "dataset", required=True, help="ResearchStudy id.")


def _open(data_dir: Path | None) -> tuple[Any, DatasetStudies]:
    from server.app import build_gateway

    gateway = build_gateway(load_settings(data_dir))
    return gateway, DatasetStudies(gateway.index, gateway.deleter, gateway.fhir_store)


def _status(exc: GatewayError) -> int:
    return 404 if isinstance(exc, NotFound) else 400


def _row(s: StudySummary) -> str:
    return "\t".join((s.study_uid, s.patient or "-", s.study_date or "-",
                      ",".join(s.modalities) or "-", str(s.series), str(s.instances)))  # fmt: skip


@click.group()
def studies() -> None:
    """The studies of a dataset: list, delete."""


@studies.command("list")
@_DATASET
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0, 1_000_000), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_DATA_DIR
def list_command(dataset: str, limit: int, offset: int, as_json: bool, data_dir: Path | None) -> None:  # fmt: skip
    """Study UID, patient pseudonym, study date, modalities, series and instance counts."""
    gateway, service = _open(data_dir)
    try:
        try:
            page = service.list(dataset, limit=limit, offset=offset)
        except GatewayError as exc:
            cli_audit(gateway, "studies list", _status(exc), action="search", method="GET")
            raise click.ClickException(exc.message) from exc
        cli_audit(gateway, "studies list", 200, action="search", method="GET",
                  datasets=(dataset,))  # fmt: skip
    finally:
        gateway.close()
    for s in page.studies:
        click.echo(orjson.dumps(s.to_json()).decode() if as_json else _row(s))
    if as_json:
        return
    if not page.studies:
        click.echo(
            f"no studies in dataset {dataset}" + (f" after offset {offset}" if offset else "")
        )
    elif page.has_more:
        click.echo(f"more: --offset {offset + len(page.studies)}", err=True)


@studies.command("delete")
@_DATASET
@click.argument("study_uids", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_DATA_DIR
def delete_command(dataset: str, study_uids: tuple[str, ...], yes: bool, data_dir: Path | None) -> None:  # fmt: skip
    """Delete studies of a dataset (index rows and blobs), as DELETE /studies/{uid} does."""
    if not yes:
        click.confirm(f"Delete {len(study_uids)} study/studies of dataset {dataset}?", abort=True)
    gateway, service = _open(data_dir)
    failed = 0
    try:
        for uid in study_uids:
            entity = (f"study:{uid[:64]}",)
            try:
                removed = service.delete(dataset, uid)
            except GatewayError as exc:
                failed += 1
                cli_audit(gateway, "studies delete", _status(exc), action="delete",
                          method="DELETE", entities=entity)  # fmt: skip
                click.echo(f"refused: {exc.message}", err=True)
                continue
            cli_audit(gateway, "studies delete", 200, action="delete", method="DELETE",
                      datasets=(dataset,), entities=entity)  # fmt: skip
            click.echo(f"deleted {uid}: {removed} instance(s)")
    finally:
        gateway.close()
    if failed:
        raise click.ClickException(f"{failed} of {len(study_uids)} not deleted")
