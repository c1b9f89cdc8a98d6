"""Secrets kept in the shared database, so that every replica uses the same ones.

With ``GATEWAY_DATABASE_URL`` set, the installation secret (pseudonymous Patient ids,
paging cursors), the datasets' pseudonym secrets (de-identification hashes) and - unless
a key file is configured - the token signing keys are rows of ``gateway_secret`` instead
of files under the data directory: a replica that creates one first wins, the others
read it (the store's write lock makes "read, else create" atomic across replicas). Like
the files they replace, they are created once and never logged; whoever can read the
database (or a dump of it) can read them, so guard it as the data directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.database import Database, open_store

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS gateway_secret (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
]


class SharedSecrets:
    def __init__(self, database_url: str) -> None:
        self.db: Database = open_store(database_url, Path("secrets.sqlite"), "secrets", [SCHEMA])

    def close(self) -> None:
        self.db.close()

    def read(self, name: str) -> bytes | None:
        row = (
            self.db.reader()
            .execute("SELECT value FROM gateway_secret WHERE name = ?", (name,))
            .fetchone()
        )
        return bytes(row[0]) if row else None

    def settle(self, name: str, change: Callable[[bytes | None], bytes]) -> tuple[bytes, bool]:
        """(value, written): ``change(current)`` stored if it differs, in one transaction."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT value FROM gateway_secret WHERE name = ?", (name,)
            ).fetchone()
            current = bytes(row[0]) if row else None
            value = change(current)
            if value == current:
                return value, False
            conn.execute(
                "INSERT INTO gateway_secret (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
            return value, True

    def get_or_create(self, name: str, make: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(value, created): the stored value, else ``make()`` stored now."""
        return self.settle(name, lambda current: make() if current is None else current)

    def remove(self, name: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM gateway_secret WHERE name = ?", (name,))
