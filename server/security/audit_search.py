"""Searching the audit log: the CLI/administrative filters and FHIR R4 AuditEvent search.

Both read the search columns written next to each event (see ``audit_event.index_values``)
plus the event id, which is indexed by expression, so nothing is parsed per row.
FHIR search (FHIR R4 3.1.1, AuditEvent search parameters) supports ``_id``,
``_lastUpdated`` and ``date`` (both the time the event was recorded; every prefix),
``agent`` (client id), ``entity``, ``outcome`` and ``subtype`` (the gateway's action),
each with ``:not``; values of one parameter are ORed, parameters ANDed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from server.core.fhir.search import Criterion, DateValue, SearchRequest, TokenValue
from server.database import Connection
from server.errors import InvalidQuery
from server.index.fhir_sql import date_sql
from server.security.audit_event import OUTCOMES, instant, needle

EVENT_ID = "json_extract(CAST(event AS TEXT), '$.id')"
ID_INDEX = f"CREATE INDEX IF NOT EXISTS audit_event_id ON audit_event({EVENT_ID})"
_TOKEN_COLUMNS = {"agent": "client_id", "subtype": "action", "outcome": "outcome"}
_LISTS = {"entity": "entities"}


def _instant_bound(value: str, *, upper: bool) -> tuple[str, str]:
    """A ``since``/``until`` bound as (operator, instant text); a date alone covers the day."""
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            if upper:
                return "<", instant((day + timedelta(days=1)).timestamp())
            return ">=", instant(day.timestamp())
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a date or instant: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ("<=" if upper else ">="), instant(moment.timestamp())


def search_rows(
    conn: Connection,
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
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("client_id", client_id),
        ("subject", subject),
        ("action", action),
        ("outcome", outcome),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since is not None:
        operator, bound = _instant_bound(since, upper=False)
        where.append(f"recorded {operator} ?")
        args.append(bound)
    if until is not None:
        operator, bound = _instant_bound(until, upper=True)
        where.append(f"recorded {operator} ?")
        args.append(bound)
    if entity is not None:
        where.append("instr(entities, ?) > 0")
        args.append(needle(entity))
    if dataset is not None:
        where.append("instr(datasets, ?) > 0")
        args.append(needle(dataset))
    return _page(conn, where, args, after_seq, max(0, limit))


def _page(conn: Connection, where: list[str], args: list[Any], after_seq: int | None,
          limit: int) -> list[tuple[int, dict[str, Any]]]:  # fmt: skip
    """Up to ``limit`` stored events matching every clause of ``where``, after ``after_seq``,
    oldest first."""
    if after_seq is not None:
        where, args = [*where, "seq > ?"], [*args, after_seq]
    sql = "SELECT seq, event FROM audit_event"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(f"{sql} ORDER BY seq LIMIT ?", [*args, limit])
    return [(seq, orjson.loads(event)) for seq, event in rows]


def read_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    """The stored AuditEvent with this id (FHIR R4 3.1.0.1 read), or None."""
    row = conn.execute(
        f"SELECT event FROM audit_event WHERE {EVENT_ID} = ?", (event_id,)
    ).fetchone()
    return dict(orjson.loads(row[0])) if row else None


def fhir_rows(
    conn: Connection, req: SearchRequest, *, after_seq: int | None
) -> list[tuple[int, dict[str, Any]]]:
    """FHIR R4 AuditEvent search: up to ``req.count + 1`` events after ``after_seq``, oldest first."""
    where, args = [], []
    for c in req.criteria:
        sql, values = _criterion(c)
        where.append(sql)
        args += values
    return _page(conn, where, args, after_seq, req.count + 1)


def _criterion(c: Criterion) -> tuple[str, list[Any]]:
    name = c.param.name
    if c.chain is not None or c.modifier not in (None, "not"):
        modifier = f":{c.modifier}" if c.modifier else "."
        raise InvalidQuery(f"AuditEvent search by {name}{modifier} is not supported", name)
    parts = [_value(name, v) for v in c.values]
    sql = "(" + " OR ".join(p for p, _ in parts) + ")" if parts else "1 = 0"
    if c.modifier == "not":
        sql = f"NOT {sql}"
    return sql, [x for _, ps in parts for x in ps]


def _value(name: str, value: Any) -> tuple[str, list[Any]]:
    if isinstance(value, DateValue) and name in ("date", "_lastUpdated"):
        if value.prefix == "ap":
            return date_sql("substr(recorded, 1, 26)", "substr(recorded, 1, 26)", value)
        # recorded is an instant in UTC with microseconds and a Z: bounds in that form
        # compare as text, and keep the index on recorded usable
        bounds = DateValue(value.prefix, value.low + "Z", value.high + "Z")
        return date_sql("recorded", "recorded", bounds)
    if not isinstance(value, TokenValue) or value.code is None:
        raise InvalidQuery(f"AuditEvent search by {name} needs a code", name)
    if name == "_id":
        return f"{EVENT_ID} = ?", [value.code]
    if name == "outcome":
        if not value.code.isdigit() or int(value.code) not in OUTCOMES:
            raise InvalidQuery(f"outcome is one of {sorted(OUTCOMES)}, not {value.code!r}", name)
        return "outcome = ?", [int(value.code)]
    if name in _TOKEN_COLUMNS:
        return f"{_TOKEN_COLUMNS[name]} = ?", [value.code]
    if name in _LISTS:
        return f"instr({_LISTS[name]}, ?) > 0", [needle(value.code)]
    raise InvalidQuery(f"AuditEvent search by {name} is not supported", name)
