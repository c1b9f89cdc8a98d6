"""QIDO-RS query parameters → a typed query expression (PS3.18 8.3.4, 10.6; PS3.4 C.2.2.2).

The router hands the raw (decoded) query pairs to :func:`parse_query`; every
index backend translates the resulting :class:`QidoQuery`. A parameter that is
unknown, unsupported or malformed raises :class:`InvalidQuery` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from server.core.attributes import (
    COMPUTED_KEYWORDS,
    MATCHING,
    MATCHING_BY_TAG,
    MODALITIES_IN_STUDY,
    AttributeSpec,
    Level,
    keyword_of,
    parse_tag,
)
from server.core.uids import check_uid
from server.core.values import name_tokens, normalize_da, normalize_tm
from server.errors import InvalidQuery


@dataclass(frozen=True)
class Exact:
    """PS3.4 C.2.2.2.1 single value matching."""

    value: str | int


@dataclass(frozen=True)
class AnyOf:
    """PS3.4 C.2.2.2.2 list of UID matching (also used for other comma lists)."""

    values: tuple[str | int, ...]


@dataclass(frozen=True)
class Wildcard:
    """PS3.4 C.2.2.2.4 wild card matching; ``*`` any run, ``?`` one character."""

    pattern: str


@dataclass(frozen=True)
class Range:
    """PS3.4 C.2.2.2.5 range matching; either bound may be open (None)."""

    low: str | None
    high: str | None


@dataclass(frozen=True)
class FuzzyName:
    """PS3.18 8.3.4.4 fuzzy matching of person names: each token prefixes a name word."""

    tokens: tuple[str, ...]


Matcher = Exact | AnyOf | Wildcard | Range | FuzzyName


@dataclass(frozen=True)
class Condition:
    attribute: AttributeSpec
    matcher: Matcher


@dataclass(frozen=True)
class QidoQuery:
    level: Level
    conditions: tuple[Condition, ...] = ()
    modalities_in_study: tuple[str, ...] = ()
    study_uid: str | None = None
    series_uid: str | None = None
    include_all: bool = False
    include_tags: frozenset[int] = field(default_factory=frozenset)
    limit: int = 1000
    offset: int = 0
    limit_clamped: bool = False
    fuzzy: bool = False
    # Datasets the caller may search (set by the service from the caller's grants); None = all.
    datasets: frozenset[str] | None = None


_LEVEL_RANK = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
_LIST_VRS = {"UI", "CS", "IS", "US", "SH"}
_INT_VRS = {"IS", "US", "UL", "SS", "SL"}
_CONTROL = {"limit", "offset", "fuzzymatching", "includefield"}
# PS3.5 Table 6.2-1 value ranges of the integer VRs; a value outside cannot match anything
# stored and would overflow the index's 64-bit integers.
_INT_RANGES = {
    "IS": (-(2**31), 2**31 - 1), "US": (0, 2**16 - 1), "UL": (0, 2**32 - 1),
    "SS": (-(2**15), 2**15 - 1), "SL": (-(2**31), 2**31 - 1),
}  # fmt: skip
MAX_OFFSET = 1_000_000  # deepest page: bounded work per request, and within every backend
_INTEGER = re.compile(r"^\s*[+-]?[0-9]{1,20}\s*$")


def parse_integer(value: str, low: int, high: int) -> int | None:
    """An ASCII decimal integer within ``low..high``; None for anything else (NaN, 1e3, 10**30)."""
    if not _INTEGER.match(value):
        return None
    number = int(value)
    return number if low <= number <= high else None


def parse_query(
    level: Level,
    pairs: Iterable[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    default_limit: int = 1000,
    max_limit: int = 10000,
) -> QidoQuery:
    """PS3.18 8.3.4: parse query parameters for a search at ``level``."""
    pairs = list(pairs)
    controls = _parse_controls(pairs, default_limit, max_limit)
    fuzzy = controls.fuzzy
    conditions: list[Condition] = []
    modalities: tuple[str, ...] = ()
    includes: set[int] = set(controls.includes)
    for key, value in pairs:
        if key in _CONTROL:
            continue
        tag = parse_tag(key)
        if tag is None:
            raise InvalidQuery(f"unknown query parameter {key!r}", key)
        if tag == MODALITIES_IN_STUDY:
            if level is not Level.STUDY:
                raise InvalidQuery("ModalitiesInStudy applies to study-level searches only", key)
            includes.add(tag)
            if value:
                modalities = tuple(v.strip() for v in value.split(",") if v.strip())
            continue
        if tag in COMPUTED_KEYWORDS.values():
            raise InvalidQuery(f"{key} is computed and cannot be used for matching", key)
        spec = MATCHING_BY_TAG.get(tag)
        if spec is None:
            raise InvalidQuery(
                f"matching on {keyword_of(tag)} ({tag:08X}) is not supported; "
                f"supported: {', '.join(sorted(MATCHING))}",
                key,
            )
        _check_level(level, spec, key)
        includes.add(tag)
        if value == "":
            continue  # universal matching: a return key only
        conditions.append(Condition(spec, _matcher(spec, value, fuzzy, key)))
    return QidoQuery(
        level=level,
        conditions=tuple(conditions),
        modalities_in_study=modalities,
        study_uid=check_uid(study_uid, "StudyInstanceUID") if study_uid else None,
        series_uid=check_uid(series_uid, "SeriesInstanceUID") if series_uid else None,
        include_all=controls.include_all,
        include_tags=frozenset(includes),
        limit=controls.limit,
        offset=controls.offset,
        limit_clamped=controls.clamped,
        fuzzy=fuzzy,
    )


@dataclass
class _Controls:
    limit: int
    offset: int = 0
    fuzzy: bool = False
    include_all: bool = False
    includes: set[int] = field(default_factory=set)
    clamped: bool = False


def _parse_controls(pairs: list[tuple[str, str]], default_limit: int, max_limit: int) -> _Controls:
    out = _Controls(limit=default_limit)
    for key, value in pairs:
        if key in ("limit", "offset"):
            high = MAX_OFFSET if key == "offset" else 2**63 - 1
            number = parse_integer(value, 1 if key == "limit" else 0, high)
            if number is None:
                kind = "positive" if key == "limit" else "non-negative"
                raise InvalidQuery(
                    f"{key} must be a {kind} integer of at most {high}, got {value[:40]!r}", key
                )
            if key == "limit":
                out.clamped = number > max_limit
                out.limit = min(number, max_limit)
            else:
                out.offset = number
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidQuery(f"fuzzymatching must be true or false, got {value!r}", key)
            out.fuzzy = value.lower() == "true"
        elif key == "includefield":
            _parse_includes(value, out)
    return out


def _parse_includes(value: str, out: _Controls) -> None:
    for item in (v.strip() for v in value.split(",")):
        if item == "all":
            out.include_all = True
        elif item:
            tag = parse_tag(item)
            if tag is None:
                raise InvalidQuery(
                    f"includefield names an unknown attribute {item!r}", "includefield"
                )
            out.includes.add(tag)


def _check_level(level: Level, spec: AttributeSpec, key: str) -> None:
    if _LEVEL_RANK[spec.level] > _LEVEL_RANK[level]:
        hint = "; use ModalitiesInStudy" if spec.keyword == "Modality" else ""
        raise InvalidQuery(
            f"{spec.keyword} is a {spec.level.value}-level attribute and cannot be matched "
            f"in a {level.value}-level search{hint}",
            key,
        )


def _matcher(spec: AttributeSpec, value: str, fuzzy: bool, key: str) -> Matcher:
    vr = spec.vr
    if vr in ("DA", "TM", "DT"):
        return _date_matcher(spec, value, key)
    if vr == "PN":
        if fuzzy:
            tokens = tuple(t.rstrip("*?") for t in name_tokens(value) if t.rstrip("*?"))
            if not tokens:
                return Wildcard("*")
            return FuzzyName(tokens)
        return Wildcard(value) if ("*" in value or "?" in value) else Exact(value)
    if "," in value and vr in _LIST_VRS:
        items = tuple(_typed(spec, v.strip(), key) for v in value.split(",") if v.strip())
        return AnyOf(items)
    if "*" in value or "?" in value:
        if vr == "UI" or vr in _INT_VRS:
            raise InvalidQuery(f"wildcards are not allowed for {spec.keyword} ({vr})", key)
        return Wildcard(value)
    return Exact(_typed(spec, value, key))


def _typed(spec: AttributeSpec, value: str, key: str) -> str | int:
    if spec.vr == "UI":
        try:
            return check_uid(value, spec.keyword)
        except Exception as exc:
            raise InvalidQuery(str(exc), key) from exc
    if spec.vr in _INT_VRS:
        low, high = _INT_RANGES[spec.vr]
        number = parse_integer(value, low, high)
        if number is None:
            raise InvalidQuery(
                f"{spec.keyword} must be an integer from {low} to {high}, got {value[:40]!r}", key
            )
        return number
    return value


def _date_matcher(spec: AttributeSpec, value: str, key: str) -> Matcher:
    def norm(text: str, upper: bool) -> str:
        result = normalize_da(text) if spec.vr == "DA" else normalize_tm(text, upper=upper)
        if result is None:
            raise InvalidQuery(f"{spec.keyword} has an invalid {spec.vr} value {text!r}", key)
        return result

    if "-" in value:
        low_text, _, high_text = value.partition("-")
        if not low_text and not high_text:
            raise InvalidQuery(f"{spec.keyword} range {value!r} has no bounds", key)
        low = norm(low_text, False) if low_text else None
        high = norm(high_text, True) if high_text else None
        return Range(low, high)
    if spec.vr == "TM":
        return Range(norm(value, False), norm(value, True))
    return Exact(norm(value, False))
