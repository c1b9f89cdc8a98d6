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
    return ClientRegistry(settings.data_dir / "security.sqlite", settings.database())


@click.group()
def clients() -> None:
    """Register, list and remove OAuth2 clients and DICOM (DIMSE) peers."""


@clients.command("add")
@click.option("--name", required=True)
@click.option("--organization", default=None, help="Organization id agreements may name.")
@click.option(
    "--admin", is_flag=True, help="May administer datasets, agreements, clients and audit."
)
@click.option(
    "--store", "store", multiple=True, help="Dataset this client may push to (STOW); repeatable."
)
@click.option(
    "--curate", "curate", multiple=True,
    help="Dataset this client curates: push and correct (replace instances); repeatable.",
)  # fmt: skip
@click.option(
    "--http-basic", is_flag=True,
    help="Also accept the client id and secret as HTTP Basic credentials on DICOMweb routes.",
)  # fmt: skip
@click.option("--jwks", type=click.Path(exists=True, path_type=Path), default=None,
              help="The client's public keys (JWKS) for private_key_jwt; no secret is made.")  # fmt: skip
@click.option("--ae-title", default=None,
              help="DICOM calling AE title of this client (DIMSE associations); unique.")  # fmt: skip
@click.option(
    "--host", default=None, help="With --port: where the AE listens (C-MOVE destination)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=None)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def add(
    name: str,
    organization: str | None,
    admin: bool,
    store: tuple[str, ...],
    curate: tuple[str, ...],
    http_basic: bool,
    jwks: Path | None,
    ae_title: str | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
) -> None:
    """Register a client; prints its id and (once) its secret."""
    from server.security.clients import AeTitleInUse, DicomNode

    keys = orjson.loads(jwks.read_bytes()) if jwks else None
    if keys is not None and not isinstance(keys.get("keys"), list):
        raise click.ClickException('--jwks must be a JSON Web Key Set ({"keys": [...]})')
    if (host is None) != (port is None):
        raise click.ClickException("--host and --port go together (a C-MOVE destination)")
    if http_basic and keys is not None:
        raise click.ClickException("--http-basic needs a client secret; a --jwks client has none")
    if host is not None and ae_title is None:
        raise click.ClickException("--host/--port need --ae-title")
    if ae_title is not None:
        ae_title = _check_ae_title(ae_title)
    registry = _registry(data_dir)
    try:
        if ae_title is not None and registry.dicom_node(ae_title) is not None:
            raise click.ClickException(f"AE title {ae_title!r} is already registered")
        client, secret = registry.add(
            name, organization=organization, admin=admin, store=store, jwks=keys,
            curate=curate, http_basic=http_basic,
        )  # fmt: skip
        if ae_title is not None:
            try:
                registry.set_dicom_node(DicomNode(client.client_id, ae_title, host, port))
            except AeTitleInUse as exc:
                registry.remove(client.client_id)
                raise click.ClickException(str(exc)) from exc
    finally:
        registry.close()
    click.echo(f"client_id: {client.client_id}")
    if ae_title is not None:
        click.echo(f"ae_title: {ae_title}")
    if secret:
        click.echo(f"client_secret: {secret}")
        click.echo("(the secret is shown once and stored hashed)", err=True)


def _check_ae_title(value: str) -> str:
    """PS3.5 AE: 1 to 16 characters of the default repertoire, no backslash or control."""
    value = value.strip()
    if not 1 <= len(value) <= 16 or "\\" in value or not (value.isascii() and value.isprintable()):
        raise click.ClickException(
            "--ae-title must be 1 to 16 printable ASCII characters without a backslash"
        )
    return value


@clients.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def list_(data_dir: Path | None) -> None:
    """List registered clients (never their secrets)."""
    registry = _registry(data_dir)
    try:
        nodes = {n.client_id: n for n in registry.dicom_nodes()}
        for c in registry.list():
            auth = "private_key_jwt" if c.jwks else "client_secret"
            roles = (
                ",".join(
                    (["admin"] if c.admin else [])
                    + [f"store:{d}" for d in c.store_datasets]
                    + [f"curate:{d}" for d in c.curate_datasets]
                )
                or "-"
            )
            if c.http_basic:
                auth += ",http_basic"
            node = nodes.get(c.client_id)
            ae = (
                (node.ae_title + (f"@{node.host}:{node.port}" if node.host else ""))
                if node
                else "-"
            )
            click.echo(f"{c.client_id}\t{c.name}\t{c.organization or '-'}\t{auth}\t{roles}\t{ae}")
    finally:
        registry.close()


@clients.command("update")
@click.argument("client_id")
@click.option("--store", "store_add", multiple=True, help="Also push to this dataset.")
@click.option("--no-store", "store_remove", multiple=True, help="No longer push to this dataset.")
@click.option("--curate", "curate_add", multiple=True, help="Also curate this dataset.")
@click.option("--no-curate", "curate_remove", multiple=True, help="No longer curate it.")
@click.option(
    "--http-basic/--no-http-basic", default=None, help="Accept HTTP Basic on DICOMweb (or not)."
)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def update(
    client_id: str,
    store_add: tuple[str, ...],
    store_remove: tuple[str, ...],
    curate_add: tuple[str, ...],
    curate_remove: tuple[str, ...],
    http_basic: bool | None,
    data_dir: Path | None,
) -> None:
    """Change a client's store and curate datasets or HTTP Basic; effective at its next request."""
    registry = _registry(data_dir)
    try:
        client = registry.get(client_id)
        if client is None:
            raise click.ClickException(f"no client {client_id}")
        store = tuple(d for d in (*client.store_datasets, *store_add) if d not in store_remove)
        curate = tuple(d for d in (*client.curate_datasets, *curate_add) if d not in curate_remove)
        try:
            changed = registry.update(client_id, store=store, curate=curate, http_basic=http_basic)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    finally:
        registry.close()
    assert changed is not None
    click.echo(
        f"updated {client_id}: store {','.join(changed.store_datasets) or '-'}; curate "
        f"{','.join(changed.curate_datasets) or '-'}; http_basic "
        f"{'on' if changed.http_basic else 'off'}"
    )


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
