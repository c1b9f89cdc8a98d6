"""Embedded store of writable FHIR resources (ResearchStudy, Group, ResearchSubject).

Versions and history (FHIR R4 3.1.0: vread, history), soft delete, and a search
index of extracted entries (server.core.fhir.extract) so that searches run as SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from server.core.fhir.extract import entries
from server.core.fhir.params import ParamType
from server.core.fhir.search import (
    Criterion,
    DateValue,
    PagePosition,
    ReferenceValue,
    SearchRequest,
    TokenValue,
)
from server.core.values import fold
from server.database import Connection, Database, open_store
from server.errors import InvalidQuery, PreconditionFailed
from server.index.fhir_sql import date_sql, fetch_page
from server.metrics import metered

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS resource (pk INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL,"
    " version INTEGER NOT NULL, last_updated TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,"
    " content BLOB, UNIQUE (type, id))",
    "CREATE TABLE IF NOT EXISTS history (type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
    " last_updated TEXT NOT NULL, method TEXT NOT NULL, content BLOB, PRIMARY KEY (type, id, version))",
    "CREATE INDEX IF NOT EXISTS ix_history_time ON history(type, last_updated)",
    "CREATE TABLE IF NOT EXISTS search (pk INTEGER NOT NULL REFERENCES resource(pk), param TEXT NOT NULL,"
    " kind TEXT NOT NULL, system TEXT, code TEXT, text TEXT, low TEXT, high TEXT, ref TEXT)",
    "CREATE INDEX IF NOT EXISTS ix_search_code ON search(param, code)",
    "CREATE INDEX IF NOT EXISTS ix_search_text ON search(param, text)",
    "CREATE INDEX IF NOT EXISTS ix_search_ref ON search(param, ref)",
    "CREATE INDEX IF NOT EXISTS ix_search_pk ON search(pk)",
]


T = TypeVar("T")


def now_instant() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _instant_key(instant: str) -> str:
    """A FHIR instant as the comparable text the date criteria use."""
    return instant.replace("Z", "")[:26].ljust(26, "0")


@dataclass
class Version:
    resource: dict[str, Any] | None  # None: deleted
    version: int
    last_updated: str
    method: str
    id: str = ""


@dataclass
class Page:
    resources: list[dict[str, Any]]
    total: int | None
    next_cursor: PagePosition | None
    previous_cursor: PagePosition | None


@metered("fhir-store")
class FhirStore:
    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.db: Database = open_store(database_url, path, "fhir", [SCHEMA])

    def close(self) -> None:
        self.db.close()

    # -- writes ------------------------------------------------------------
    def put(
        self, resource: dict[str, Any], *, if_match: int | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Create or update ``resource`` (its ``id`` is set); returns (stored, created)."""
        with self.db.write() as conn:
            return _put(conn, resource, if_match)

    def delete(self, rtype: str, rid: str) -> bool:
        """Soft delete (FHIR R4 3.1.0.7); False if there was nothing to delete."""
        with self.db.write() as conn:
            return _delete(conn, rtype, rid)

    def transaction(self, work: Callable[[Writer], T]) -> T:
        """Run several writes in one database transaction: all of them happen or none."""
        with self.db.write() as conn:
            return work(Writer(conn))

    # -- reads -------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> tuple[dict[str, Any] | None, bool]:
        """(resource, deleted): (None, False) when it never existed."""
        row = (
            self.db.reader()
            .execute(
                "SELECT content, deleted FROM resource WHERE type = ? AND id = ?", (rtype, rid)
            )
            .fetchone()
        )
        if row is None:
            return None, False
        return (None, True) if row[1] else (orjson.loads(row[0]), False)

    def last_content(self, rtype: str, rid: str) -> dict[str, Any] | None:
        """The last stored content, even of a deleted resource (None if it never existed)."""
        return _last_content(self.db.reader(), rtype, rid)

    def vread(self, rtype: str, rid: str, version: int) -> Version | None:
        row = (
            self.db.reader()
            .execute(
                "SELECT content, version, last_updated, method, id FROM history"
                " WHERE type = ? AND id = ? AND version = ?",
                (rtype, rid, version),
            )
            .fetchone()
        )
        return _version(row) if row else None

    def history(self, rtype: str, rid: str | None, count: int, since: str | None) -> list[Version]:
        sql = "SELECT content, version, last_updated, method, id FROM history WHERE type = ?"
        params: list[Any] = [rtype]
        if rid is not None:
            sql += " AND id = ?"
            params.append(rid)
        if since:
            sql += " AND last_updated >= ?"
            params.append(since)
        rows = (
            self.db.reader()
            .execute(sql + " ORDER BY last_updated DESC LIMIT ?", [*params, count])
            .fetchall()
        )
        return [_version(r) for r in rows]

    def current(self, rtype: str) -> list[dict[str, Any]]:
        """Every current (not deleted) resource of a type, by id: one query, so caches
        that reload a whole type (agreements, datasets) cost one database round trip,
        not one per resource."""
        rows = self.db.reader().execute(
            "SELECT id, content FROM resource WHERE type = ? AND deleted = 0", (rtype,)
        )
        return [orjson.loads(content) for _, content in sorted(rows, key=lambda r: str(r[0]))]

    def ids(self, rtype: str) -> list[str]:
        return [
            r[0]
            for r in self.db.reader().execute(
                "SELECT id FROM resource WHERE type = ? AND deleted = 0", (rtype,)
            )
        ]

    def search(self, req: SearchRequest) -> Page:
        where, params = self.where(req)
        page = fetch_page(
            self.db.reader(), "r.content", "resource r", where, params, _order(req), req
        )
        resources = [orjson.loads(r[0]) for r in page.rows]
        return Page(resources, page.total, page.next_cursor, page.previous_cursor)

    def where(self, req: SearchRequest) -> tuple[str, list[Any]]:
        clauses, params = ["r.type = ?", "r.deleted = 0"], [req.resource_type]
        if req.restrict is not None:
            sql, values = _restrict(req.resource_type, req.restrict)
            clauses.append(sql)
            params += values
        for criterion in req.criteria:
            sql, values = self._criterion(req.resource_type, criterion)
            clauses.append(sql)
            params += values
        return " AND ".join(clauses), params

    def _criterion(self, rtype: str, c: Criterion) -> tuple[str, list[Any]]:
        name = c.param.name
        if c.chain is not None:
            inner_where, inner_params = self.where(c.chain)
            sub = f"SELECT r.type || '/' || r.id FROM resource r WHERE {inner_where}"
            return f"r.pk IN (SELECT pk FROM search WHERE param = ? AND ref IN ({sub}))", [
                name,
                *inner_params,
            ]
        if name == "_id":
            return _any_of(
                [("r.id = ?", [v.code]) for v in c.values if isinstance(v, TokenValue)], c.modifier
            )
        if name == "_lastUpdated":
            parts = [_last_updated(v) for v in c.values if isinstance(v, DateValue)]
            return _any_of(parts, None)
        if c.modifier == "missing":
            sql = f"r.pk {'NOT ' if c.values[0] else ''}IN (SELECT pk FROM search WHERE param = ?)"
            return sql, [name]
        parts = [_entry_sql(c.param.type, c.modifier, v) for v in c.values]
        inner = " OR ".join(f"({p})" for p, _ in parts)
        params = [x for _, ps in parts for x in ps]
        negate = "NOT " if c.modifier == "not" else ""
        return f"r.pk {negate}IN (SELECT pk FROM search WHERE param = ? AND ({inner}))", [
            name,
            *params,
        ]


class Writer:
    """Writes inside an open transaction (see :meth:`FhirStore.transaction`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def put(
        self, resource: dict[str, Any], *, if_match: int | None = None
    ) -> tuple[dict[str, Any], bool]:
        return _put(self.conn, resource, if_match)

    def delete(self, rtype: str, rid: str) -> bool:
        return _delete(self.conn, rtype, rid)

    def last_content(self, rtype: str, rid: str) -> dict[str, Any] | None:
        return _last_content(self.conn, rtype, rid)

    def exists(self, rtype: str, rid: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM resource WHERE type = ? AND id = ? AND deleted = 0", (rtype, rid)
        ).fetchone()
        return row is not None


def _last_content(conn: Connection, rtype: str, rid: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT content FROM resource WHERE type = ? AND id = ?", (rtype, rid)
    ).fetchone()
    return orjson.loads(row[0]) if row and row[0] else None


def _put(
    conn: Connection, resource: dict[str, Any], if_match: int | None
) -> tuple[dict[str, Any], bool]:
    rtype, rid = resource["resourceType"], resource["id"]
    row = conn.execute(
        "SELECT pk, version, deleted FROM resource WHERE type = ? AND id = ?", (rtype, rid)
    ).fetchone()
    current = None if row is None or row[2] else row[1]
    if if_match is not None and current != if_match:
        raise PreconditionFailed(f"{rtype}/{rid} is at version {current}, not {if_match}")
    version = (row[1] if row else 0) + 1
    stored = _with_meta(resource, version)
    content = orjson.dumps(stored)
    last = stored["meta"]["lastUpdated"]
    if row is None:
        pk = conn.execute(
            "INSERT INTO resource (type, id, version, last_updated, content) VALUES (?, ?, ?, ?, ?)"
            " RETURNING pk",
            (rtype, rid, version, last, content),
        ).fetchone()[0]
    else:
        pk = row[0]
        conn.execute(
            "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, content = ? WHERE pk = ?",
            (version, last, content, pk),
        )
        conn.execute("DELETE FROM search WHERE pk = ?", (pk,))
    conn.executemany(
        "INSERT INTO search (pk, param, kind, system, code, text, low, high, ref) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (pk, e.param, e.kind, e.system, e.code, e.text, e.low, e.high, e.ref)
            for e in entries(stored)
        ],
    )
    method = "POST" if current is None else "PUT"
    conn.execute(
        "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)",
        (rtype, rid, version, last, method, content),
    )
    return stored, current is None


def _delete(conn: Connection, rtype: str, rid: str) -> bool:
    row = conn.execute(
        "SELECT pk, version, deleted FROM resource WHERE type = ? AND id = ?", (rtype, rid)
    ).fetchone()
    if row is None or row[2]:
        return False
    last = now_instant()
    conn.execute(
        "UPDATE resource SET deleted = 1, version = ?, last_updated = ? WHERE pk = ?",
        (row[1] + 1, last, row[0]),
    )
    conn.execute("DELETE FROM search WHERE pk = ?", (row[0],))
    conn.execute(
        "INSERT INTO history VALUES (?, ?, ?, ?, 'DELETE', NULL)", (rtype, rid, row[1] + 1, last)
    )
    return True


def _with_meta(resource: dict[str, Any], version: int) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now_instant()
    return {**resource, "meta": meta}


def _version(row: tuple[Any, ...]) -> Version:
    return Version(orjson.loads(row[0]) if row[0] else None, row[1], row[2], row[3], row[4])


def _any_of(parts: list[tuple[str, list[Any]]], modifier: str | None) -> tuple[str, list[Any]]:
    sql = "(" + " OR ".join(p for p, _ in parts) + ")" if parts else "1 = 0"
    if modifier == "not":
        sql = f"NOT {sql}"
    return sql, [x for _, ps in parts for x in ps]


def _last_updated(v: DateValue) -> tuple[str, list[Any]]:
    column = "substr(replace(r.last_updated, 'Z', '') || '000000', 1, 26)"
    return date_sql(column, column, v)


def _restrict(rtype: str, datasets: frozenset[str]) -> tuple[str, list[Any]]:
    """Only resources of the given datasets: the dataset itself, or what refers to it."""
    if not datasets:
        return "1 = 0", []
    marks = ", ".join("?" for _ in datasets)
    if rtype == "ResearchStudy":
        return f"r.id IN ({marks})", sorted(datasets)
    if rtype == "ResearchSubject":
        refs = [f"ResearchStudy/{d}" for d in sorted(datasets)]
        return f"r.pk IN (SELECT pk FROM search WHERE param = 'study' AND ref IN ({marks}))", refs
    return "1 = 0", []  # Group, Contract: administrators only


def _like(text: str) -> str:
    """Escape LIKE's own wildcards: FHIR string search has none."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _entry_sql(kind: ParamType, modifier: str | None, v: Any) -> tuple[str, list[Any]]:
    if kind is ParamType.TOKEN:
        if modifier == "text":
            return "text LIKE ? ESCAPE '\\'", [f"%{_like(fold(str(v)))}%"]
        assert isinstance(v, TokenValue)
        if v.system is None:
            return "code = ?", [v.code]
        if v.code is None:
            return "system = ?", [v.system]
        if v.system == "":
            return "code = ? AND system IS NULL", [v.code]
        return "code = ? AND system = ?", [v.code, v.system]
    if kind is ParamType.STRING:
        if modifier == "exact":
            return "code = ?", [v]
        if modifier == "contains":
            return "text LIKE ? ESCAPE '\\'", [f"%{_like(fold(str(v)))}%"]
        return "text LIKE ? ESCAPE '\\'", [f"{_like(fold(str(v)))}%"]
    if kind is ParamType.DATE:
        return date_sql("low", "high", v)
    if kind is ParamType.REFERENCE:
        assert isinstance(v, ReferenceValue)
        if v.type is None:
            return "ref LIKE ?", [f"%/{v.id}"]
        return "ref = ?", [f"{v.type}/{v.id}"]
    raise InvalidQuery(f"unsupported parameter type {kind}")


_SORT_EXPR = {
    "_id": "r.id",
    "_lastUpdated": "r.last_updated",
    "title": "coalesce((SELECT min(text) FROM search s WHERE s.pk = r.pk AND s.param = 'title'), '')",
    "date": "coalesce((SELECT min(low) FROM search s WHERE s.pk = r.pk AND s.param = 'date'), '')",
}


def _order(req: SearchRequest) -> list[tuple[str, bool]]:
    order = [(_SORT_EXPR[name], desc) for name, desc in req.sort]
    return [*order, ("r.pk", req.sort[-1][1] if req.sort else False)]
