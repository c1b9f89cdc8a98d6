"""Pull jobs and the state of each instance they found, in ``<data dir>/pull.sqlite``
(or the shared database, see server.database).

A job is named by what it pulls (source without credentials, dataset, selection), so
the same ``pull`` run again is the same job and skips every instance already done; a
job id can also be named (``pull --resume JOB``). Credentials are never stored.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from server.database import Database, open_store
from server.peers.base import RemoteInstance

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS pull_job (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, dataset TEXT NOT NULL,
    selection TEXT NOT NULL, options TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    state TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS pull_item (
    job TEXT NOT NULL, sop_uid TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, sop_uid)
)""",
]
DONE = ("stored", "present")


@dataclass(frozen=True)
class Job:
    id: str
    source: str
    dataset: str
    selection: dict[str, Any]
    options: dict[str, Any]
    state: str


def job_id(source: str, dataset: str, selection: dict[str, Any]) -> str:
    key = orjson.dumps([source, dataset, selection], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(key).hexdigest()[:12]


class PullJobs:
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.path = data_dir / "pull.sqlite"
        self._db: Database = open_store(database_url, self.path, "pull", [SCHEMA])

    def close(self) -> None:
        self._db.close()

    def open(
        self, source: str, dataset: str, selection: dict[str, Any], options: dict[str, Any]
    ) -> Job:
        """The job for these arguments: created, or the earlier one (to be resumed)."""
        jid = job_id(source, dataset, selection)
        now = time.time()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO pull_job VALUES (?, ?, ?, ?, ?, ?, ?, 'running') ON CONFLICT(id) "
                "DO UPDATE SET updated=excluded.updated, options=excluded.options, state='running'",
                (jid, source, dataset, orjson.dumps(selection).decode(),
                 orjson.dumps(options).decode(), now, now),
            )  # fmt: skip
        job = self.get(jid)
        assert job is not None
        return job

    def get(self, jid: str) -> Job | None:
        row = (
            self._db.reader()
            .execute(
                "SELECT id, source, dataset, selection, options, state FROM pull_job WHERE id=?",
                (jid,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return Job(row[0], row[1], row[2], orjson.loads(row[3]), orjson.loads(row[4]), row[5])

    def finish(self, jid: str, state: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE pull_job SET state=?, updated=? WHERE id=?", (state, time.time(), jid)
            )

    def add_found(self, jid: str, instances: list[RemoteInstance]) -> None:
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO pull_item (job, sop_uid, study_uid, series_uid, state) "
                "VALUES (?, ?, ?, ?, 'pending') ON CONFLICT (job, sop_uid) DO NOTHING",
                [(jid, i.sop_uid, i.study_uid, i.series_uid) for i in instances],
            )

    def done(self, jid: str, study_uid: str) -> set[str]:
        """SOP UIDs of the study already stored (or found present) by this job."""
        rows = self._db.reader().execute(
            "SELECT sop_uid FROM pull_item WHERE job=? AND study_uid=? AND state IN (?, ?)",
            (jid, study_uid, *DONE),
        )
        return {r[0] for r in rows}

    def mark(self, jid: str, sop_uid: str, state: str, reason: str = "", size: int = 0) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE pull_item SET state=?, reason=?, bytes=? WHERE job=? AND sop_uid=?",
                (state, reason[:500], size, jid, sop_uid),
            )

    def counts(self, jid: str) -> dict[str, int]:
        rows = self._db.reader().execute(
            "SELECT state, count(*) FROM pull_item WHERE job=? GROUP BY state", (jid,)
        )
        return {r[0]: r[1] for r in rows}

    def failures(self, jid: str) -> list[tuple[str, str, str]]:
        """(study UID, SOP UID, reason) of every instance that failed in the latest run."""
        rows = self._db.reader().execute(
            "SELECT study_uid, sop_uid, reason FROM pull_item WHERE job=? AND state='failed' "
            "ORDER BY study_uid, sop_uid",
            (jid,),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def job_states(self) -> dict[str, int]:
        """Jobs by state for /metrics (``done`` reported as ``complete``); a pull killed
        mid-way stays ``running`` until it is run again."""
        rows = self._db.reader().execute("SELECT state, count(*) FROM pull_job GROUP BY state")
        found: dict[str, int] = {}
        for state, count in rows:
            label = "complete" if state == "done" else state
            found[label] = found.get(label, 0) + int(count)
        return found

    def running_items_done(self) -> int:
        """Instances stored (or found present) so far by the jobs that are running."""
        row = (
            self._db.reader()
            .execute(
                "SELECT count(*) FROM pull_item i JOIN pull_job j ON i.job = j.id"
                " WHERE j.state = 'running' AND i.state IN (?, ?)",
                DONE,
            )
            .fetchone()
        )
        return int(row[0])
