"""The typed search plan each index backend translates (parse once, then query).

``Expr`` is a study-level boolean expression; ``Exists`` holds a series-level one (some
series of the study satisfies it), combined the way the reference mediator combines
series conditions. Atoms are resolved already: stored values, not EUCAIM codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from server.core.federation.vocabulary import Field


@dataclass(frozen=True)
class Text:
    """A string attribute compared with stored values.

    Positive: (``null`` and the attribute is absent) or it matches one of ``values``.
    Negated (NOT_EQUALS): the attribute is present and matches none of ``values``
    (with no values: just present). ``contains`` matches a value anywhere in the stored one,
    case-insensitively; otherwise the comparison is exact (body parts: case-insensitive).
    """

    field: Field
    values: tuple[str, ...]
    null: bool = False
    negate: bool = False
    contains: bool = False


@dataclass(frozen=True)
class Number:
    """A numeric attribute within bounds (None: open), or different from ``not_equal``."""

    field: Field
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    not_equal: float | None = None


@dataclass(frozen=True)
class Diagnosis:
    """The dataset's cancer types (SNOMED CT ids): resolved per dataset before querying."""

    codes: tuple[str, ...]
    null: bool = False
    negate: bool = False


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class And:
    children: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Expr, ...]


@dataclass(frozen=True)
class Exists:
    """Some series of the study satisfies ``series`` (built of Text atoms and And/Or/Const)."""

    series: Expr


Expr = Union[Text, Number, Diagnosis, Const, And, Or, Exists]  # noqa: UP007
TRUE = Const(True)
FALSE = Const(False)


def resolve(expr: Expr, cancer_types: frozenset[str]) -> Expr:
    """The plan for one dataset: diagnosis atoms become constants, constants fold away."""
    if isinstance(expr, Diagnosis):
        if not cancer_types:
            hit = expr.null and not expr.negate
        elif expr.negate:
            hit = not set(expr.codes) & cancer_types
        else:
            hit = bool(set(expr.codes) & cancer_types)
        return Const(hit)
    if isinstance(expr, And | Or):
        return combine(type(expr), [resolve(c, cancer_types) for c in expr.children])
    if isinstance(expr, Exists):
        inner = resolve(expr.series, cancer_types)
        # every indexed study has at least one series: Exists(true) is true
        return inner if isinstance(inner, Const) else Exists(inner)
    return expr


def combine(kind: type[And] | type[Or], children: list[Expr]) -> Expr:
    """And/Or with constants folded (an empty And is true, an empty Or false)."""
    neutral, absorbing = (True, False) if kind is And else (False, True)
    kept: list[Expr] = []
    for child in children:
        if isinstance(child, Const):
            if child.value is absorbing:
                return Const(absorbing)
            continue
        kept.append(child)
    if not kept:
        return Const(neutral)
    return kept[0] if len(kept) == 1 else kind(tuple(kept))
