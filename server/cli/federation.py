"""``imaging-gateway federation``: which datasets answer the EUCAIM federated search.

The switch is the ResearchStudy extension ``dataset-federated-search`` (valueBoolean),
written through the FHIR write path like any other change to a dataset (versioned,
validated against the dataset profile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from server.cli.config import load_settings
from server.core.federation.datasets import ACCESS_RIGHTS_URL, OPT_IN_URL, answers, extension
from server.errors import GatewayError


def _gateway(data_dir: Path | None) -> Any:
    from server.app import build_gateway

    return build_gateway(load_settings(data_dir))


@click.group()
def federation() -> None:
    """EUCAIM federated search: list datasets and switch them in or out."""


@federation.command("status")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def status(data_dir: Path | None) -> None:
    """Each dataset: answers or not, and why."""
    gateway = _gateway(data_dir)
    try:
        for rid in sorted(gateway.fhir_store.ids("ResearchStudy")):
            resource, _ = gateway.fhir_store.read("ResearchStudy", rid)
            if resource is not None:
                click.echo(
                    f"{rid}\t{'answers' if answers(resource) else 'silent'}\t{_why(resource)}"
                )
    finally:
        gateway.close()


def _why(resource: dict[str, Any]) -> str:
    rights = (extension(resource, ACCESS_RIGHTS_URL) or {}).get("valueCode", "-")
    switch = (extension(resource, OPT_IN_URL) or {}).get("valueBoolean", True)
    return f"status={resource.get('status')} access-rights={rights} federated-search={str(switch).lower()}"


@federation.command("exclude")
@click.argument("dataset_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def exclude(dataset_id: str, data_dir: Path | None) -> None:
    """DATASET_ID never answers the federated search."""
    _switch(dataset_id, False, data_dir)


@federation.command("include")
@click.argument("dataset_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def include(dataset_id: str, data_dir: Path | None) -> None:
    """DATASET_ID answers again (when active and not NON_PUBLIC)."""
    _switch(dataset_id, True, data_dir)


def _switch(dataset_id: str, value: bool, data_dir: Path | None) -> None:
    gateway = _gateway(data_dir)
    try:
        resource, _ = gateway.fhir_store.read("ResearchStudy", dataset_id)
        if resource is None:
            raise click.ClickException(f"ResearchStudy/{dataset_id} does not exist")
        kept = [e for e in resource.get("extension", []) if e.get("url") != OPT_IN_URL]
        resource = {**resource, "extension": [*kept, {"url": OPT_IN_URL, "valueBoolean": value}]}
        profiles = (resource.get("meta") or {}).get("profile")
        resource.pop("meta", None)
        if profiles:
            resource["meta"] = {"profile": profiles}
        result = gateway.fhir_write.update("ResearchStudy", dataset_id, orjson.dumps(resource))
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    word = "answers" if value else "no longer answers"
    version = result.resource["meta"]["versionId"]
    click.echo(f"ResearchStudy/{dataset_id} {word} the federated search (version {version})")
