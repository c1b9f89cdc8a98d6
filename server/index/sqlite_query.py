"""QidoQuery → SQL for the SQLite index (PS3.4 C.2.2.2 matching rules)."""

from __future__ import annotations

from typing import Any

from server.core.attributes import Level
from server.core.qido import AnyOf, Condition, Exact, FuzzyName, QidoQuery, Range, Wildcard

ALIAS = {Level.STUDY: "st", Level.SERIES: "se", Level.INSTANCE: "i"}

FROM = {
    Level.STUDY: "study st",
    Level.SERIES: "series se JOIN study st ON se.study_pk = st.pk",
    Level.INSTANCE: (
        "instance i JOIN series se ON i.series_pk = se.pk JOIN study st ON i.study_pk = st.pk"
    ),
}


def glob_pattern(dicom_pattern: str) -> str:
    """DICOM ``*``/``?`` map to GLOB's; GLOB's own ``[`` is escaped as ``[[]``."""
    return dicom_pattern.replace("[", "[[]")


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def condition_sql(cond: Condition) -> tuple[str, list[Any]]:
    spec, matcher = cond.attribute, cond.matcher
    column = f"{ALIAS[spec.level]}.{spec.column}"
    lower = spec.vr == "PN"  # PN matching is case-insensitive (stored lower-cased)
    if isinstance(matcher, Exact):
        value = matcher.value.lower() if lower and isinstance(matcher.value, str) else matcher.value
        return f"{column} = ?", [value]
    if isinstance(matcher, AnyOf):
        marks = ", ".join("?" for _ in matcher.values)
        return f"{column} IN ({marks})", list(matcher.values)
    if isinstance(matcher, Wildcard):
        if matcher.pattern.strip("*") == "":
            return "1 = 1", []
        pattern = matcher.pattern.lower() if lower else matcher.pattern
        return f"{column} GLOB ?", [glob_pattern(pattern)]
    if isinstance(matcher, Range):
        parts, params = [], []
        if matcher.low is not None:
            parts.append(f"{column} >= ?")
            params.append(matcher.low)
        if matcher.high is not None:
            parts.append(f"{column} <= ?")
            params.append(matcher.high)
        return " AND ".join(parts), params
    if isinstance(matcher, FuzzyName):
        fuzzy = f"{column}_fuzzy"
        clauses = [f"{fuzzy} LIKE ? ESCAPE '\\'" for _ in matcher.tokens]
        return " AND ".join(clauses), [f"% {like_escape(t)}%" for t in matcher.tokens]
    raise TypeError(f"unhandled matcher {matcher!r}")


def uid_clauses(study: str | None, series: str | None = None, sop: str | None = None) -> tuple[list[str], list[Any]]:  # fmt: skip
    """Equality clauses on the UIDs that are not None (study ``st``, series ``se``, instance
    ``i``); an empty UID is a clause too, and matches nothing."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, uid in (("st.studyinstanceuid", study), ("se.seriesinstanceuid", series),
                        ("i.sopinstanceuid", sop)):  # fmt: skip
        if uid is not None:
            clauses.append(f"{column} = ?")
            params.append(uid)
    return clauses, params


def where_clause(query: QidoQuery) -> tuple[str, list[Any]]:
    clauses, params = uid_clauses(query.study_uid or None, query.series_uid or None)
    for cond in query.conditions:
        sql, values = condition_sql(cond)
        clauses.append(f"({sql})")
        params += values
    if query.datasets is not None:
        if query.datasets:
            marks = ", ".join("?" for _ in query.datasets)
            clauses.append(f"st.dataset IN ({marks})")
            params += sorted(query.datasets)
        else:
            clauses.append("1 = 0")
    if query.modalities_in_study:
        marks = ", ".join("?" for _ in query.modalities_in_study)
        clauses.append(f"st.pk IN (SELECT study_pk FROM series WHERE modality IN ({marks}))")
        params += list(query.modalities_in_study)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def select_columns(query: QidoQuery) -> str:
    cols = ["st.json", "st.modalities", "st.num_series", "st.num_instances"]
    if query.level is not Level.STUDY:
        cols += ["se.json", "se.num_instances"]
    if query.level is Level.INSTANCE:
        cols += ["i.json"]
        if query.include_all:
            cols += ["(SELECT metadata FROM instance_metadata WHERE instance_pk = i.pk)"]
    return ", ".join(cols)


def search_sql(query: QidoQuery) -> tuple[str, list[Any]]:
    where, params = where_clause(query)
    alias = ALIAS[query.level]
    sql = (
        f"SELECT {select_columns(query)} FROM {FROM[query.level]}{where} "
        f"ORDER BY {alias}.pk LIMIT ? OFFSET ?"
    )
    return sql, [*params, query.limit + 1, query.offset]
