"""EUCAIM federated search on the Elasticsearch index: counts per dataset by aggregation.

Study documents carry ``fed_age`` / ``fed_year`` (computed at ingest by
``server.core.federation.facts``), the patient's first-study values ``fed_first_age`` /
``fed_first_year`` / ``fed_first_study`` (what age and year conditions match, kept on every
study of the patient in the dataset: see ``FirstStudies``) and ``fed_series``, one nested
object per distinct
(modality, body part, manufacturer) of the study's series, so a series condition is one
``nested`` query ("some series of the study ..."), never a list of studies in Python.
Subjects are a ``cardinality`` aggregation (exact up to 40,000 distinct patients per
dataset, approximate beyond, as the catalogue figures).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from elasticsearch import helpers

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
    Field.AGE: "fed_first_age",
    Field.YEAR: "fed_first_year",
    Field.MODALITY: "fed_series.modality",
    Field.BODY_PART: "fed_series.bodypart",
    Field.MANUFACTURER: "fed_series.manufacturer",
}
PRECISION = 40000
PAGE = 1000
ATTEMPTS = 5
log = logging.getLogger("gateway.federation")
Patient = tuple[str | None, str]  # (dataset, patient_key)
StudyFacts = facts.StudyFacts
First = dict[str, Any]  # fed_first_age, fed_first_year, fed_first_study


def study_facts(rec: InstanceRecord) -> dict[str, int | None]:
    study = rec.columns[Level.STUDY]
    age = facts.age_years(
        facts.patient_age_of(orjson.loads(rec.level_json[Level.STUDY])),
        study.get("studydate"),
        study.get("patientbirthdate"),
    )
    return {"fed_age": age, "fed_year": facts.study_year(study.get("studydate"))}


def first_facts(rec: InstanceRecord) -> facts.StudyFacts:
    """The study of ``rec`` as the first-study choice sees it."""
    values = study_facts(rec)
    date = rec.columns[Level.STUDY].get("studydate")
    return facts.StudyFacts(rec.study_uid, date, values["fed_age"], values["fed_year"])


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
                "lo": {"min": {"field": "fed_first_age"}}, "hi": {"max": {"field": "fed_first_age"}},
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


class FirstStudies:
    """The patient's first-study values on every study document of the patient in the dataset.

    Written in the same bulk as the studies (``for_records``: computed from the patient's
    stored studies and the incoming ones), then checked after the bulk and after deletions
    (``recompute``: a search of the patients' studies, and an update of those that differ,
    guarded by ``if_seq_no`` so a concurrent writer's newer view is never overwritten: a
    conflict re-reads). ``backfill`` fills documents written before this field existed.
    """

    def __init__(self, es: Elasticsearch, index: str) -> None:
        self.es = es
        self.index = index

    def studies(self, keys: Iterable[str]) -> dict[Patient, list[dict[str, Any]]]:
        """Every study document of these patient keys, grouped by (dataset, patient key)."""
        out: dict[Patient, list[dict[str, Any]]] = {}
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), PAGE):
            after: list[Any] | None = None
            while True:
                found = self.es.search(
                    index=self.index, query={"terms": {"patient_key": wanted[start : start + PAGE]}},
                    sort=[{"study_uid": "asc"}], size=PAGE, search_after=after,
                    source_includes=_FIRST_SOURCE, seq_no_primary_term=True,
                )  # fmt: skip
                hits = found["hits"]["hits"]
                for h in hits:
                    out.setdefault(
                        (h["_source"].get("dataset"), h["_source"]["patient_key"]), []
                    ).append(h)
                if len(hits) < PAGE:
                    break
                after = hits[-1]["sort"]
        return out

    def for_records(
        self, incoming: Mapping[str, tuple[Patient, facts.StudyFacts]]
    ) -> tuple[dict[str, First], list[dict[str, Any]]]:
        """For the studies being written (study uid -> patient, its facts): their first-study
        values, and the update actions for the patients' other studies whose values change."""
        stored = self.studies({patient[1] for patient, _ in incoming.values()})
        per_patient: dict[Patient, dict[str, facts.StudyFacts]] = {}
        for patient, hits in stored.items():
            per_patient[patient] = {h["_id"]: _facts(h) for h in hits}
        for uid, (patient, study) in incoming.items():
            per_patient.setdefault(patient, {})[uid] = study
        values: dict[str, First] = {}
        actions: list[dict[str, Any]] = []
        for patient, studies in per_patient.items():
            want = _first_values(list(studies.values()))
            for uid in studies:
                if uid in incoming:
                    values[uid] = want
            for h in stored.get(patient, []):
                if h["_id"] not in incoming and _differs(h, want):
                    actions.append(self._update(h, want))
        return values, actions

    def recompute(self, keys: Iterable[str], refresh: Any) -> int:
        """Bring the first-study values of these patients' studies up to date; returns the
        number of documents updated."""
        todo, updated = set(keys), 0
        for _ in range(ATTEMPTS):
            if not todo:
                return updated
            actions: list[dict[str, Any]] = []
            owner: dict[str, str] = {}
            for (_, key), hits in self.studies(todo).items():
                want = _first_values([_facts(h) for h in hits])
                for h in hits:
                    if _differs(h, want):
                        actions.append(self._update(h, want))
                        owner[h["_id"]] = key
            if not actions:
                return updated
            _, errors = helpers.bulk(self.es, actions, refresh=refresh, raise_on_error=False)
            todo = set()
            for error in errors if isinstance(errors, list) else []:
                item = next(iter(error.values()))
                if item.get("status") not in (404, 409):  # deleted or changed meanwhile: re-read
                    raise RuntimeError(f"first-study update failed: {item.get('error')}")
                todo.add(owner[item["_id"]])
            updated += len(actions) - len(todo)
            if todo:  # the next read must see the writes that beat ours
                self.es.indices.refresh(index=self.index)
        log.warning("first-study values of %d patients still contended after retries", len(todo))
        return updated

    def backfill(self) -> int:
        """Documents without first-study values (written by earlier releases): computed for
        their patients, in patient order. Returns the number of documents updated."""
        missing = {"bool": {"must_not": [{"exists": {"field": "fed_first_study"}}]}}
        if not self.es.count(index=self.index, query=missing)["count"]:
            return 0
        updated, done, after = 0, "", None
        while True:
            found = self.es.search(
                index=self.index, query=missing, size=PAGE, search_after=after,
                sort=[{"patient_key": "asc"}, {"study_uid": "asc"}], source_includes=["patient_key"],
            )  # fmt: skip
            hits = found["hits"]["hits"]
            keys = {h["_source"]["patient_key"] for h in hits} - {done}
            if keys:  # unrefreshed writes leave a done patient's documents in the next page
                updated += self.recompute(keys, refresh=False)
                done = max(keys)
            if len(hits) < PAGE:
                break
            after = hits[-1]["sort"]
        self.es.indices.refresh(index=self.index)
        return updated

    def _update(self, hit: dict[str, Any], want: First) -> dict[str, Any]:
        return {"_op_type": "update", "_index": self.index, "_id": hit["_id"], "doc": want,
                "if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"]}  # fmt: skip


_FIRST_FIELDS = ("fed_first_age", "fed_first_year", "fed_first_study")
_FIRST_SOURCE = ["dataset", "patient_key", "studydate", "fed_age", "fed_year", *_FIRST_FIELDS]


def _facts(hit: dict[str, Any]) -> facts.StudyFacts:
    src = hit["_source"]
    return facts.StudyFacts(
        hit["_id"], src.get("studydate"), src.get("fed_age"), src.get("fed_year")
    )


def _first_values(studies: list[facts.StudyFacts]) -> First:
    first = facts.first_study(studies)
    assert first is not None  # a patient with no study is never grouped
    return {
        "fed_first_age": first.age,
        "fed_first_year": first.year,
        "fed_first_study": first.study_uid,
    }


def _differs(hit: dict[str, Any], want: First) -> bool:
    return any(hit["_source"].get(k) != v for k, v in want.items())


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
