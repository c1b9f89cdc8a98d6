"""FHIR search parameters → a typed search request (FHIR R4 3.1.1 Search).

The router hands the decoded query pairs to :func:`parse_search`; the stored-
resource translator and the DICOM-index translator both take the resulting
:class:`SearchRequest`. Unknown parameters raise in strict handling and are
collected in ``ignored`` in lenient handling (the default, FHIR R4 3.1.1.4.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from server.core.fhir.params import (
    ALIASES,
    INCLUDES,
    SORTS,
    ParamType,
    SearchParam,
    modifiers_of,
    params_of,
)
from server.errors import InvalidQuery

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
CONTROL = {"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
           "_format", "_pretty", "_cursor"}  # fmt: skip
DEFAULT_COUNT, MAX_COUNT = 20, 1000
# Bounds on one search (a clear 400 beyond): parameters, values over all parameters, and
# the length of one value. Thousands of AND-ed parameters would otherwise become an SQL
# statement or a query DSL tree too deep for the backend.
MAX_PARAMETERS, MAX_VALUES, MAX_VALUE_CHARS = 64, 512, 1024


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; "": explicitly no system ("|code")
    code: str | None


@dataclass(frozen=True)
class DateValue:
    prefix: str
    low: str  # inclusive bounds at microsecond precision, "YYYY-MM-DDTHH:MM:SS.ffffff"
    high: str


@dataclass(frozen=True)
class ReferenceValue:
    type: str | None
    id: str


Value = TokenValue | DateValue | ReferenceValue | str | bool


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: its values are ORed; criteria of a request are ANDed."""

    param: SearchParam
    modifier: str | None
    values: tuple[Value, ...]
    chain: SearchRequest | None = None  # for ``ref.param=value`` / ``ref:Type.param=value``


@dataclass(frozen=True)
class Include:
    source: str
    param: str
    target: str


@dataclass(frozen=True)
class PagePosition:
    """Where a page starts: after (or, backwards, before) the row with these sort keys.

    Translators read and make positions; the service seals them into the opaque
    ``_cursor`` of paging links (server.services.fhir_paging) and back.
    """

    backwards: bool
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SearchRequest:
    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    sort: tuple[tuple[str, bool], ...] = ()  # (param, descending)
    count: int = DEFAULT_COUNT
    total: str = "accurate"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    include: tuple[Include, ...] = ()
    revinclude: tuple[Include, ...] = ()
    cursor: str | None = None  # the client's sealed _cursor, as sent
    position: PagePosition | None = None  # the unsealed cursor (set by the service)
    ignored: tuple[str, ...] = field(default_factory=tuple)
    # Datasets the caller may see (set by the service from the caller's grants); None = all.
    restrict: frozenset[str] | None = None


def parse_search(
    resource_type: str, pairs: Iterable[tuple[str, str]], *, strict: bool = False
) -> SearchRequest:
    """FHIR R4 3.1.1: parse a search on ``resource_type``."""
    pairs = list(pairs)
    _check_size(pairs)
    criteria: list[Criterion] = []
    ignored: list[str] = []
    for key, raw in pairs:
        if key in CONTROL:
            continue
        if key.startswith("_has") or key in ("_filter", "_query", "_list", "_text", "_content"):
            raise InvalidQuery(f"{key.split(':')[0]} is not supported by this server", key)
        try:
            criteria.append(_criterion(resource_type, key, raw))
        except UnknownParameter as exc:
            if strict:
                raise InvalidQuery(str(exc), key) from exc
            ignored.append(key)
    controls = _controls(resource_type, pairs)
    return SearchRequest(resource_type, tuple(criteria), ignored=tuple(ignored), **controls)


class UnknownParameter(Exception):
    pass


def _check_size(pairs: list[tuple[str, str]]) -> None:
    if len(pairs) > MAX_PARAMETERS:
        raise InvalidQuery(
            f"a search takes at most {MAX_PARAMETERS} parameters, this one has {len(pairs)}"
        )
    values = sum(raw.count(",") + 1 for _, raw in pairs)
    if values > MAX_VALUES:
        raise InvalidQuery(f"a search takes at most {MAX_VALUES} values, this one has {values}")
    for key, raw in pairs:
        if len(raw) > MAX_VALUE_CHARS or len(key) > MAX_VALUE_CHARS:
            raise InvalidQuery(f"{key[:64]} is longer than {MAX_VALUE_CHARS} characters", key[:64])


def _criterion(resource_type: str, key: str, raw: str) -> Criterion:
    name, _, modifier_text = key.partition(":")
    chain_rest = None
    if "." in name:
        name, _, chain_rest = name.partition(".")
    elif "." in modifier_text:
        modifier_text, _, chain_rest = modifier_text.partition(".")
    name = ALIASES.get(name, name)
    param = params_of(resource_type).get(name)
    if param is None:
        raise UnknownParameter(f"unknown search parameter {key!r} for {resource_type}")
    if chain_rest is not None:
        return _chained(resource_type, param, modifier_text, chain_rest, raw, key)
    modifier = modifier_text or None
    if modifier is not None and param.type is ParamType.REFERENCE and modifier in param.targets:
        modifier = None  # subject:Patient=123 names the target type
    elif modifier is not None and modifier not in modifiers_of(resource_type, param):
        raise InvalidQuery(
            f"modifier :{modifier} is not supported on {resource_type} parameter {name}", key
        )
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise InvalidQuery(f"{key} must be true or false", key)
        return Criterion(param, modifier, (raw == "true",))
    values = tuple(_value(param, v, key, modifier_text) for v in _split(raw))
    if not values:
        raise InvalidQuery(f"{key} has no value", key)
    return Criterion(param, modifier, values)


def _chained(
    resource_type: str, param: SearchParam, type_hint: str, rest: str, raw: str, key: str
) -> Criterion:
    if param.type is not ParamType.REFERENCE:
        raise InvalidQuery(f"{param.name} is not a reference and cannot be chained", key)
    target = type_hint or (param.targets[0] if len(param.targets) == 1 else "")
    if target not in param.targets:
        raise InvalidQuery(
            f"chained {param.name} needs a target type ({', '.join(param.targets)})", key
        )
    if "." in rest:
        raise InvalidQuery("chains deeper than one level are not supported", key)
    inner = _criterion(target, rest, raw)
    return Criterion(param, None, (), SearchRequest(target, (inner,)))


def _split(raw: str) -> list[str]:
    """Comma-separated alternatives; ``\\,`` is a literal comma (FHIR R4 3.1.1.5)."""
    parts, current, escaped = [], [], False
    for ch in raw:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p != ""]


def _value(param: SearchParam, raw: str, key: str, modifier: str) -> Value:
    if param.type is ParamType.TOKEN:
        if modifier == "text":
            return raw
        if "|" in raw:
            system, _, code = raw.partition("|")
            return TokenValue(system, code or None)
        return TokenValue(None, raw)
    if param.type is ParamType.DATE:
        return parse_date_value(raw, key)
    if param.type is ParamType.REFERENCE:
        return _reference(param, raw, key)
    return raw


def _reference(param: SearchParam, raw: str, key: str) -> ReferenceValue:
    text = raw.rstrip("/")
    parts = text.split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        ref_type, ref_id = parts[-2], parts[-1]
        if ref_type not in param.targets:
            raise InvalidQuery(
                f"{param.name} refers to {', '.join(param.targets)}, not {ref_type}", key
            )
        return ReferenceValue(ref_type, ref_id)
    if "/" in text or not text:
        raise InvalidQuery(f"{key} has an invalid reference {raw!r}", key)
    return ReferenceValue(param.targets[0] if len(param.targets) == 1 else None, text)


_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_MONTH_END = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def parse_date_value(raw: str, key: str = "date") -> DateValue:
    """FHIR R4 3.1.1.5.1 / 2.24.0.6: a prefixed date with its implicit range by precision.

    Time zones are accepted and ignored: DICOM times are local and stored as such.
    """
    prefix, text = "eq", raw
    if raw[:2] in PREFIXES and not raw[:2].isdigit():
        prefix, text = raw[:2], raw[2:]
    low, high = date_range(text)
    if low is None or high is None:
        raise InvalidQuery(f"{key} has an invalid date {raw!r}", key)
    return DateValue(prefix, low, high)


def date_range(text: str) -> tuple[str | None, str | None]:
    """The inclusive instant range a FHIR date/dateTime of any precision covers."""
    m = _DATE.match(text)
    if not m:
        return None, None
    year, month, day, hour, minute, second, frac, _tz = m.groups()
    try:
        mo_lo, mo_hi = (int(month), int(month)) if month else (1, 12)
        last = _MONTH_END[mo_hi] if not (mo_hi == 2 and not _leap(int(year))) else 28
        d_lo, d_hi = (int(day), int(day)) if day else (1, last)
        if not (1 <= mo_lo <= 12 and 1 <= d_lo <= _MONTH_END[mo_lo]):
            return None, None
    except (KeyError, ValueError):
        return None, None
    h_lo, h_hi = (int(hour), int(hour)) if hour else (0, 23)
    mi_lo, mi_hi = (int(minute), int(minute)) if minute else (0, 59)
    s_lo, s_hi = (int(second), int(second)) if second else (0, 59)
    f_lo = f_hi = (frac or "").ljust(6, "0") if frac else None
    if h_hi > 23 or mi_hi > 59 or s_hi > 60:
        return None, None
    low = f"{year}-{mo_lo:02d}-{d_lo:02d}T{h_lo:02d}:{mi_lo:02d}:{s_lo:02d}.{f_lo or '000000'}"
    high = f"{year}-{mo_hi:02d}-{d_hi:02d}T{h_hi:02d}:{mi_hi:02d}:{s_hi:02d}.{f_hi or '999999'}"
    return low, high


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _controls(resource_type: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    includes: list[Include] = []
    revincludes: list[Include] = []
    for key, value in pairs:
        if key == "_count":
            if not value.isdigit():
                raise InvalidQuery(
                    f"_count must be a non-negative integer, got {value[:40]!r}", key
                )
            out["count"] = MAX_COUNT if len(value) > 6 else min(int(value), MAX_COUNT)
        elif key == "_sort":
            out["sort"] = _sort(resource_type, value)
        elif key == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise InvalidQuery("_total must be none, estimate or accurate", key)
            out["total"] = "accurate" if value == "estimate" else value
        elif key == "_summary":
            if value not in ("true", "false", "count", "text", "data"):
                raise InvalidQuery("_summary must be true, false, count, text or data", key)
            out["summary"] = None if value == "false" else value
        elif key == "_elements":
            out["elements"] = tuple(e.strip() for e in value.split(",") if e.strip())
        elif key == "_include":
            includes.append(_include(value, key, reverse=False, base=resource_type))
        elif key == "_revinclude":
            revincludes.append(_include(value, key, reverse=True, base=resource_type))
        elif key == "_cursor":
            out["cursor"] = value
    out["include"], out["revinclude"] = tuple(includes), tuple(revincludes)
    return out


def _sort(resource_type: str, value: str) -> tuple[tuple[str, bool], ...]:
    allowed = SORTS.get(resource_type, ("_id",))
    keys = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        name = item.lstrip("-")
        if name not in allowed:
            raise InvalidQuery(
                f"cannot sort {resource_type} by {name!r} (supported: {', '.join(allowed)})",
                "_sort",
            )
        keys.append((name, item.startswith("-")))
    return tuple(keys)


def _include(value: str, key: str, *, reverse: bool, base: str) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InvalidQuery(f"{key} must be Type:param[:target], got {value!r}", key)
    source, param = parts[0], ALIASES.get(parts[1], parts[1])
    target = INCLUDES.get((source, param))
    if target is None or (len(parts) == 3 and parts[2] != target):
        raise InvalidQuery(f"{key}={value} is not supported", key)
    if (reverse and target != base) or (not reverse and source != base):
        raise InvalidQuery(f"{key}={value} does not apply to a {base} search", key)
    return Include(source, param, target)
