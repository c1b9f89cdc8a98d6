"""The audit trail: every access and refused attempt as a FHIR R4 AuditEvent in a hash chain.

Events follow IHE BALP (Basic Audit Log Patterns) where it applies: a RESTful
interaction (``type`` = ``rest``, ``subtype`` from ``restful-interaction``), the
client and - when a user is involved - the user as agents, the agreements
(``Contract``) that granted the access as agent policy, the datasets and studies
touched as entities, and the query string as a base64 query entity.

Storage
-------
``data_dir/audit.sqlite`` holds one row per event, appended in ``seq`` order::

    hash = sha256(prev_hash + canonical event bytes)     (hex; the first prev_hash is 64 zeros)

The canonical bytes are the AuditEvent serialised with sorted keys, so the chain
can be recomputed from the file alone (:func:`verify`). Changing, removing or
inserting a row breaks the chain; removing the *last* rows leaves a valid but
shorter chain, which is why ``data_dir/audit.head`` (an anchor: seq and hash of
the last event, replaced atomically after every write) is compared as well.
Update and delete triggers make the table append-only for ordinary SQL. The chain
makes tampering evident, not impossible: someone able to rewrite every later row
and the anchor can hide a change, so keep copies of the anchor's hash elsewhere
(``imaging-gateway audit verify`` prints it) when that matters.

Latency and durability
----------------------
:meth:`AuditLog.record` only appends to an in-memory queue; a background thread
writes the queued events in one transaction every ``flush_interval`` seconds.
The database runs in WAL mode with ``synchronous=NORMAL``: a committed event
survives the process being killed, but an event still queued (not yet flushed)
when the process dies is lost - the flush interval bounds that window - and an
operating-system crash or power loss may lose the last committed flushes, after
which :func:`verify` reports the tail as removed. Several processes may share one
log: the next seq and hash are read inside the write transaction.

On a shared PostgreSQL database (``GATEWAY_DATABASE_URL``) the same rows live in the
``audit_event`` table and the anchor is the one-row ``audit_head`` table, moved in the
same transaction as the rows it anchors. Appends from every replica are serialised by
the store's advisory lock and a ``SELECT ... FOR UPDATE`` of the head, so the chain stays
one sequence; ``imaging-gateway audit verify`` recomputes it from the database. The
anchor sitting in the same database protects less than a file elsewhere: keep copies of
the printed head hash outside the database when that matters.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.core.fhir.search import SearchRequest
from server.database import Connection, Database
from server.security.audit_chain import (
    ANCHOR_SUFFIX,
    AUDIT_FILE,
    COLUMNS,
    GENESIS,
    SCHEMA,
    append_shared,
    canonical,
    chain_hash,
    check_head,
    connect,
    open_shared,
    read_anchor,
    write_anchor,
)
from server.security.audit_event import (
    CLIENT_ID_SYSTEM,
    OUTCOMES,
    AccessRecord,
    audit_event,
    index_values,
    instant,
)
from server.security.audit_search import fhir_rows, read_event, search_rows
from server.security.audit_verify import VerifyReport, tail, tail_shared, verify, verify_shared

log = logging.getLogger("gateway.audit")


class AuditLog:
    """Append-only, hash-chained audit store (SQLite in data_dir/audit.sqlite)."""

    def __init__(
        self,
        path: Path,
        *,
        database_url: str | None = None,
        observer: str = "cancer-imaging-gateway",
        flush_interval: float = 0.05,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.observer = observer
        self.flush_interval = flush_interval
        self._queue: deque[AccessRecord] = deque()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        self.db: Database | None = None
        if database_url:
            self.db = open_shared(database_url)
            check_head(self.db)
        else:
            self._conn = connect(path, read_only=False)
            for statement in SCHEMA:
                self._conn.execute(statement)
            self._check_anchor()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def _check_anchor(self) -> None:
        assert self._conn is not None
        last = self._conn.execute(
            "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        try:
            anchor = read_anchor(self.path)
        except ValueError as exc:
            log.warning("audit log %s: %s", self.path, exc)
            return
        end = (last[0], last[1]) if last else (0, GENESIS)
        if last is None and anchor is None:
            write_anchor(self.path, 0, GENESIS)
        elif end != anchor:
            log.warning(
                "audit log %s ends at %s but its anchor says %s; run 'imaging-gateway audit verify'",
                self.path,
                end[0],
                anchor[0] if anchor else "nothing (missing)",
            )

    # writing

    def record(self, record: AccessRecord) -> None:
        """Queue one event; the writer thread stores it within ``flush_interval``."""
        if self._closed:
            raise RuntimeError("the audit log is closed")
        if record.recorded is None:
            record = replace(record, recorded=time.time())
        self._queue.append(record)

    def flush(self) -> None:
        """Write everything queued so far, now."""
        self._write_queued()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        try:
            self._write_queued()
        finally:
            if self._conn is not None:
                self._conn.close()
            if self.db is not None:
                self.db.close()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.flush_interval):
            try:
                self._write_queued()
            except Exception:  # never let the writer die; the batch stays queued
                if not failing:  # once per outage, not every flush interval
                    log.exception("audit writer: write failed; retrying")
                failing = True
            else:
                if failing:
                    log.warning("audit writer: writing again")
                failing = False

    def _write_queued(self) -> None:
        with self._write_lock:
            batch: list[AccessRecord] = []
            while self._queue:
                batch.append(self._queue.popleft())
            if not batch:
                return
            try:
                self._append(batch)
            except BaseException:
                self._queue.extendleft(reversed(batch))
                raise

    def _events(self, batch: list[AccessRecord]) -> Iterator[tuple[bytes, tuple[Any, ...]]]:
        for record in batch:
            try:
                event = audit_event(record, event_id=str(uuid.uuid4()), observer=self.observer)
                yield canonical(event), index_values(event)
            except Exception:  # a malformed record must not cost the others their place
                log.exception("audit writer: dropped an unrecordable access record %r", record)

    def _append(self, batch: list[AccessRecord]) -> None:
        events = list(self._events(batch))
        if not events:
            return
        if self.db is not None:
            append_shared(self.db, events)
            return
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute(
                "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (last[0], last[1]) if last else (0, GENESIS)
            try:
                anchor = read_anchor(self.path)
            except ValueError:
                anchor = None
            if anchor is not None and anchor[0] > seq:
                # rows after the anchor's were removed: keep numbering past them, so the gap shows
                seq, prev = anchor
            rows = []
            for data, columns in events:
                seq += 1
                digest = chain_hash(prev, data)
                rows.append((seq, columns[4], data, prev, digest, *columns))
                prev = digest
            conn.executemany(
                "INSERT INTO audit_event (seq, recorded, event, prev_hash, hash, "
                f"{COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            write_anchor(self.path, seq, prev)
        except OSError:
            log.exception("audit writer: could not update the anchor")

    # reading

    def search(
        self,
        *,
        client_id: str | None = None,
        subject: str | None = None,
        action: str | None = None,
        outcome: int | None = None,
        since: str | None = None,
        until: str | None = None,
        entity: str | None = None,
        dataset: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Stored events matching all the given filters, oldest first; page on with ``after_seq``.

        ``since``/``until`` are instants or dates (a date as ``until`` includes that day);
        ``entity`` and ``dataset`` match one of the event's values exactly.
        """
        with self._reading() as conn:
            return search_rows(
                conn,
                client_id=client_id,
                subject=subject,
                action=action,
                outcome=outcome,
                since=since,
                until=until,
                entity=entity,
                dataset=dataset,
                limit=limit,
                after_seq=after_seq,
            )

    def read(self, event_id: str) -> dict[str, Any] | None:
        """The stored AuditEvent with this id, or None."""
        with self._reading() as conn:
            return read_event(conn, event_id)

    def fhir_search(
        self, req: SearchRequest, after_seq: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """FHIR R4 AuditEvent search: up to ``req.count + 1`` events after ``after_seq``."""
        with self._reading() as conn:
            return fhir_rows(conn, req, after_seq=after_seq)

    def count(self) -> int:
        """Stored events (queued ones are not counted until flushed)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT count(*) FROM audit_event").fetchone()[0])

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        if self.db is not None:
            yield self.db.reader()
            return
        conn = connect(self.path, read_only=True)
        try:
            yield conn
        finally:
            conn.close()


__all__ = [
    "ANCHOR_SUFFIX",
    "AUDIT_FILE",
    "CLIENT_ID_SYSTEM",
    "GENESIS",
    "OUTCOMES",
    "AccessRecord",
    "AuditLog",
    "VerifyReport",
    "audit_event",
    "canonical",
    "chain_hash",
    "index_values",
    "instant",
    "read_anchor",
    "tail",
    "tail_shared",
    "verify",
    "verify_shared",
]
