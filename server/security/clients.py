"""Registered OAuth2 clients (RFC 7591 in spirit; managed with ``imaging-gateway clients``).

A client authenticates with a secret (stored as a scrypt hash, shown once) or with
its own keys (a JWKS, for ``private_key_jwt``, RFC 7523 / SMART Backend Services).
Roles: ``admin`` (datasets, agreements, clients, audit, deletes), the datasets it
may push to (STOW) and the datasets it curates (push and correct: replace a stored
instance). What it may *read* comes from data-access agreements, and - as the data
holder - the datasets it pushes into or curates (``server/security/holder.py``).
``http_basic``: the client may also present its id and secret as HTTP Basic
credentials on DICOMweb routes (machine clients that only send static credentials).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from server.database import INTEGRITY_ERRORS, Database, is_postgres_url, open_store

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS client (client_id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " organization TEXT, admin INTEGER NOT NULL DEFAULT 0, store TEXT NOT NULL DEFAULT '[]',"
    " secret_hash TEXT, jwks TEXT, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS used_jti (jti TEXT PRIMARY KEY, expires REAL NOT NULL)",
    # DIMSE peers: the calling AE title a client's associations use, and (for C-MOVE
    # destinations) where it listens. Removing the client removes its AE.
    "CREATE TABLE IF NOT EXISTS dicom_node (client_id TEXT PRIMARY KEY"
    " REFERENCES client(client_id) ON DELETE CASCADE, ae_title TEXT NOT NULL UNIQUE,"
    " host TEXT, port INTEGER)",
]
# Columns added after the first release: (name, declaration), added to older files at open.
_COLUMNS = [
    ("curate", "TEXT NOT NULL DEFAULT '[]'"),
    ("http_basic", "INTEGER NOT NULL DEFAULT 0"),
]
# Schema versions on a shared database (see server.database): the tables, then the columns.
MIGRATIONS = [SCHEMA, [f"ALTER TABLE client ADD COLUMN {n} {d}" for n, d in _COLUMNS]]
_SELECT = (
    "SELECT client_id, name, organization, admin, store, jwks, secret_hash, curate, http_basic"
    " FROM client"
)


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    organization: str | None
    admin: bool
    store_datasets: tuple[str, ...]
    jwks: dict[str, Any] | None
    has_secret: bool
    curate_datasets: tuple[str, ...] = ()
    http_basic: bool = False

    @property
    def holds(self) -> tuple[str, ...]:
        """The datasets this client pushes into or curates (its data-holder view)."""
        return tuple(dict.fromkeys((*self.store_datasets, *self.curate_datasets)))


@dataclass(frozen=True)
class DicomNode:
    """A registered client's DICOM Application Entity (PS3.7 Annex D.3.3.2 AE titles)."""

    client_id: str
    ae_title: str
    host: str | None = None  # host and port: a C-MOVE destination
    port: int | None = None


class AeTitleInUse(ValueError):
    """Another client already uses this AE title."""


def _hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    """A hash no secret matches, verified for unknown clients: the same work, the same time."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(_hash_secret(secrets.token_urlsafe(32)))
    return _DUMMY_HASH[0]


def _check_secret(secret: str, stored: str) -> bool:
    try:
        _, salt_hex, _ = stored.split("$")
    except ValueError:
        return False
    return hmac.compare_digest(_hash_secret(secret, bytes.fromhex(salt_hex)), stored)


class ClientRegistry:
    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.db: Database = open_store(
            database_url, path, "clients", MIGRATIONS if is_postgres_url(database_url) else [SCHEMA]
        )
        if self.db.dialect == "sqlite":  # files older than schema versions: add what is missing
            with self.db.write() as conn:
                have = {row[1] for row in conn.execute("PRAGMA table_info(client)")}
                for name, declaration in _COLUMNS:
                    if name not in have:
                        conn.execute(f"ALTER TABLE client ADD COLUMN {name} {declaration}")
        _dummy_hash()  # computed at start, not during the first unknown client's request

    def close(self) -> None:
        self.db.close()

    def add(
        self,
        name: str,
        *,
        organization: str | None = None,
        admin: bool = False,
        store: tuple[str, ...] = (),
        jwks: dict[str, Any] | None = None,
        curate: tuple[str, ...] = (),
        http_basic: bool = False,
    ) -> tuple[Client, str | None]:
        """Register a client; returns it and its secret (None for a key-only client)."""
        if http_basic and jwks:
            raise ValueError("HTTP Basic needs a client secret; a key-only client has none")
        client_id = "c-" + secrets.token_hex(8)
        secret = None if jwks else secrets.token_urlsafe(32)
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO client (client_id, name, organization, admin, store, secret_hash,"
                " jwks, created, curate, http_basic) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (client_id, name, organization, int(admin), _json(store),
                 _hash_secret(secret) if secret else None,
                 orjson.dumps(jwks).decode() if jwks else None, time.time(), _json(curate),
                 int(http_basic)),
            )  # fmt: skip
        client = self.get(client_id)
        assert client is not None
        return client, secret

    def get(self, client_id: str) -> Client | None:
        row = self.db.reader().execute(f"{_SELECT} WHERE client_id = ?", (client_id,)).fetchone()
        return _client(row) if row else None

    def list(self) -> list[Client]:
        rows = self.db.reader().execute(f"{_SELECT} ORDER BY created")
        return [_client(r) for r in rows]

    def update(
        self,
        client_id: str,
        *,
        store: tuple[str, ...] | None = None,
        curate: tuple[str, ...] | None = None,
        http_basic: bool | None = None,
    ) -> Client | None:
        """Change a client's store and curate datasets and HTTP Basic switch (None: unchanged).

        Takes effect at the client's next request (its tokens are checked against the
        registry on every request). None if there is no such client.
        """
        current = self.get(client_id)
        if current is None:
            return None
        if http_basic and not current.has_secret:
            raise ValueError("HTTP Basic needs a client secret; a key-only client has none")
        with self.db.write() as conn:
            conn.execute(
                "UPDATE client SET store = ?, curate = ?, http_basic = ? WHERE client_id = ?",
                (_json(current.store_datasets if store is None else store),
                 _json(current.curate_datasets if curate is None else curate),
                 int(current.http_basic if http_basic is None else http_basic), client_id),
            )  # fmt: skip
        return self.get(client_id)

    def remove(self, client_id: str) -> bool:
        with self.db.write() as conn:
            return conn.execute("DELETE FROM client WHERE client_id = ?", (client_id,)).rowcount > 0

    def set_dicom_node(self, node: DicomNode) -> None:
        """Give a client its AE title (unique among clients) and, optionally, host and port."""
        try:
            with self.db.write() as conn:
                conn.execute(
                    "INSERT INTO dicom_node VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE"
                    " SET ae_title = excluded.ae_title, host = excluded.host,"
                    " port = excluded.port",
                    (node.client_id, node.ae_title, node.host, node.port),
                )
        except INTEGRITY_ERRORS as exc:
            raise AeTitleInUse(f"AE title {node.ae_title!r} is already registered") from exc

    def dicom_node(self, ae_title: str) -> DicomNode | None:
        """The registered client calling as ``ae_title`` (trailing spaces are not significant)."""
        row = (
            self.db.reader()
            .execute(
                "SELECT client_id, ae_title, host, port FROM dicom_node WHERE ae_title = ?",
                (ae_title.strip(),),
            )
            .fetchone()
        )
        return DicomNode(*row) if row else None

    def dicom_nodes(self) -> builtins.list[DicomNode]:
        rows = self.db.reader().execute(
            "SELECT client_id, ae_title, host, port FROM dicom_node ORDER BY ae_title"
        )
        return [DicomNode(*r) for r in rows]

    def check_secret(self, client_id: str, secret: str) -> Client | None:
        row = (
            self.db.reader()
            .execute("SELECT secret_hash FROM client WHERE client_id = ?", (client_id,))
            .fetchone()
        )
        if row is None or not row[0]:
            # the same scrypt verification against a dummy hash: no timing hint that the id
            # exists (or has no secret)
            _check_secret(secret, _dummy_hash())
            return None
        return self.get(client_id) if _check_secret(secret, row[0]) else None

    def use_jti(self, client_id: str, jti: str, keep_until: float) -> bool:
        """Record a client assertion's jti; False if this client used it before (RFC 7523 3).

        ``keep_until`` must be the last moment the assertion could still be accepted
        (``exp`` plus the verification leeway): forgetting it earlier lets it replay.
        Keyed per client, so one client cannot burn another's jti values.
        """
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM used_jti WHERE expires < ?", (now,))
            added = conn.execute(
                "INSERT INTO used_jti VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
                (f"{client_id} {jti}", keep_until),
            )
            return added.rowcount == 1


def _json(datasets: tuple[str, ...]) -> str:
    return orjson.dumps(list(dict.fromkeys(datasets))).decode()


def _client(row: tuple[Any, ...]) -> Client:
    return Client(
        client_id=row[0], name=row[1], organization=row[2], admin=bool(row[3]),
        store_datasets=tuple(orjson.loads(row[4])), jwks=orjson.loads(row[5]) if row[5] else None,
        has_secret=bool(row[6]), curate_datasets=tuple(orjson.loads(row[7])),
        http_basic=bool(row[8]),
    )  # fmt: skip
