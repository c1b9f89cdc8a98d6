"""Lockout of the token endpoint after failed client authentications (RFC 6819 4.3.2, 5.1.4.2.3).

Failures are counted per attempted client id and per source address over a sliding window,
in a small SQLite file shared by every worker process (so N workers do not allow N times
the attempts). While a key has ``limit`` failures inside the window, further attempts are
refused with 429 before any secret is checked, until the oldest of them leaves the window.
A success clears the client id's failures (not the address's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from server.database import Database, open_store
from server.database.sqlite import SqliteDatabase

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS token_failure (key TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS token_failure_key ON token_failure(key, at)",
]
MAX_KEY = 200  # an attempted client id is caller-chosen: bounded before it is stored


@dataclass(frozen=True)
class Limits:
    per_client: int
    per_address: int
    window_seconds: float


class FailureThrottle:
    def __init__(self, path: Path, limits: Limits, database_url: str | None = None) -> None:
        self.db: Database = open_store(database_url, path, "throttle", [SCHEMA])
        if isinstance(self.db, SqliteDatabase):
            # Counters, not records: losing the last few on power loss is harmless.
            self.db.writer.execute("PRAGMA synchronous=OFF")
        self.limits = limits

    def close(self) -> None:
        self.db.close()

    def _keys(self, client_id: str | None, address: str | None) -> list[tuple[str, int]]:
        keys = []
        if client_id:
            keys.append(("client:" + client_id[:MAX_KEY], self.limits.per_client))
        if address:
            keys.append(("address:" + address[:MAX_KEY], self.limits.per_address))
        return keys

    def retry_after(self, client_id: str | None, address: str | None) -> float | None:
        """Seconds until an attempt for this client id from this address is allowed, or None."""
        now = time.time()
        since = now - self.limits.window_seconds
        waits = []
        for key, limit in self._keys(client_id, address):
            reader = self.db.reader()
            (count,) = reader.execute(
                "SELECT count(*) FROM token_failure WHERE key = ? AND at > ?", (key, since)
            ).fetchone()
            if count >= limit:
                # allowed again once count - limit + 1 failures have left the window
                (oldest,) = reader.execute(
                    "SELECT at FROM token_failure WHERE key = ? AND at > ? ORDER BY at"
                    " LIMIT 1 OFFSET ?",
                    (key, since, count - limit),
                ).fetchone()
                waits.append(oldest + self.limits.window_seconds - now)
        return max(1.0, max(waits)) if waits else None

    def failed(self, client_id: str | None, address: str | None) -> None:
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM token_failure WHERE at <= ?", (now - self.limits.window_seconds,)
            )
            conn.executemany(
                "INSERT INTO token_failure VALUES (?, ?)",
                [(key, now) for key, _ in self._keys(client_id, address)],
            )

    def succeeded(self, client_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM token_failure WHERE key = ?", ("client:" + client_id,))
