"""Reading the audit chain back: the last events, and verification of the chain and anchor."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from server.database import Connection
from server.security.audit_chain import (
    CHUNK,
    COLUMNS,
    GENESIS,
    chain_hash,
    connect,
    open_shared,
    read_anchor,
)
from server.security.audit_event import index_values


def tail(path: Path, limit: int = 20) -> list[tuple[int, dict[str, Any]]]:
    """The last ``limit`` stored events (oldest of them first), read without writing anything."""
    if not path.exists():
        return []
    conn = connect(path, read_only=True)
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
                f"SELECT seq, event, prev_hash, hash, {COLUMNS} FROM audit_event {where}"
                "ORDER BY seq LIMIT ?",
                [*([] if after is None else [after]), CHUNK],
            ).fetchall()
            for row in rows:
                self.check(tuple(row))
            if len(rows) < CHUNK:
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
        conn = connect(path, read_only=True)
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
