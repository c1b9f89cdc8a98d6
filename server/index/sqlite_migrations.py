"""Versioned, recorded migrations of the embedded index.

Each migration has a name, a schema step (DDL: columns, triggers, indexes; one write
transaction at open) and optionally a backfill (per-row work on rows written before the
migration, in batches of its own transactions, resumable). Both are recorded in
``index_migration``: a start-up on a migrated index reads that table and does nothing else
(no statement that visits rows). A database created empty gets every schema step and
records every migration as done at once: it has no old rows to fill.

Backfills do not run at open: the serving process runs them in the background
(:class:`BackgroundMigrations`), ``/readyz`` answers 503 naming them until they are done,
and what depends on the filled values (federated search) answers 503 meanwhile. New rows
are right from the start: the schema step installs the triggers before any backfill.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.index.sqlite_db import SqliteDatabase

log = logging.getLogger("gateway.index")

BATCH = 5000  # rows per backfill transaction: writers of other requests wait at most one batch

_TABLE = (
    "CREATE TABLE IF NOT EXISTS index_migration (name TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " progress INTEGER NOT NULL DEFAULT 0, applied REAL NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    name: str
    # The schema step; True when rows written before it need the backfill.
    schema: Callable[[sqlite3.Connection], bool]
    # One batch of the backfill: rows with pk in (after, upto]; None: nothing to fill.
    backfill: Callable[[sqlite3.Connection, int, int], None] | None = None


class Migrations:
    """The migrations of one index database, applied and recorded."""

    def __init__(self, db: SqliteDatabase, migrations: list[Migration], *, fresh: bool) -> None:
        self.db = db
        self.migrations = {m.name: m for m in migrations}
        self._done: set[str] = set()
        with db.write() as conn:
            conn.execute(_TABLE)
            recorded = dict(conn.execute("SELECT name, state FROM index_migration"))
            for m in migrations:
                if m.name in recorded:
                    continue
                needs_fill = m.schema(conn)
                # Rows of an index created now are written after the triggers: nothing to fill.
                state = "backfill" if needs_fill and not fresh and m.backfill else "done"
                conn.execute(
                    "INSERT INTO index_migration (name, state, applied) VALUES (?, ?, ?)",
                    (m.name, state, time.time()),
                )
                recorded[m.name] = state
                log.info("index migration %s: schema applied (%s)", m.name, state)
        self._done = {name for name, state in recorded.items() if state == "done"}

    def pending(self) -> list[str]:
        """Migrations whose backfill has not finished (in this or another process)."""
        if len(self._done) == len(self.migrations):
            return []
        rows = self.db.reader().execute("SELECT name, state FROM index_migration").fetchall()
        self._done |= {name for name, state in rows if state == "done"}
        return [name for name in self.migrations if name not in self._done]

    def done(self, name: str) -> bool:
        return name in self._done or name not in self.pending()

    def run_backfills(self, stop: threading.Event | None = None) -> int:
        """Run every pending backfill to the end (batches, resumable); rows visited."""
        visited = 0
        for name in self.pending():
            migration = self.migrations[name]
            fill = migration.backfill
            if fill is None:
                continue
            top = self.db.reader().execute("SELECT coalesce(max(pk), 0) FROM study").fetchone()[0]
            started = time.monotonic()
            state = "backfill"
            while state != "done" and (stop is None or not stop.is_set()):
                with self.db.write() as conn:
                    row = conn.execute(
                        "SELECT state, progress FROM index_migration WHERE name = ?", (name,)
                    ).fetchone()
                    if row[0] == "done":  # another process finished it
                        state = "done"
                        break
                    after = int(row[1])
                    upto = min(after + BATCH, top)
                    if after < top:
                        fill(conn, after, upto)
                        visited += upto - after
                    state = "done" if upto >= top else "backfill"
                    conn.execute(
                        "UPDATE index_migration SET state = ?, progress = ? WHERE name = ?",
                        (state, upto, name),
                    )
                time.sleep(0)  # let other threads take the GIL between batches
            if state == "done":
                log.info(
                    "index migration %s: backfill of %d rows done in %.1f s",
                    name, top, time.monotonic() - started,
                )  # fmt: skip
        self.pending()
        return visited


class BackgroundMigrations:
    """Runs an index's pending backfills on a thread of the serving process."""

    def __init__(self, migrations: Migrations | None) -> None:
        self.migrations = migrations
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pending(self) -> list[str]:
        return self.migrations.pending() if self.migrations is not None else []

    def start(self) -> None:
        if self.migrations is None or not self.migrations.pending():
            return
        self._thread = threading.Thread(target=self._run, name="index-migrations", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.migrations is not None
        try:
            self.migrations.run_backfills(self._stop)
        except Exception:  # the next start resumes from the recorded progress
            log.exception("index migration failed; it resumes at the next start")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
