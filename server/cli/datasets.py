"""``imaging-gateway dataset``: manage datasets (FHIR ResearchStudy) from the command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from server.cli.deid_admin import audit_admin
from server.core.deid.policy import BurnedIn, DeidPolicy, Option, PolicyError, Profile
from server.core.fhir import deidentification as deid
from server.errors import GatewayError
from server.security.pseudonym_secrets import SecretError
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
@click.option(
    "--deidentify",
    "profile",
    type=click.Choice([p.value for p in Profile]),
    default=None,
    help="De-identification profile (default: GATEWAY_DEID__DEFAULT_PROFILE); fixed once set.",
)
@click.option(
    "--deid-option",
    "deid_options",
    multiple=True,
    type=click.Choice([o.value for o in Option]),
    help="A PS3.15 Annex E option of the basic profile; repeatable.",
)
@click.option(
    "--pseudonym-secret",
    default=None,
    help="The dataset's pseudonym secret (e.g. the site's LETHE secret); '-' reads it from "
    "standard input. Generated when not given; never changes.",
)
@click.option("--provider-id", default=None, help="EUCAIM SITE-ID (eucaim profile: required).")
@click.option(
    "--burned-in",
    type=click.Choice([b.value for b in BurnedIn]),
    default=None,
    help="Instances that may carry burned-in text: refuse (default), quarantine or clean.",
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
    profile: str | None,
    deid_options: tuple[str, ...],
    pseudonym_secret: str | None,
    provider_id: str | None,
    burned_in: str | None,
    data_dir: Path | None,
) -> None:
    """Create or update ResearchStudy/DATASET_ID (its de-identification policy is fixed once set)."""
    if pseudonym_secret == "-":
        pseudonym_secret = sys.stdin.readline().rstrip("\r\n")
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
        policy = _policy(gateway, profile, deid_options, provider_id, burned_in)
        if policy is not None:
            resource = deid.with_policy(resource, policy)
        result, secret_note = _write_with_secret(gateway, dataset_id, resource, pseudonym_secret)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    verb = "created" if result.status == 201 else "updated"
    stored = result.resource
    click.echo(f"{verb} ResearchStudy/{dataset_id} (version {stored['meta']['versionId']})")
    click.echo(f"de-identification: {_describe(stored)}")
    click.echo(f"pseudonym secret: {secret_note}")


def _policy(
    gateway: Any,
    profile: str | None,
    options: tuple[str, ...],
    provider_id: str | None,
    burned_in: str | None,
) -> DeidPolicy | None:
    """The policy the options ask for; None when none is asked (the stored one or the default)."""
    if profile is None and not options and provider_id is None and burned_in is None:
        return None
    chosen = profile or gateway.settings.deid.default_profile.value
    try:
        return deid.build(chosen, list(options), provider_id, burned_in or BurnedIn.refuse.value)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _write_with_secret(
    gateway: Any, dataset_id: str, resource: dict[str, Any], given: str | None
) -> tuple[Any, str]:
    """Store the secret first (a given one is checked), then the dataset; a secret made for a
    write that is refused is removed again, so a refusal changes nothing."""
    secrets = gateway.deid_policies.secrets
    try:
        _, created = secrets.get_or_create(dataset_id, given)
    except SecretError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        result = gateway.fhir_write.update("ResearchStudy", dataset_id, orjson.dumps(resource))
    except BaseException:
        if created:
            secrets.remove(dataset_id)
        raise
    if not created:
        return result, "kept (it never changes)"
    return result, ("stored" if given else "generated") + (
        f" (an administrator reads it with `imaging-gateway dataset secret {dataset_id}`)"
    )


def _describe(resource: dict[str, Any] | None) -> str:
    try:
        policy = deid.policy_of(resource)
    except PolicyError as exc:
        return f"invalid ({exc})"
    return deid.describe(policy) if policy else "default (not stored yet)"


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
                f"{figures.get('dataset-number-of-subjects', 0)} subjects\t"
                f"de-identification: {_describe(resource)}\t{resource.get('title', '')}"
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


@dataset.command("secret")
@click.argument("dataset_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def secret(dataset_id: str, data_dir: Path | None) -> None:
    """Print the pseudonym secret of DATASET_ID (for the site's LETHE runs); audited."""
    gateway = _gateway(data_dir)
    try:
        known = gateway.fhir_store.last_content("ResearchStudy", dataset_id) is not None
        found = gateway.deid_policies.secret_of(dataset_id)
        if found is None and known:
            found, _ = gateway.deid_policies.secrets.get_or_create(dataset_id)
        audit_admin(gateway, "dataset secret", dataset_id, 200 if found else 404)
        if found is None:
            raise click.ClickException(f"dataset {dataset_id} is not known and has no secret")
        click.echo(found)
    except (GatewayError, SecretError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc
    finally:
        gateway.close()
