"""``imaging-gateway dataset``: manage datasets (FHIR ResearchStudy) from the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson

from server.errors import GatewayError
from server.services.fhir_write import ADMIN

EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
PROFILE = f"{EXT}/dataset-researchstudy"


def _gateway(data_dir: Path | None) -> Any:
    from server.app import build_gateway
    from server.settings import Settings

    if data_dir is not None:
        os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    return build_gateway(Settings())


@click.group()
def dataset() -> None:
    """Create, list and load datasets (FHIR ResearchStudy)."""


@dataset.command("create")
@click.argument("dataset_id")
@click.option("--title", required=True)
@click.option(
    "--cancer-type",
    "cancer_types",
    multiple=True,
    help="breast, lung, ... or a SNOMED CT id; repeatable.",
)
@click.option("--description", default=None)
@click.option("--status", default="active", show_default=True)
@click.option(
    "--access-rights",
    type=click.Choice(["PUBLIC", "RESTRICTED", "NON_PUBLIC"]),
    default="RESTRICTED",
    show_default=True,
)
@click.option(
    "--access-condition",
    type=click.Choice(["download", "in-situ-processing", "remote-processing"]),
    default=None,
)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def create(
    dataset_id: str,
    title: str,
    cancer_types: tuple[str, ...],
    description: str | None,
    status: str,
    access_rights: str,
    access_condition: str | None,
    data_dir: Path | None,
) -> None:
    """Create or update ResearchStudy/DATASET_ID."""
    gateway = _gateway(data_dir)
    try:
        resource = _research_study(
            gateway,
            dataset_id,
            title,
            cancer_types,
            description,
            status,
            access_rights,
            access_condition,
        )
        result = gateway.fhir_write.update("ResearchStudy", dataset_id, orjson.dumps(resource))
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    verb = "created" if result.status == 201 else "updated"
    click.echo(
        f"{verb} ResearchStudy/{dataset_id} (version {result.resource['meta']['versionId']})"
    )


def _research_study(
    gateway: Any,
    dataset_id: str,
    title: str,
    cancer_types: tuple[str, ...],
    description: str | None,
    status: str,
    access_rights: str,
    access_condition: str | None,
) -> dict[str, Any]:
    conditions = []
    for name in cancer_types:
        coding = gateway.conformance.cancer_type(name)
        if coding is None:
            raise click.ClickException(f"unknown cancer type {name!r}")
        conditions.append({"coding": [dict(coding)]})
    extensions: list[dict[str, Any]] = [
        {"url": f"{EXT}/dataset-access-rights", "valueCode": access_rights}
    ]
    if access_condition:
        extensions.append({"url": f"{EXT}/dataset-access-condition", "valueCode": access_condition})
    resource: dict[str, Any] = {
        "resourceType": "ResearchStudy", "id": dataset_id, "meta": {"profile": [PROFILE]},
        "title": title, "status": status, "extension": extensions,
    }  # fmt: skip
    if conditions:
        resource["condition"] = conditions
    if description:
        resource["description"] = description
    return resource


@dataset.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def list_(data_dir: Path | None) -> None:
    """List datasets with their live study and subject counts."""
    gateway = _gateway(data_dir)
    try:
        for rid in sorted(gateway.fhir_store.ids("ResearchStudy")):
            resource = gateway.fhir_read.read("ResearchStudy", rid, "", ADMIN)
            figures = {
                e["url"].rsplit("/", 1)[1]: e.get("valueInteger")
                for e in resource.get("extension", [])
            }
            click.echo(
                f"{rid}\t{resource.get('status')}\t{figures.get('dataset-number-of-studies', 0)} studies\t"
                f"{figures.get('dataset-number-of-subjects', 0)} subjects\t{resource.get('title', '')}"
            )
    finally:
        gateway.close()


@dataset.command("load")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def load(path: Path, data_dir: Path | None) -> None:
    """Load a ResearchStudy, Group or ResearchSubject JSON file, or a batch/transaction Bundle."""
    gateway = _gateway(data_dir)
    try:
        body = path.read_bytes()
        data = orjson.loads(body)
        if data.get("resourceType") == "Bundle":
            result = gateway.fhir_write.bundle(body, "", "")
            click.echo(f"{result['type']}: {len(result.get('entry', []))} entries")
        elif data.get("id"):
            written = gateway.fhir_write.update(data["resourceType"], data["id"], body)
            click.echo(f"stored {data['resourceType']}/{data['id']} (HTTP {written.status})")
        else:
            written = gateway.fhir_write.create(data.get("resourceType", ""), body)
            click.echo(f"created {data['resourceType']}/{written.resource['id']}")
    except (GatewayError, orjson.JSONDecodeError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc
    finally:
        gateway.close()
