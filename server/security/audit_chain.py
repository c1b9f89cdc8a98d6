"""The audit chain's storage: schema, hashing, the anchor, and the shared-database variant.

See :mod:`server.security.audit` for the design (hash chain, anchor, durability).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from server.database import Connection, Database, open_store
from server.security.audit_search import ID_INDEX
from server.storage.permissions import file_lock

log = logging.getLogger("gateway.audit")

AUDIT_FILE = "audit.sqlite"
ANCHOR_SUFFIX = ".head"
GENESIS = "0" * 64

SCHEMA = [
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
COLUMNS = "client_id, subject, action, outcome, recorded, datasets, entities"
# The same table on a shared database, plus the anchor as a row and append-only triggers.
SHARED_SCHEMA = [
    *SCHEMA[:-2],
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),"
    " seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    f"INSERT INTO audit_head VALUES (1, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING",
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE OR TRUNCATE"
    " ON audit_event FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
]
CHUNK = 5000  # rows read per query while verifying


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


def _anchor_lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """Serialise anchor updates between processes sharing the log (POSIX only)."""
    return file_lock(anchor_path(path).with_suffix(ANCHOR_SUFFIX + ".lock"))


def write_anchor(path: Path, seq: int, digest: str) -> None:
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


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


# -- the log on a shared database -------------------------------------------------------------


def open_shared(database_url: str) -> Database:
    """The audit store on a shared database (tables created on first use)."""
    return open_store(database_url, Path(AUDIT_FILE), "audit", [SHARED_SCHEMA])


def last_row(conn: Connection) -> tuple[int, str]:
    last = conn.execute("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)


def check_head(db: Database) -> None:
    conn = db.reader()
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    end = last_row(conn)
    if head is not None and end != (head[0], head[1]):
        log.warning(
            "audit log ends at %s but its head says %s; run 'imaging-gateway audit verify'",
            end[0],
            head[0],
        )


def append_shared(db: Database, events: list[tuple[bytes, tuple[Any, ...]]]) -> None:
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
            f"INSERT INTO audit_event (seq, event, prev_hash, hash, {COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
