"""SQL pieces shared by the FHIR search translators: date prefixes and keyset paging."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from server.core.fhir.search import DateValue, PagePosition, SearchRequest
from server.database import Connection
from server.errors import InvalidQuery


def date_sql(low_col: str, high_col: str, v: DateValue) -> tuple[str, list[Any]]:
    """FHIR R4 3.1.1.5.1 prefixes over ranges: a resource value [low, high] vs the search range."""
    contained = f"({low_col} >= ? AND {high_col} <= ?)"
    if v.prefix == "eq":
        return contained, [v.low, v.high]
    if v.prefix == "ne":
        return f"NOT {contained}", [v.low, v.high]
    if v.prefix == "gt":
        return f"{high_col} > ?", [v.high]
    if v.prefix == "lt":
        return f"{low_col} < ?", [v.low]
    # ge/le: the second conjunct is implied by the first; it gives the planner an index bound.
    if v.prefix == "ge":
        return f"({high_col} > ? OR {contained}) AND {high_col} >= ?", [
            v.high,
            v.low,
            v.high,
            v.low,
        ]
    if v.prefix == "le":
        return f"({low_col} < ? OR {contained}) AND {low_col} <= ?", [v.low, v.low, v.high, v.high]
    if v.prefix == "sa":
        return f"{low_col} > ?", [v.high]
    if v.prefix == "eb":
        return f"{high_col} < ?", [v.low]
    low, high = _approximately(v)
    return f"({low_col} <= ? AND {high_col} >= ?)", [high, low]


def _approximately(v: DateValue) -> tuple[str, str]:
    return approximate_range(v)


def approximate_range(v: DateValue) -> tuple[str, str]:
    """``ap``: the search range widened by 10% of its distance from now, at least a day
    (clamped to the years 0001..9999, so no date makes it overflow)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%f"
    low, high = datetime.strptime(v.low, fmt), datetime.strptime(v.high, fmt)
    margin = max(abs(datetime.now() - low) * 0.1, timedelta(days=1))
    wide_low = low - margin if low - datetime.min > margin else datetime.min
    wide_high = high + margin if datetime.max - high > margin else datetime.max
    return _text(wide_low), _text(wide_high)


def _text(d: datetime) -> str:
    """The comparable instant text (a four-digit year even before 1000)."""
    return f"{d.year:04d}-" + d.strftime("%m-%dT%H:%M:%S.%f")


def keyset(
    order: list[tuple[str, bool]], position: PagePosition | None
) -> tuple[str, list[Any], str, bool]:
    """Keyset paging: (WHERE clause, params, ORDER BY, reversed?) for a page after/before a row.

    ``order`` ends with a unique key, so pages neither skip nor repeat rows while
    other rows are added or removed.
    """
    backwards = False
    where, params = "", []
    if position is not None:
        values = list(position.values)
        if len(values) != len(order):
            raise InvalidQuery("_cursor does not belong to this search", "_cursor")
        backwards = position.backwards
        alternatives = []
        for n, (expr, desc) in enumerate(order):
            after = (not desc) != backwards
            parts = [f"{e} = ?" for e, _ in order[:n]] + [f"{expr} {'>' if after else '<'} ?"]
            alternatives.append("(" + " AND ".join(parts) + ")")
            params += [*values[:n], values[n]]
        where = "(" + " OR ".join(alternatives) + ")"
    order_sql = ", ".join(f"{e} {'DESC' if desc != backwards else 'ASC'}" for e, desc in order)
    return where, params, order_sql, backwards


@dataclass
class SqlPage:
    rows: list[Any]  # the selected columns only (sort keys stripped)
    total: int | None
    next_cursor: PagePosition | None
    previous_cursor: PagePosition | None


def fetch_page(
    conn: Connection, columns: str, source: str, where: str, params: list[Any],
    order: list[tuple[str, bool]], req: SearchRequest,
) -> SqlPage:  # fmt: skip
    """One keyset page of ``SELECT columns FROM source WHERE where`` with its paging links.

    Shared by the stored-resource and DICOM-index translators: the sort keys ride
    along after ``columns`` and become the ``next``/``previous`` cursors.
    """
    page_where, page_params, order_sql, backwards = keyset(order, req.position)
    width = len(columns.split(","))
    full = where + (f" AND {page_where}" if page_where else "")
    sort_columns = ", ".join(e for e, _ in order)
    rows = []
    if req.count > 0:  # a count-only search reads no row at all
        rows = conn.execute(
            f"SELECT {columns}, {sort_columns} FROM {source} WHERE {full} ORDER BY {order_sql}"
            " LIMIT ?",
            [*params, *page_params, req.count + 1],
        ).fetchall()
    more = len(rows) > req.count
    rows = rows[: req.count]
    if backwards:
        rows.reverse()
    total = None
    if req.total == "accurate" or req.summary == "count":
        total = int(
            conn.execute(f"SELECT count(*) FROM {source} WHERE {where}", params).fetchone()[0]
        )
    next_c = prev_c = None
    if rows:
        if more or backwards:
            next_c = PagePosition(False, tuple(rows[-1][width:]))
        if more if backwards else req.position is not None:
            prev_c = PagePosition(True, tuple(rows[0][width:]))
    return SqlPage([r[:width] for r in rows], total, next_c, prev_c)
