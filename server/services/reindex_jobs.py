"""Reindex jobs stored in the shared state database (``reindex.sqlite`` or PostgreSQL).

A rebuild is started from the CLI or the admin API of any replica and seen from every
replica. One job is active at a time (queued or running), and one runner holds it: the
runner's lease is renewed by a heartbeat while it works, and a job whose lease ran out
(its process was killed) is taken over by the next runner, which resumes from the state
the last checkpoint stored (the new indices' names, the last blob key loaded, the counts).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from server.database import Database, open_store
from server.errors import Conflict
from server.services.reindex import ReindexReport


class ReindexState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


ACTIVE = (ReindexState.QUEUED, ReindexState.RUNNING)


@dataclass
class ReindexJob:
    id: str
    state: ReindexState
    created: float
    updated: float
    keep_old: bool = False
    started_by: str = ""  # "cli" or the admin client id: never patient data
    worker: str | None = None
    lease_until: float = 0.0
    attempts: int = 0
    message: str | None = None
    report: ReindexReport = field(default_factory=ReindexReport)

    def to_json(self) -> dict[str, Any]:
        """The job as the admin API and ``reindex --status`` show it."""
        r = self.report
        return {"id": self.id, "state": self.state.value, "phase": r.phase,
                "indexed": r.indexed, "skipped": r.skipped, "caughtUp": r.caught_up,
                "attempts": self.attempts, "keepOld": self.keep_old, "startedBy": self.started_by,
                "created": _iso(self.created), "updated": _iso(self.updated),
                "running": self.state is ReindexState.RUNNING and self.lease_until >= time.time(),
                "newIndices": sorted(r.new_names.values()), "message": self.message}  # fmt: skip


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS reindex_job (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " created REAL NOT NULL, updated REAL NOT NULL, worker TEXT,"
    " lease_until REAL NOT NULL DEFAULT 0, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_reindex_job_state ON reindex_job(state, created)",
]
_COLUMNS = "id, state, created, updated, worker, lease_until, body"


def _body(job: ReindexJob) -> bytes:
    return orjson.dumps({"keep_old": job.keep_old, "started_by": job.started_by,
                         "attempts": job.attempts, "message": job.message,
                         "report": job.report.to_json()})  # fmt: skip


def _job(row: tuple[Any, ...]) -> ReindexJob:
    body = orjson.loads(row[6])
    return ReindexJob(id=row[0], state=ReindexState(row[1]), created=row[2], updated=row[3],
                      worker=row[4], lease_until=row[5], keep_old=body["keep_old"],
                      started_by=body["started_by"], attempts=body["attempts"],
                      message=body["message"], report=ReindexReport.from_json(body["report"]))  # fmt: skip


class ReindexJobs:
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.db: Database = open_store(
            database_url, data_dir / "reindex.sqlite", "reindex", [_SCHEMA]
        )

    def close(self) -> None:
        self.db.close()

    def start(self, *, keep_old: bool, started_by: str, worker: str | None = None,
              lease_seconds: float = 0) -> ReindexJob:  # fmt: skip
        """Queue a rebuild, or with ``worker`` start it already leased to that worker (no
        other runner can claim it in between); Conflict (409) while another is unfinished."""
        now = time.time()
        job = ReindexJob(id=uuid.uuid4().hex, state=ReindexState.QUEUED, created=now, updated=now,
                         keep_old=keep_old, started_by=started_by)  # fmt: skip
        if worker is not None:
            job.state, job.worker, job.attempts = ReindexState.RUNNING, worker, 1
            job.lease_until = now + lease_seconds
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT id FROM reindex_job WHERE state IN ('queued', 'running') LIMIT 1"
            ).fetchone()
            if row is not None:
                raise Conflict(f"reindex job {row[0]} is not finished; see its status")
            conn.execute(
                f"INSERT INTO reindex_job ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.state.value, now, now, job.worker, job.lease_until, _body(job)),
            )
        return job

    def get(self, job_id: str) -> ReindexJob | None:
        row = (
            self.db.reader()
            .execute(f"SELECT {_COLUMNS} FROM reindex_job WHERE id = ?", (job_id,))
            .fetchone()
        )
        return _job(row) if row else None

    def latest(self, limit: int = 10) -> list[ReindexJob]:
        rows = self.db.reader().execute(
            f"SELECT {_COLUMNS} FROM reindex_job ORDER BY created DESC LIMIT ?", (limit,)
        )
        return [_job(r) for r in rows]

    def active(self) -> ReindexJob | None:
        row = (
            self.db.reader()
            .execute(
                f"SELECT {_COLUMNS} FROM reindex_job WHERE state IN ('queued', 'running')"
                " ORDER BY created LIMIT 1"
            )
            .fetchone()
        )
        return _job(row) if row else None

    def claim(
        self, worker: str, lease_seconds: float, job_id: str | None = None
    ) -> ReindexJob | None:
        """The active job (or ``job_id``), leased to ``worker`` if nobody holds it now."""
        now = time.time()
        with self.db.write() as conn:
            named = " AND id = ?" if job_id is not None else ""
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM reindex_job WHERE (state = 'queued'"
                f" OR (state = 'running' AND lease_until < ?)){named} ORDER BY created LIMIT 1",
                (now, job_id) if job_id is not None else (now,),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            job.attempts += 1
            job.state, job.worker = ReindexState.RUNNING, worker
            job.lease_until, job.updated = now + lease_seconds, now
            conn.execute(
                "UPDATE reindex_job SET state = 'running', worker = ?, lease_until = ?,"
                " updated = ?, body = ? WHERE id = ?",
                (worker, job.lease_until, now, _body(job), job.id),
            )
            return job

    def renew(self, job: ReindexJob, lease_seconds: float) -> bool:
        """Extend the lease; False if the job is no longer this worker's (stop working)."""
        now = time.time()
        with self.db.write() as conn:
            done = conn.execute(
                "UPDATE reindex_job SET lease_until = ?, updated = ? WHERE id = ? AND worker = ?"
                " AND state = 'running'",
                (now + lease_seconds, now, job.id, job.worker),
            )
            return done.rowcount == 1

    def save(self, job: ReindexJob) -> bool:
        """Store the job's state (a checkpoint, or its outcome) if the worker still holds it."""
        job.updated = time.time()
        with self.db.write() as conn:
            done = conn.execute(
                "UPDATE reindex_job SET state = ?, updated = ?, body = ? WHERE id = ?"
                " AND worker = ? AND state = 'running'",
                (job.state.value, job.updated, _body(job), job.id, job.worker),
            )
            return done.rowcount == 1

    def counts(self) -> dict[str, int]:
        rows = self.db.reader().execute("SELECT state, count(*) FROM reindex_job GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}
