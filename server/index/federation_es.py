"""EUCAIM federated search on the Elasticsearch index: counts per dataset by aggregation.

Study documents carry ``fed_age`` / ``fed_year`` (computed at ingest by
``server.core.federation.facts``) and ``fed_series``, one nested object per distinct
(modality, body part, manufacturer) of the study's series, so a series condition is one
``nested`` query ("some series of the study ..."), never a list of studies in Python.
Subjects are a ``cardinality`` aggregation (exact up to 40,000 distinct patients per
dataset, approximate beyond, as the catalogue figures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from server.core.attributes import Level
from server.core.federation import facts
from server.core.federation.plan import And, Const, Diagnosis, Exists, Expr, Number, Or, Text
from server.core.federation.vocabulary import Field
from server.index.base import DatasetProfile
from server.index.es_outage import outage_is_unavailable
from server.metrics import metered

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from server.core.records import InstanceRecord

SEP = "\x1f"
_SERIES_KEYS = ("modality", "bodypartexamined", "manufacturer")
_NESTED_NAMES = ("modality", "bodypart", "manufacturer")
_FIELD = {
    Field.SEX: "patientsex",
    Field.AGE: "fed_age",
    Field.YEAR: "fed_year",
    Field.MODALITY: "fed_series.modality",
    Field.BODY_PART: "fed_series.bodypart",
    Field.MANUFACTURER: "fed_series.manufacturer",
}
PRECISION = 40000


def study_facts(rec: InstanceRecord) -> dict[str, int | None]:
    study = rec.columns[Level.STUDY]
    age = facts.age_years(
        facts.patient_age_of(orjson.loads(rec.level_json[Level.STUDY])),
        study.get("studydate"),
        study.get("patientbirthdate"),
    )
    return {"fed_age": age, "fed_year": facts.study_year(study.get("studydate"))}


def series_facts(series: Mapping[str, Any]) -> str:
    """One series' (modality, body part, manufacturer) as a set member ('' = absent)."""
    return SEP.join(str(series.get(k) or "") for k in _SERIES_KEYS)


def series_objects(tuples: Sequence[str]) -> list[dict[str, str]]:
    out = []
    for t in tuples:
        values = t.split(SEP)
        out.append({n: v for n, v in zip(_NESTED_NAMES, values, strict=False) if v})
    return out


@metered("elasticsearch")
@outage_is_unavailable
class EsFederation:
    def __init__(self, es: Elasticsearch, names: dict[Level, str]) -> None:
        self.es = es
        self.names = names

    def federation_counts(
        self, groups: Sequence[tuple[Expr, Sequence[str]]]
    ) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for plan, datasets in groups:
            if not datasets or plan == Const(False):
                continue
            found = self.es.search(
                index=self.names[Level.STUDY], size=0,
                query={"bool": {"filter": [{"terms": {"dataset": list(datasets)}}, query(plan)]}},
                aggs={"d": {"terms": {"field": "dataset", "size": len(datasets)}, "aggs": {
                    "s": {"cardinality": {"field": "patient_key", "precision_threshold": PRECISION}}}}},
            )  # fmt: skip
            for b in found["aggregations"]["d"]["buckets"]:
                out[b["key"]] = (int(b["doc_count"]), int(b["s"]["value"]))
        return out

    def federation_profiles(self, datasets: Sequence[str]) -> dict[str, DatasetProfile]:
        out = {d: DatasetProfile() for d in datasets}
        if not datasets:
            return out
        found = self.es.search(
            index=self.names[Level.STUDY], size=0, query={"terms": {"dataset": list(datasets)}},
            aggs={"d": {"terms": {"field": "dataset", "size": len(datasets)}, "aggs": {
                "lo": {"min": {"field": "fed_age"}}, "hi": {"max": {"field": "fed_age"}},
                "sex": {"terms": {"field": "patientsex", "size": 10}},
                "nosex": {"missing": {"field": "patientsex"}}}}},
        )  # fmt: skip
        for b in found["aggregations"]["d"]["buckets"]:
            p = out[b["key"]]
            lo, hi = b["lo"]["value"], b["hi"]["value"]
            p.age_min = None if lo is None else int(lo)
            p.age_max = None if hi is None else int(hi)
            p.sexes = {x["key"] or None for x in b["sex"]["buckets"]}
            if b["nosex"]["doc_count"]:
                p.sexes.add(None)
        return out


def query(expr: Expr) -> dict[str, Any]:
    if isinstance(expr, Const):
        return {"match_all": {}} if expr.value else {"match_none": {}}
    if isinstance(expr, And):
        return {"bool": {"filter": [query(c) for c in expr.children]}}
    if isinstance(expr, Or):
        return {"bool": {"should": [query(c) for c in expr.children], "minimum_should_match": 1}}
    if isinstance(expr, Exists):
        return {"nested": {"path": "fed_series", "query": query(expr.series)}}
    if isinstance(expr, Text):
        return _text(expr)
    if isinstance(expr, Number):
        return _number(expr)
    if isinstance(expr, Diagnosis):
        raise ValueError("diagnosis conditions must be resolved before querying")
    raise TypeError(expr)


def _text(t: Text) -> dict[str, Any]:
    name = _FIELD[t.field]
    matches: list[dict[str, Any]] = []
    for value in t.values:
        if t.contains:
            pattern = "*" + _escape_wildcard(value) + "*"
            matches.append({"wildcard": {name: {"value": pattern, "case_insensitive": True}}})
        elif t.field is Field.BODY_PART:
            matches.append({"term": {name: {"value": value, "case_insensitive": True}}})
        else:
            matches.append({"term": {name: value}})
    present = {"exists": {"field": name}}
    if t.negate:
        return {"bool": {"filter": [present], "must_not": matches}}
    if t.null:
        matches.insert(0, {"bool": {"must_not": [present]}})
    return {"bool": {"should": matches, "minimum_should_match": 1}}


def _number(n: Number) -> dict[str, Any]:
    name = _FIELD[n.field]
    bounds: dict[str, float] = {}
    if n.low is not None:
        bounds["gte" if n.low_inclusive else "gt"] = n.low
    if n.high is not None:
        bounds["lte" if n.high_inclusive else "lt"] = n.high
    filters: list[dict[str, Any]] = [{"exists": {"field": name}}]
    if bounds:
        filters.append({"range": {name: bounds}})
    must_not = [{"term": {name: n.not_equal}}] if n.not_equal is not None else []
    return {"bool": {"filter": filters, "must_not": must_not}}


def _escape_wildcard(value: str) -> str:
    return value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
