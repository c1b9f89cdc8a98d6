"""``imaging-gateway clients``: register OAuth2 clients (secret shown once, stored hashed; or a JWKS)."""

from __future__ import annotations

import os
from pathlib import Path

import click
import orjson


def _registry(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from server.security.clients import ClientRegistry
    from server.settings import Settings

    if data_dir is not None:
        os.environ["GATEWAY_DATA_DIR"] = str(data_dir)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return ClientRegistry(settings.data_dir / "security.sqlite")


@click.group()
def clients() -> None:
    """Register, list and remove OAuth2 clients."""


@clients.command("add")
@click.option("--name", required=True)
@click.option("--organization", default=None, help="Organization id agreements may name.")
@click.option(
    "--admin", is_flag=True, help="May administer datasets, agreements, clients and audit."
)
@click.option(
    "--store", "store", multiple=True, help="Dataset this client may push to (STOW); repeatable."
)
@click.option("--jwks", type=click.Path(exists=True, path_type=Path), default=None,
              help="The client's public keys (JWKS) for private_key_jwt; no secret is made.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def add(
    name: str,
    organization: str | None,
    admin: bool,
    store: tuple[str, ...],
    jwks: Path | None,
    data_dir: Path | None,
) -> None:
    """Register a client; prints its id and (once) its secret."""
    keys = orjson.loads(jwks.read_bytes()) if jwks else None
    if keys is not None and not isinstance(keys.get("keys"), list):
        raise click.ClickException('--jwks must be a JSON Web Key Set ({"keys": [...]})')
    registry = _registry(data_dir)
    try:
        client, secret = registry.add(
            name, organization=organization, admin=admin, store=store, jwks=keys
        )
    finally:
        registry.close()
    click.echo(f"client_id: {client.client_id}")
    if secret:
        click.echo(f"client_secret: {secret}")
        click.echo("(the secret is shown once and stored hashed)", err=True)


@clients.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def list_(data_dir: Path | None) -> None:
    """List registered clients (never their secrets)."""
    registry = _registry(data_dir)
    try:
        for c in registry.list():
            auth = "private_key_jwt" if c.jwks else "client_secret"
            roles = (
                ",".join((["admin"] if c.admin else []) + [f"store:{d}" for d in c.store_datasets])
                or "-"
            )
            click.echo(f"{c.client_id}\t{c.name}\t{c.organization or '-'}\t{auth}\t{roles}")
    finally:
        registry.close()


@clients.command("remove")
@click.argument("client_id")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def remove(client_id: str, data_dir: Path | None) -> None:
    """Remove a client: its tokens stop working at once."""
    registry = _registry(data_dir)
    try:
        if not registry.remove(client_id):
            raise click.ClickException(f"no client {client_id}")
    finally:
        registry.close()
    click.echo(f"removed {client_id}")
