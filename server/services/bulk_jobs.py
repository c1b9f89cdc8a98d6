"""Persistent FHIR bulk export jobs: one protocol, an embedded SQLite store.

A job is claimed by a worker with a lease it renews while it runs; a job whose lease
ran out (the process died, the server restarted) is claimable again and re-run from
the start. Every state change is one SQLite transaction, so several server processes
sharing the data directory never run the same job twice at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import orjson

from server.database import Database, open_store


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass
class Job:
    id: str
    owner: str  # who may poll, cancel and download (see BulkExportService.owner_of)
    state: JobState
    request_url: str
    request: dict[str, Any]  # ExportRequest.to_json()
    principal: dict[str, Any]  # the caller's grants at kick-off
    created: float
    transaction_time: str | None = None
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)  # {type, name, count}
    errors: list[dict[str, Any]] = field(default_factory=list)
    expires: float | None = None
    lease_until: float = 0.0
    attempts: int = 0
    message: str | None = None


class JobStore(Protocol):
    """Where export jobs live (SqlJobStore: SQLite, or the shared PostgreSQL database)."""

    def add(self, job: Job) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def claim(self, worker: str, lease_seconds: float, now: float) -> Job | None: ...
    def renew(self, job_id: str, worker: str, lease_seconds: float, progress: str) -> bool: ...
    def finish(self, job: Job, worker: str) -> bool: ...
    def remove(self, job_id: str) -> bool: ...
    def expired(self, now: float) -> list[str]: ...
    def active_of(self, owner: str) -> int: ...
    def ids(self) -> set[str]: ...
    def counts(self) -> dict[str, int]: ...
    def close(self) -> None: ...


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS bulk_job (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " state TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL, expires REAL,"
    " worker TEXT, lease_until REAL NOT NULL DEFAULT 0, progress TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS ix_bulk_job_state ON bulk_job(state, created)",
    "CREATE INDEX IF NOT EXISTS ix_bulk_job_owner ON bulk_job(owner, state)",
]
_BODY_FIELDS = ("request_url", "request", "principal", "transaction_time", "output", "errors",
                "attempts", "message")  # fmt: skip
_COLUMNS = "id, owner, state, body, created, expires, lease_until, progress"


def _body(job: Job) -> bytes:
    return orjson.dumps({k: getattr(job, k) for k in _BODY_FIELDS})


def _job(row: tuple[Any, ...]) -> Job:
    body = orjson.loads(row[3])
    return Job(id=row[0], owner=row[1], state=JobState(row[2]), created=row[4], expires=row[5],
               lease_until=row[6], progress=row[7], **body)  # fmt: skip


class SqlJobStore:
    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.db: Database = open_store(database_url, path, "bulk", [_SCHEMA])

    def close(self) -> None:
        self.db.close()

    def add(self, job: Job) -> None:
        with self.db.write() as conn:
            conn.execute(
                f"INSERT INTO bulk_job ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.owner, job.state.value, _body(job), job.created, job.expires,
                 job.lease_until, job.progress),
            )  # fmt: skip

    def get(self, job_id: str) -> Job | None:
        row = (
            self.db.reader()
            .execute(f"SELECT {_COLUMNS} FROM bulk_job WHERE id = ?", (job_id,))
            .fetchone()
        )
        return _job(row) if row else None

    def claim(self, worker: str, lease_seconds: float, now: float) -> Job | None:
        """The oldest queued job, or a running one whose lease ran out, now leased to ``worker``."""
        with self.db.write() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM bulk_job WHERE state = 'queued'"
                " OR (state = 'running' AND lease_until < ?) ORDER BY created LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            job.attempts += 1
            job.state = JobState.RUNNING
            job.lease_until = now + lease_seconds
            conn.execute(
                "UPDATE bulk_job SET state = 'running', worker = ?, lease_until = ?, body = ?"
                " WHERE id = ?",
                (worker, job.lease_until, _body(job), job.id),
            )
            return job

    def renew(self, job_id: str, worker: str, lease_seconds: float, progress: str) -> bool:
        """Extend the lease; False if the job was cancelled or taken over (stop working)."""
        with self.db.write() as conn:
            done = conn.execute(
                "UPDATE bulk_job SET lease_until = ?, progress = ? WHERE id = ? AND worker = ?"
                " AND state = 'running'",
                (time.time() + lease_seconds, progress, job_id, worker),
            )
            return done.rowcount == 1

    def finish(self, job: Job, worker: str) -> bool:
        """Record the outcome (complete or failed) if ``worker`` still holds the job."""
        with self.db.write() as conn:
            done = conn.execute(
                "UPDATE bulk_job SET state = ?, body = ?, expires = ?, progress = ?"
                " WHERE id = ? AND worker = ? AND state = 'running'",
                (job.state.value, _body(job), job.expires, job.progress, job.id, worker),
            )
            return done.rowcount == 1

    def remove(self, job_id: str) -> bool:
        with self.db.write() as conn:
            return conn.execute("DELETE FROM bulk_job WHERE id = ?", (job_id,)).rowcount == 1

    def expired(self, now: float) -> list[str]:
        rows = self.db.reader().execute(
            "SELECT id FROM bulk_job WHERE expires IS NOT NULL AND expires < ?", (now,)
        )
        return [r[0] for r in rows]

    def active_of(self, owner: str) -> int:
        row = (
            self.db.reader()
            .execute(
                "SELECT count(*) FROM bulk_job WHERE owner = ? AND state IN ('queued', 'running')",
                (owner,),
            )
            .fetchone()
        )
        return int(row[0])

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.reader().execute("SELECT id FROM bulk_job")}

    def counts(self) -> dict[str, int]:
        """Jobs by state (every replica's: the store is shared)."""
        rows = self.db.reader().execute("SELECT state, count(*) FROM bulk_job GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}
