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
import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from server.core.fhir.search import SearchRequest
from server.database import Connection, Database, open_store
from server.security.audit_event import (
    CLIENT_ID_SYSTEM,
    OUTCOMES,
    AccessRecord,
    audit_event,
    index_values,
    instant,
)
from server.security.audit_search import ID_INDEX, fhir_rows, read_event, search_rows

log = logging.getLogger("gateway.audit")

AUDIT_FILE = "audit.sqlite"
ANCHOR_SUFFIX = ".head"
GENESIS = "0" * 64

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS audit_event (
        seq INTEGER PRIMARY KEY,
        recorded TEXT NOT NULL,
        event BLOB NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        client_id TEXT,
        subject TEXT,
        action TEXT,
        outcome INTEGER,
        datasets TEXT NOT NULL DEFAULT '',
        entities TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS audit_event_client ON audit_event(client_id, seq)",
    "CREATE INDEX IF NOT EXISTS audit_event_subject ON audit_event(subject, seq)",
    "CREATE INDEX IF NOT EXISTS audit_event_action ON audit_event(action, seq)",
    "CREATE INDEX IF NOT EXISTS audit_event_recorded ON audit_event(recorded)",
    ID_INDEX,
    """CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]
_COLUMNS = "client_id, subject, action, outcome, recorded, datasets, entities"
# The same table on a shared database, plus the anchor as a row and append-only triggers.
_SHARED_SCHEMA = [
    *_SCHEMA[:-2],
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
    " seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    f"INSERT INTO audit_head VALUES (1, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING",
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE OR TRUNCATE"
    " ON audit_event FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
]
_CHUNK = 5000  # rows read per query while verifying


def canonical(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, event: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + event).hexdigest()


# -- the anchor -------------------------------------------------------------------------------


def anchor_path(path: Path) -> Path:
    return path.with_suffix(ANCHOR_SUFFIX)


def read_anchor(path: Path) -> tuple[int, str] | None:
    """(seq, hash) from the anchor next to the database ``path``; None if there is none."""
    try:
        data = orjson.loads(anchor_path(path).read_bytes())
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable anchor {anchor_path(path).name}: {exc}") from exc


@contextlib.contextmanager
def _anchor_lock(path: Path) -> Iterator[None]:
    """Serialise anchor updates between processes sharing the log (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(
        anchor_path(path).with_suffix(ANCHOR_SUFFIX + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_anchor(path: Path, seq: int, digest: str) -> None:
    """Move the anchor forward to (seq, digest), never back (another process may be ahead)."""
    target = anchor_path(path)
    with _anchor_lock(path):
        try:
            current = read_anchor(path)
        except ValueError:
            current = None
        if current is not None and current[0] >= seq:
            return
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(orjson.dumps({"seq": seq, "hash": digest}))
        os.replace(partial, target)


# -- the log ----------------------------------------------------------------------------------


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


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
            _check_head(self.db)
        else:
            self._conn = _connect(path, read_only=False)
            for statement in _SCHEMA:
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
            _write_anchor(self.path, 0, GENESIS)
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
            _append_shared(self.db, events)
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
                f"{_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            _write_anchor(self.path, seq, prev)
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
        conn = _connect(self.path, read_only=True)
        try:
            yield conn
        finally:
            conn.close()


# -- the log on a shared database -------------------------------------------------------------


def open_shared(database_url: str) -> Database:
    """The audit store on a shared database (tables created on first use)."""
    return open_store(database_url, Path(AUDIT_FILE), "audit", [_SHARED_SCHEMA])


def _last_row(conn: Connection) -> tuple[int, str]:
    last = conn.execute("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)


def _check_head(db: Database) -> None:
    conn = db.reader()
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    end = _last_row(conn)
    if head is not None and end != (head[0], head[1]):
        log.warning(
            "audit log ends at %s but its head says %s; run 'imaging-gateway audit verify'",
            end[0],
            head[0],
        )


def _append_shared(db: Database, events: list[tuple[bytes, tuple[Any, ...]]]) -> None:
    """Append after the head, moving it in the same transaction (one writer at a time)."""
    with db.write() as conn:
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE").fetchone()
        seq, prev = int(head[0]), str(head[1])
        rows = []
        for data, columns in events:
            seq += 1
            digest = chain_hash(prev, data)
            rows.append((seq, data, prev, digest, *columns))
            prev = digest
        conn.executemany(
            f"INSERT INTO audit_event (seq, event, prev_hash, hash, {_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))


def tail(path: Path, limit: int = 20) -> list[tuple[int, dict[str, Any]]]:
    """The last ``limit`` stored events (oldest of them first), read without writing anything."""
    if not path.exists():
        return []
    conn = _connect(path, read_only=True)
    try:
        rows = conn.execute(
            "SELECT seq, event FROM audit_event ORDER BY seq DESC LIMIT ?", (max(0, limit),)
        ).fetchall()
    finally:
        conn.close()
    return [(seq, orjson.loads(event)) for seq, event in reversed(rows)]


# -- verification -----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    events: int
    ok: bool
    problems: list[str] = field(default_factory=list)
    last_seq: int = 0
    last_hash: str = GENESIS


def _span(first: int, last: int) -> str:
    return f"event {first} missing" if first == last else f"events {first}-{last} missing"


class _Chain:
    """Walks stored rows in seq order and notes every break in the chain."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.events = 0
        self.expected = 1
        self.last_seq, self.last_hash = 0, GENESIS

    def check(self, row: tuple[Any, ...]) -> None:
        seq, data, prev_hash, stored, *columns = row
        self.events += 1
        if isinstance(data, str):
            data = data.encode()
        data = bytes(data)
        gap = seq > self.expected
        if seq < self.expected:
            self.problems.append(f"event {seq}: out of sequence (inserted)")
        elif gap:
            self.problems.append(f"{_span(self.expected, seq - 1)} (removed)")
        if chain_hash(prev_hash, data) != stored:
            self.problems.append(f"event {seq}: hash mismatch (changed)")
        elif prev_hash != self.last_hash and not gap and seq >= self.expected:
            self.problems.append(
                f"event {seq}: does not follow event {self.last_seq} (inserted or rewritten)"
            )
        try:
            if tuple(columns) != index_values(orjson.loads(data)):
                self.problems.append(f"event {seq}: search columns differ from the event")
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            self.problems.append(f"event {seq}: not a readable AuditEvent (changed)")
        self.expected = max(self.expected, seq + 1)
        self.last_seq, self.last_hash = seq, stored

    def walk(self, conn: Connection) -> None:
        """Every row, a chunk at a time (memory does not grow with the log)."""
        after = None
        while True:
            where = "" if after is None else "WHERE seq > ? "
            rows = conn.execute(
                f"SELECT seq, event, prev_hash, hash, {_COLUMNS} FROM audit_event {where}"
                "ORDER BY seq LIMIT ?",
                [*([] if after is None else [after]), _CHUNK],
            ).fetchall()
            for row in rows:
                self.check(tuple(row))
            if len(rows) < _CHUNK:
                return
            after = rows[-1][0]

    def against(self, anchor: tuple[int, str] | None) -> None:
        if anchor is None:
            if self.events:
                self.problems.append(
                    "anchor: missing (cannot tell whether the last events were removed)"
                )
        elif anchor[0] > self.last_seq:
            self.problems.append(
                f"anchor: log ends at {self.last_seq}, anchor says {anchor[0]} (tail removed)"
            )
        elif anchor[0] < self.last_seq:
            self.problems.append(
                f"anchor: log ends at {self.last_seq}, anchor says {anchor[0]} "
                "(events added after the anchor, or the writer stopped before updating it)"
            )
        elif anchor[1] != self.last_hash:
            self.problems.append(f"anchor: event {self.last_seq} is not the one anchored (changed)")

    def report(self) -> VerifyReport:
        return VerifyReport(
            events=self.events,
            ok=not self.problems,
            problems=self.problems,
            last_seq=self.last_seq,
            last_hash=self.last_hash,
        )


def verify(path: Path) -> VerifyReport:
    """Recompute the hash chain from the database file (opened read-only) and check the anchor."""
    chain = _Chain()
    if path.exists():
        conn = _connect(path, read_only=True)
        try:
            chain.walk(conn)
        except sqlite3.DatabaseError as exc:
            chain.problems.append(f"database unreadable: {exc}")
        finally:
            conn.close()
    try:
        anchor = read_anchor(path)
    except ValueError as exc:
        chain.problems.append(f"anchor: {exc}")
    else:
        chain.against(anchor)
    return chain.report()


def verify_shared(database_url: str) -> VerifyReport:
    """Recompute the chain stored on a shared database and check it against ``audit_head``."""
    db = open_shared(database_url)
    try:
        conn = db.reader()
        chain = _Chain()
        chain.walk(conn)
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        chain.against((int(head[0]), str(head[1])) if head else None)
        return chain.report()
    finally:
        db.close()


def tail_shared(database_url: str, limit: int = 20) -> list[tuple[int, dict[str, Any]]]:
    """The last ``limit`` events of the log on a shared database (oldest of them first)."""
    db = open_shared(database_url)
    try:
        rows = (
            db.reader()
            .execute(
                "SELECT seq, event FROM audit_event ORDER BY seq DESC LIMIT ?", (max(0, limit),)
            )
            .fetchall()
        )
    finally:
        db.close()
    return [(seq, orjson.loads(bytes(event))) for seq, event in reversed(rows)]


__all__ = [
    "AUDIT_FILE",
    "CLIENT_ID_SYSTEM",
    "GENESIS",
    "OUTCOMES",
    "AccessRecord",
    "AuditLog",
    "audit_event",
    "index_values",
    "instant",
    "tail",
    "tail_shared",
    "verify",
    "verify_shared",
]
