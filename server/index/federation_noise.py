"""The federated search's noise draws, kept so that asking again returns the same count.

``DATA_DIR/federation.sqlite``: one Laplace sample per (dataset, measure, true count,
epsilon, delta), drawn on first use (or the shared database: replicas must answer alike).
Every worker process shares the file; the first draw written wins (insert if absent, then
read back), so two processes never answer one
query with two different counts, and a restart changes nothing. Losing the file (or a
restore of an older copy) only means new draws for counts asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.database import Database, open_store

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS noise (dataset TEXT NOT NULL, measure TEXT NOT NULL,"
    " true_count INTEGER NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL,"
    " sample REAL NOT NULL, created REAL NOT NULL DEFAULT (unixepoch()),"
    " PRIMARY KEY (dataset, measure, true_count, epsilon, delta))",
]


class NoiseStore:
    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.db: Database = open_store(database_url, path, "federation-noise", [_SCHEMA])

    def sample(self, key: tuple[str, str, int, float, float], draw: Callable[[], float]) -> float:
        """The kept sample for ``key``, drawing and keeping one if there is none yet."""
        row = (
            self.db.reader()
            .execute(
                "SELECT sample FROM noise WHERE dataset = ? AND measure = ? AND true_count = ?"
                " AND epsilon = ? AND delta = ?",
                key,
            )
            .fetchone()
        )
        if row is not None:
            return float(row[0])
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO noise (dataset, measure, true_count, epsilon, delta, sample)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (*key, draw()),
            )
            found = conn.execute(
                "SELECT sample FROM noise WHERE dataset = ? AND measure = ? AND true_count = ?"
                " AND epsilon = ? AND delta = ?",
                key,
            ).fetchone()
        return float(found[0])

    def close(self) -> None:
        self.db.close()
