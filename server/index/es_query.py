"""QidoQuery → Elasticsearch query DSL (PS3.4 C.2.2.2 matching rules), mirroring sqlite_query."""

from __future__ import annotations

from typing import Any

from server.core.qido import AnyOf, Condition, Exact, FuzzyName, QidoQuery, Range, Wildcard


def _wildcard(pattern: str) -> str:
    """DICOM ``*``/``?`` are Elasticsearch's; its escape character ``\\`` must be escaped."""
    return pattern.replace("\\", "\\\\")


def condition_query(cond: Condition) -> dict[str, Any]:
    spec, matcher = cond.attribute, cond.matcher
    field = spec.column
    lower = spec.vr == "PN"
    if isinstance(matcher, Exact):
        value = matcher.value.lower() if lower and isinstance(matcher.value, str) else matcher.value
        return {"term": {field: value}}
    if isinstance(matcher, AnyOf):
        return {"terms": {field: list(matcher.values)}}
    if isinstance(matcher, Wildcard):
        if matcher.pattern.strip("*") == "":
            return {"match_all": {}}
        pattern = matcher.pattern.lower() if lower else matcher.pattern
        return {"wildcard": {field: {"value": _wildcard(pattern)}}}
    if isinstance(matcher, Range):
        bounds: dict[str, Any] = {}
        if matcher.low is not None:
            bounds["gte"] = matcher.low
        if matcher.high is not None:
            bounds["lte"] = matcher.high
        return {"range": {field: bounds}}
    if isinstance(matcher, FuzzyName):
        return {"bool": {"filter": [{"prefix": {f"{field}_tokens": t}} for t in matcher.tokens]}}
    raise TypeError(f"unhandled matcher {matcher!r}")


def qido_query(query: QidoQuery) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    if query.study_uid:
        filters.append({"term": {"studyinstanceuid": query.study_uid}})
    if query.series_uid:
        filters.append({"term": {"seriesinstanceuid": query.series_uid}})
    filters += [condition_query(c) for c in query.conditions]
    if query.datasets is not None:
        filters.append(
            {"terms": {"dataset": sorted(query.datasets)}} if query.datasets else {"match_none": {}}
        )
    if query.modalities_in_study:
        filters.append({"terms": {"modalities": list(query.modalities_in_study)}})
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}
