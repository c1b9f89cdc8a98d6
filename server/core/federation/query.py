"""Parse the EUCAIM search tree into a plan (reference mediator semantics, with fixes).

Grammar (chaimeleon-eu/dataset-service ``eucaim_search.py``): an operation
``{"operand": "AND"|"OR", "children": [...]}`` or a condition ``{"key", "type", "value"}``;
other members (Focus's ``id``, Lens's ``system`` and group ``key``) are ignored.

Structural errors (not an object, unknown operand, ``children`` missing or not a list,
neither ``operand`` nor ``key``) reject the request (422). A condition the gateway cannot
evaluate (unknown key, type or value, wrong value type) is false, as in the reference,
and is reported in ``Query.issues`` for the log and the audit.

Series conditions: an operation whose children are all series conditions is itself one;
in an operation mixing both, its series children form one ``Exists`` combined with the
operation's operand (same series), exactly as the reference builds its SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.core.federation import vocabulary as v
from server.core.federation.plan import (
    FALSE,
    TRUE,
    And,
    Diagnosis,
    Exists,
    Expr,
    Number,
    Or,
    Text,
    combine,
)
from server.errors import Unprocessable

MAX_DEPTH = 64
MAX_NODES = 10_000


class InvalidSearch(Unprocessable):
    """The search tree is not an AST the reference would accept (422)."""


@dataclass
class Query:
    plan: Expr
    issues: list[str] = field(default_factory=list)  # conditions evaluated as false, and why


class _Skip(Exception):
    """A condition that evaluates to false (reported, never a client error)."""


def parse_request(body: Any) -> Query:
    """The request object ``{"ast": {...}, ...}`` -> a Query (InvalidSearch if malformed)."""
    if not isinstance(body, dict):
        raise InvalidSearch("The request body must be a JSON object.")
    if "ast" not in body:
        raise InvalidSearch("Missing property 'ast' in the request object.")
    if not isinstance(body["ast"], dict):
        raise InvalidSearch("Property 'ast' must be an object.")
    return parse(body["ast"])


def parse(ast: dict[str, Any]) -> Query:
    issues: list[str] = []
    counter = [0]
    expr, is_series = _node(ast, issues, 0, counter)
    return Query(Exists(expr) if is_series else expr, issues)


def _node(node: Any, issues: list[str], depth: int, counter: list[int]) -> tuple[Expr, bool]:
    counter[0] += 1
    if depth > MAX_DEPTH or counter[0] > MAX_NODES:
        raise InvalidSearch(
            f"the search tree is deeper than {MAX_DEPTH} or larger than {MAX_NODES} nodes"
        )
    if not isinstance(node, dict):
        raise InvalidSearch("every node of the search tree must be an object")
    if "operand" in node:
        return _operation(node, issues, depth, counter)
    if "key" in node:
        key = node["key"]
        is_series = isinstance(key, str) and v.KEYS.get(key) in v.SERIES_FIELDS
        try:
            return _condition(node), is_series
        except _Skip as exc:
            issues.append(str(exc))
            return FALSE, is_series
    raise InvalidSearch("missing 'operand' or 'key'")


def _operation(
    node: dict[str, Any], issues: list[str], depth: int, counter: list[int]
) -> tuple[Expr, bool]:
    operand = node["operand"]
    if operand not in ("AND", "OR"):
        raise InvalidSearch("unknown value for 'operand'")
    if "children" not in node:
        raise InvalidSearch("missing 'children' in operation")
    if not isinstance(node["children"], list):
        raise InvalidSearch("'children' in operation must be an array")
    if not node["children"]:
        return TRUE, False  # no condition (the reference: everything published matches)
    kind = And if operand == "AND" else Or
    study: list[Expr] = []
    series: list[Expr] = []
    for child in node["children"]:
        expr, is_series = _node(child, issues, depth + 1, counter)
        (series if is_series else study).append(expr)
    if not study:
        return combine(kind, series), True
    if series:
        study.append(Exists(combine(kind, series)))
    return combine(kind, study), False


def _condition(node: dict[str, Any]) -> Expr:
    key = node["key"]
    if not isinstance(key, str) or key not in v.KEYS:
        raise _Skip(f"unknown key {str(key)[:80]!r}")
    if "type" not in node:
        raise _Skip(f"missing 'type' in condition with key {key!r}")
    if "value" not in node:
        raise _Skip(f"missing 'value' in condition with key {key!r}")
    fld, kind, value = v.KEYS[key], node["type"], node["value"]
    if fld in v.NUMERIC_FIELDS:
        return _number(fld, key, kind, value)
    if fld is v.Field.DIAGNOSIS:
        codes, null, negate = _strings(key, kind, value, _diagnosis)
        return Diagnosis(tuple(c for c in codes if c), null, negate) if codes or null else FALSE
    return _text(fld, key, kind, value)


def _strings(key: str, kind: Any, value: Any, translate: Any) -> tuple[list[Any], bool, bool]:
    """(translated values, unknown concept included, negated) of a string condition."""
    if kind == "IN":
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise _Skip(f"value of IN with key {key!r} must be an array of strings")
        out, null = [], False
        for item in value:
            if item == v.UNKNOWN:
                null = True
                continue
            got = translate(item)
            if got is None:  # unknown items are dropped, the rest kept (as the reference)
                continue
            out.append(got)
        return out, null, False
    if kind in ("EQUALS", "NOT_EQUALS", "CONTAINS"):
        if not isinstance(value, str):
            raise _Skip(f"value of {kind} with key {key!r} must be a string")
        if value == v.UNKNOWN:
            return [], True, kind == "NOT_EQUALS"
        got = translate(value)
        if got is None:
            raise _Skip(f"unknown value {value[:80]!r} for key {key!r}")
        return [got], False, kind == "NOT_EQUALS"
    raise _Skip(f"unknown type {str(kind)[:40]!r} in condition with key {key!r}")


def _diagnosis(code: str) -> str | None:
    if not code.startswith(v.DIAGNOSIS_PREFIX):
        return None
    digits = code[len(v.DIAGNOSIS_PREFIX) :]
    return digits if digits.isdigit() else None


_TRANSLATE = {
    v.Field.SEX: lambda c: (v.SEX[c],) if c in v.SEX else None,
    v.Field.MODALITY: lambda c: (v.MODALITY[c],) if c in v.MODALITY else None,
    v.Field.BODY_PART: lambda c: (v.BODY_PART[c],) if c in v.BODY_PART else None,
    v.Field.MANUFACTURER: lambda c: v.MANUFACTURER.get(c),
}


def _text(fld: v.Field, key: str, kind: Any, value: Any) -> Expr:
    groups, null, negate = _strings(key, kind, value, _TRANSLATE[fld])
    values = tuple(dict.fromkeys(x for g in groups for x in g))
    if not values and not null:
        return FALSE  # IN with nothing known: nothing matches
    contains = fld is v.Field.MANUFACTURER or kind == "CONTAINS"
    return Text(fld, values, null=null, negate=negate, contains=contains)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _number(fld: v.Field, key: str, kind: Any, value: Any) -> Expr:
    if kind in ("EQUALS", "NOT_EQUALS", "LOWER_THAN", "GREATER_THAN") and not isinstance(
        value, dict
    ):
        x = _num(value)
        if x is None:
            raise _Skip(f"value of {kind} with key {key!r} must be a number")
        if kind == "EQUALS":
            return Number(fld, x, x)
        if kind == "NOT_EQUALS":
            return Number(fld, not_equal=x)
        if kind == "LOWER_THAN":
            return Number(fld, high=x, high_inclusive=False)
        return Number(fld, low=x, low_inclusive=False)
    if kind in ("BETWEEN", "LOWER_THAN", "GREATER_THAN"):
        low, high = _range(key, kind, value)
        if kind == "LOWER_THAN":  # a range given to LOWER_THAN: only max, inclusive
            low = None
        elif kind == "GREATER_THAN":
            high = None
        return Number(fld, low, high)
    raise _Skip(f"unknown type {str(kind)[:40]!r} in condition with key {key!r}")


def _range(key: str, kind: str, value: Any) -> tuple[float | None, float | None]:
    """``{"min", "max"}``; a missing or null bound is open (Lens sends one-sided ranges)."""
    if not isinstance(value, dict):
        raise _Skip(f"value of {kind} with key {key!r} must be an object with min and max")
    bounds = []
    for name in ("min", "max"):
        raw = value.get(name)
        x = None if raw is None else _num(raw)
        if raw is not None and x is None:
            raise _Skip(f"bound {name!r} of {kind} with key {key!r} must be a number")
        bounds.append(x)
    if bounds[0] is None and bounds[1] is None:
        raise _Skip(f"{kind} with key {key!r} has neither min nor max")
    return bounds[0], bounds[1]
