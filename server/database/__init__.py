"""The shared-state database: one protocol, SQLite (embedded default) or PostgreSQL.

Every store of non-index state (FHIR resources, clients and jti replay, token-failure
counters, bulk-export and pull jobs, the audit chain) talks to a :class:`Database`:

- ``reader()`` returns something with ``execute(sql, params)`` for one statement outside
  a transaction (SQLite: the thread's read-only connection; PostgreSQL: a pooled
  connection borrowed for that one statement, its rows fetched eagerly);
- ``write()`` is one transaction on a connection, committed or rolled back, and
  *serialised per store*: SQLite's ``BEGIN IMMEDIATE`` on the store's own file, a
  transaction-level advisory lock named after the store on PostgreSQL, so several
  replicas see the same one-writer-at-a-time order the embedded engine gives.

Stores write their SQL once, in the portable subset (``?`` placeholders, ``ON CONFLICT``,
``RETURNING``); :mod:`server.database.postgres` translates placeholders and the few DDL
types that differ. ``open_store`` picks the engine: ``GATEWAY_DATABASE_URL`` (a
``postgresql://`` URL) or the SQLite file in the data directory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
try:  # the PostgreSQL driver is a dependency, but the embedded engine does not need it
    import psycopg

    INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)
except ImportError:  # pragma: no cover
    pass


class DatabaseUnreachable(RuntimeError):
    """The shared database cannot be reached at start-up (the message names host, port and
    database, never the password)."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class Database(Protocol):
    dialect: str  # "sqlite" or "postgresql"

    def reader(self) -> Connection: ...
    def write(self) -> AbstractContextManager[Connection]: ...
    def close(self) -> None: ...


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def open_store(
    url: str | None, path: Path, store: str, migrations: Sequence[Sequence[str]]
) -> Database:
    """The database of one store: PostgreSQL at ``url`` if given, else the SQLite file ``path``.

    ``migrations`` are the store's schema versions, in order (statements in the portable
    dialect); each is applied once.
    """
    if is_postgres_url(url):
        from server.database.postgres import engine

        assert url is not None
        return engine(url).store(store, migrations)
    from server.database.sqlite import SqliteDatabase

    return SqliteDatabase(path, [s for version in migrations for s in version])


def close_engines() -> None:
    """Close the PostgreSQL connection pools this process opened (no-op on SQLite)."""
    try:
        from server.database.postgres import close_all
    except ImportError:  # pragma: no cover
        return
    close_all()
