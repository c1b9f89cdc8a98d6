"""``imaging-gateway daa``: manage data-access agreements (FHIR Contract) from the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson

from server.errors import GatewayError
from server.security.agreements import (
    contract_conditions,
    contract_datasets,
    contract_parties,
    load_contracts,
    new_contract,
)
from server.security.model import Condition, Party

CONDITIONS = [c.value for c in Condition]


def _gateway(data_dir: Path | None) -> Any:
    from server.app import build_gateway
    from server.settings import Settings

    if data_dir is not None:
        os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    return build_gateway(Settings())


def _describe(party: Party) -> str:
    if party.organization:
        return f"organization:{party.organization}"
    if party.client_id:
        return f"client:{party.client_id}"
    return f"user:{party.issuer}#{party.subject}"


@click.group()
def daa() -> None:
    """Create, list and revoke data-access agreements (FHIR Contract)."""


@daa.command("create")
@click.argument("agreement_id")
@click.option(
    "--dataset", "datasets", multiple=True, required=True, help="ResearchStudy id; repeatable."
)
@click.option("--condition", type=click.Choice(CONDITIONS), required=True)
@click.option("--organization", default=None, help="Organization id: all of its clients.")
@click.option("--client", "client_id", default=None, help="One registered client id.")
@click.option("--issuer", default=None, help="External OpenID provider (issuer URL) of a user.")
@click.option("--subject", default=None, help="The user's subject at --issuer.")
@click.option("--purpose", default="HRESCH", show_default=True, help="v3 PurposeOfUse code.")
@click.option("--start", default=None, help="FHIR date/dateTime; default now.")
@click.option("--end", default=None, help="FHIR date/dateTime (inclusive); default open.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def create(
    agreement_id: str,
    datasets: tuple[str, ...],
    condition: str,
    organization: str | None,
    client_id: str | None,
    issuer: str | None,
    subject: str | None,
    purpose: str,
    start: str | None,
    end: str | None,
    data_dir: Path | None,
) -> None:
    """Create or replace Contract/AGREEMENT_ID (status executed)."""
    if sum(x is not None for x in (organization, client_id, issuer or subject)) != 1:
        raise click.UsageError(
            "name one party: --organization, --client, or --issuer with --subject"
        )
    try:
        resource = new_contract(
            contract_id=agreement_id,
            datasets=list(datasets),
            condition=Condition(condition),
            purpose=purpose,
            organization=organization,
            client_id=client_id,
            issuer=issuer,
            subject=subject,
            start=start,
            end=end,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    gateway = _gateway(data_dir)
    try:
        missing = [d for d in datasets if gateway.fhir_store.read("ResearchStudy", d)[0] is None]
        if missing:
            raise click.ClickException(f"unknown dataset(s): {', '.join(missing)}")
        result = gateway.fhir_write.update("Contract", agreement_id, orjson.dumps(resource))
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    verb = "created" if result.status == 201 else "updated"
    click.echo(f"{verb} Contract/{agreement_id} (version {result.resource['meta']['versionId']})")


@daa.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def list_(data_dir: Path | None) -> None:
    """List agreements: id, status, period, datasets, condition, parties."""
    gateway = _gateway(data_dir)
    try:
        contracts = load_contracts(gateway.fhir_store)
    finally:
        gateway.close()
    for contract in sorted(contracts, key=lambda c: str(c.get("id"))):
        applies = contract.get("applies") or {}
        period = f"{applies.get('start', '')}..{applies.get('end', '')}"
        conditions = ",".join(dict.fromkeys(c.value for c, _ in contract_conditions(contract)))
        click.echo(
            "\t".join(
                [
                    str(contract.get("id")),
                    str(contract.get("status", "")),
                    period,
                    ",".join(contract_datasets(contract)),
                    conditions,
                    ",".join(_describe(p) for p in contract_parties(contract)),
                ]
            )
        )


@daa.command("revoke")
@click.argument("agreement_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def revoke(agreement_id: str, data_dir: Path | None) -> None:
    """Set Contract/AGREEMENT_ID to status revoked (a new version; history keeps the old one)."""
    gateway = _gateway(data_dir)
    try:
        current, _ = gateway.fhir_store.read("Contract", agreement_id)
        if current is None:
            raise click.ClickException(f"Contract/{agreement_id} is not known")
        if current.get("status") == "revoked":
            click.echo(f"Contract/{agreement_id} is already revoked")
            return
        version = current.get("meta", {}).get("versionId")
        result = gateway.fhir_write.update(
            "Contract",
            agreement_id,
            orjson.dumps({**current, "status": "revoked"}),
            if_match=f'W/"{version}"' if version else None,
        )
    except GatewayError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        gateway.close()
    click.echo(f"revoked Contract/{agreement_id} (version {result.resource['meta']['versionId']})")


if __name__ == "__main__":
    daa()
