"""FHIR search on the Elasticsearch index: ImagingStudy and Patient, as fhir_dicom does on SQLite.

The same typed SearchRequest, translated to query DSL on the studies index (which
carries the study's modalities, body parts and SOP classes); keyset paging with
search_after; patients grouped with a composite aggregation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from elasticsearch import Elasticsearch, NotFoundError

from server.core.attributes import Level
from server.core.fhir.search import (
    Criterion,
    DateValue,
    PagePosition,
    ReferenceValue,
    SearchRequest,
    TokenValue,
)
from server.errors import InvalidQuery
from server.index.es_outage import outage_is_unavailable
from server.index.fhir_dicom import (
    BODY_PART_SYSTEM,
    DCM,
    GENDER,
    MISSING_FIELDS,
    SNOMED,
    StudyPage,
    StudyRow,
    empty_statistics,
    started_floor,
)
from server.index.fhir_sql import approximate_range
from server.metrics import metered

_SORT = {"started": "started_lo", "_lastUpdated": "updated", "_id": "studyinstanceuid"}
_FIELDS = ["json", "dataset", "patient_key", "updated", "modalities", "studyinstanceuid"]


def _unb64(text: str | None) -> bytes:
    import base64

    return base64.b64decode(text) if text else b"{}"


def date_query(low: str, high: str, v: DateValue) -> dict[str, Any]:
    """FHIR R4 3.1.1.5.1 prefixes over [low, high] ranges, as fhir_sql.date_sql."""

    def rng(field: str, op: str, value: str) -> dict[str, Any]:
        return {"range": {field: {op: value}}}

    contained = {"bool": {"filter": [rng(low, "gte", v.low), rng(high, "lte", v.high)]}}
    table: dict[str, dict[str, Any]] = {
        "eq": contained,
        # as in SQL, a missing value never matches (NOT (NULL ...) is not true)
        "ne": {"bool": {"filter": [{"exists": {"field": low}}], "must_not": [contained]}},
        "gt": rng(high, "gt", v.high),
        "lt": rng(low, "lt", v.low),
        "ge": {"bool": {"should": [rng(high, "gt", v.high), contained], "minimum_should_match": 1}},
        "le": {"bool": {"should": [rng(low, "lt", v.low), contained], "minimum_should_match": 1}},
        "sa": rng(low, "gt", v.high),
        "eb": rng(high, "lt", v.low),
    }
    if v.prefix in table:
        return table[v.prefix]
    wide_low, wide_high = approximate_range(v)
    return {"bool": {"filter": [rng(low, "lte", wide_high), rng(high, "gte", wide_low)]}}


_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"})


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


@metered("elasticsearch")
@outage_is_unavailable
class EsFhirQueries:
    def __init__(self, client: Elasticsearch, names: dict[Level, str], endpoint_id: str,
                 body_part_terms: Callable[[str], list[str]]) -> None:  # fmt: skip
        self.es = client
        self.names = names
        self.endpoint_id = endpoint_id
        self.body_part_terms = body_part_terms

    # -- ImagingStudy ------------------------------------------------------
    def search_studies(self, req: SearchRequest) -> StudyPage:
        query = {"bool": {"filter": self.study_filters(req)}}
        order = [(_SORT[name], desc) for name, desc in req.sort] + [
            ("studyinstanceuid", req.sort[-1][1] if req.sort else False)
        ]
        if not req.sort:
            order = [("seq", False), ("studyinstanceuid", False)]
        return self._page(query, order, req)

    def study(self, study_uid: str) -> StudyRow | None:
        try:
            doc = self.es.get(index=self.names[Level.STUDY], id=study_uid, source_includes=_FIELDS)
        except NotFoundError:
            return None
        return self._rows([dict(doc)])[0]

    def series_of(
        self, study_keys: list[Any], with_instances: bool = True
    ) -> dict[Any, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        out: dict[Any, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {
            k: [] for k in study_keys
        }
        if not study_keys:
            return out
        series = self.es.search(index=self.names[Level.SERIES], size=10000, query={"terms": {"studyinstanceuid": study_keys}},
                                sort=[{"seriesnumber": {"order": "asc", "missing": "_first"}}, {"series_uid": "asc"}],
                                source_includes=["json", "series_uid", "studyinstanceuid"])["hits"]["hits"]  # fmt: skip
        counts = self._counts("seriesinstanceuid", [h["_source"]["series_uid"] for h in series])
        by_series: dict[str, list[dict[str, Any]]] = {}
        for hit in series:
            src = hit["_source"]
            data = orjson.loads(_unb64(src.get("json")))
            data["00201209"] = {"vr": "IS", "Value": [counts.get(src["series_uid"], 0)]}
            by_series[src["series_uid"]] = []
            out[src["studyinstanceuid"]].append((data, by_series[src["series_uid"]]))
        if with_instances and by_series:
            hits = self.es.search(index=self.names[Level.INSTANCE], size=10000, query={"terms": {"studyinstanceuid": study_keys}},
                                  sort=[{"instancenumber": {"order": "asc", "missing": "_first"}}, {"sop_uid": "asc"}],
                                  source_includes=["json", "series_uid"])["hits"]["hits"]  # fmt: skip
            for hit in hits:
                by_series.get(hit["_source"]["series_uid"], []).append(
                    orjson.loads(_unb64(hit["_source"].get("json")))
                )
        return out

    def study_filters(self, req: SearchRequest) -> list[dict[str, Any]]:
        filters = _restrict(req.restrict)
        for c in req.criteria:
            filters.append(self._criterion(c))
        return filters

    def _criterion(self, c: Criterion) -> dict[str, Any]:
        name = c.param.name
        if c.chain is not None:
            if c.chain.resource_type != "Patient":
                raise InvalidQuery(
                    f"chaining {name} to {c.chain.resource_type} is not supported", name
                )
            return {"bool": {"filter": self.patient_filters(c.chain)}}
        if c.modifier == "missing":
            field = MISSING_FIELDS.get(name)
            if field is None:
                raise InvalidQuery(f":missing is not supported on ImagingStudy {name}", name)
            exists = {"exists": {"field": field}}
            return {"bool": {"must_not": [exists]}} if c.values[0] else exists
        parts = [self._value(name, v) for v in c.values]
        either = {"bool": {"should": parts, "minimum_should_match": 1}}
        return {"bool": {"must_not": [either]}} if c.modifier == "not" else either

    def _value(self, name: str, v: Any) -> dict[str, Any]:
        if name == "_id":
            return _term("studyinstanceuid", v.code)
        if name == "_lastUpdated":  # one instant per study: its range is [updated, updated]
            if v.prefix not in _PREFIXES:  # ap: the approximate window, as a plain range
                v = DateValue("eq", *approximate_range(v))
            epochs = DateValue(v.prefix, repr(_epoch(v.low)), repr(_epoch(v.high)))
            return date_query("updated", "updated", epochs)
        if name == "identifier":
            uid = (v.code or "").removeprefix("urn:oid:")
            if v.system == "urn:dicom:uid":
                return {"term": {"studyinstanceuid": uid}}
            if v.system:
                return _term("accessionnumber", v.code)
            return {
                "bool": {
                    "should": [
                        {"term": {"studyinstanceuid": uid}},
                        _term("accessionnumber", v.code),
                    ]
                }
            }
        if name in ("patient", "subject", "dataset"):
            assert isinstance(v, ReferenceValue)
            expected = "ResearchStudy" if name == "dataset" else "Patient"
            if v.type not in (None, expected):
                return {"match_none": {}}
            return {"term": {"dataset" if name == "dataset" else "patient_key": v.id}}
        if name == "started":
            return self._started(v)
        if name == "modality":
            return _term("modalities", v.code) if v.system in (None, DCM) else {"match_none": {}}
        if name == "bodysite":
            if v.system not in (None, SNOMED, BODY_PART_SYSTEM):
                return {"match_none": {}}
            return {
                "terms": {
                    "bodyparts": sorted(
                        {*self.body_part_terms(v.code or ""), (v.code or "").upper()}
                    )
                }
            }
        if name == "series":
            return self._via(
                Level.SERIES, "seriesinstanceuid", (v.code or "").removeprefix("urn:oid:")
            )
        if name == "instance":
            return self._via(Level.INSTANCE, "sop_uid", (v.code or "").removeprefix("urn:oid:"))
        if name == "dicom-class":
            return {"term": {"sop_classes": (v.code or "").removeprefix("urn:oid:")}}
        if name == "endpoint":
            return {"match_all": {}} if v.id == self.endpoint_id else {"match_none": {}}
        if name == "status":
            return {"match_all": {}} if v.code == "available" else {"match_none": {}}
        raise InvalidQuery(f"ImagingStudy search by {name} is not supported", name)

    @staticmethod
    def _started(v: DateValue) -> dict[str, Any]:
        query = date_query("started_lo", "started_hi", v)
        floor = started_floor(v)  # same implied bound as on SQLite
        if floor is not None:
            query = {"bool": {"filter": [query, {"range": {"started_lo": {"gte": floor}}}]}}
        return query

    def _via(self, level: Level, field: str, value: str) -> dict[str, Any]:
        hits = self.es.search(index=self.names[level], size=100, query={"term": {field: value}},
                              source_includes=["studyinstanceuid"])["hits"]["hits"]  # fmt: skip
        uids = sorted({h["_source"]["studyinstanceuid"] for h in hits})
        return {"terms": {"studyinstanceuid": uids}} if uids else {"match_none": {}}

    # -- Patient -----------------------------------------------------------
    def patient_filters(self, req: SearchRequest) -> list[dict[str, Any]]:
        filters = _restrict(req.restrict)
        for c in req.criteria:
            name = c.param.name
            field = {
                "_id": "patient_key",
                "identifier": "patientid",
                "gender": "patientsex",
                "birthdate": "patientbirthdate",
            }.get(name)
            if field is None:
                raise InvalidQuery(f"Patient search by {name} is not supported", name)
            if c.modifier == "missing":
                exists = {"exists": {"field": field}}
                filters.append({"bool": {"must_not": [exists]}} if c.values[0] else exists)
                continue
            parts = [_patient_value(name, field, v) for v in c.values]
            either = {"bool": {"should": parts, "minimum_should_match": 1}}
            filters.append({"bool": {"must_not": [either]}} if c.modifier == "not" else either)
        return filters

    def search_patients(self, req: SearchRequest) -> StudyPage:
        query = {"bool": {"filter": self.patient_filters(req)}}
        if req.count == 0:  # count only: no row is read
            return StudyPage([], self._patient_total(query, req), None, None)
        descending = bool(req.sort and req.sort[-1][1])
        backwards = req.position is not None and req.position.backwards
        # a page back is the composite walked the other way from the page's first key
        source: dict[str, Any] = {
            "size": req.count + 1,
            "sources": [
                {
                    "k": {
                        "terms": {
                            "field": "patient_key",
                            "order": "desc" if descending != backwards else "asc",
                        }
                    }
                }
            ],
        }
        if req.position is not None:
            if len(req.position.values) != 1:
                raise InvalidQuery("_cursor does not belong to this search", "_cursor")
            source["after"] = {"k": req.position.values[0]}
        aggs = {
            "p": {
                "composite": source,
                "aggs": {
                    "one": {"top_hits": {"size": 1, "sort": [{"seq": "asc"}], "_source": _FIELDS}}
                },
            }
        }
        found = self.es.search(index=self.names[Level.STUDY], size=0, query=query, aggs=aggs)
        buckets = found["aggregations"]["p"]["buckets"]
        more = len(buckets) > req.count
        buckets = buckets[: req.count]
        if backwards:
            buckets.reverse()
        rows = self._rows([b["one"]["hits"]["hits"][0] for b in buckets])
        if not buckets:
            return StudyPage(rows, self._patient_total(query, req), None, None)
        first, last = buckets[0]["key"]["k"], buckets[-1]["key"]["k"]
        # forwards: more after if the composite had one more; something before if a cursor
        # brought us here. Backwards: the reverse.
        after = more if not backwards else True
        before = (req.position is not None) if not backwards else more
        next_c = PagePosition(False, (last,)) if after else None
        prev_c = PagePosition(True, (first,)) if before else None
        return StudyPage(rows, self._patient_total(query, req), next_c, prev_c)

    def _patient_total(self, query: dict[str, Any], req: SearchRequest) -> int | None:
        if not (req.total == "accurate" or req.summary == "count"):
            return None
        card = self.es.search(index=self.names[Level.STUDY], size=0, query=query,
                              aggs={"n": {"cardinality": {"field": "patient_key", "precision_threshold": 40000}}})  # fmt: skip
        return int(card["aggregations"]["n"]["value"])

    def patient(self, key: str, datasets: frozenset[str] | None = None) -> StudyRow | None:
        query = {"bool": {"filter": [{"term": {"patient_key": key}}, *_restrict(datasets)]}}
        hits = self.es.search(
            index=self.names[Level.STUDY],
            size=1,
            query=query,
            sort=[{"seq": "asc"}],
            source_includes=_FIELDS,
        )["hits"]["hits"]
        return self._rows(hits)[0] if hits else None

    def stale_patient_keys(self, key_of: Callable[[dict[str, Any]], str]) -> bool:
        """Were the stored Patient ids made with another key (or unkeyed)? One study tells."""
        try:
            hits = self.es.search(index=self.names[Level.STUDY], size=1, source_includes=_FIELDS,
                                  query={"match_all": {}})["hits"]["hits"]  # fmt: skip
        except NotFoundError:
            return False
        if not hits:
            return False
        src = hits[0]["_source"]
        return bool(src.get("patient_key", "") != key_of(orjson.loads(_unb64(src.get("json")))))

    # -- catalogue ----------------------------------------------------------
    def dataset_statistics(self, dataset_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._dataset_statistics(dataset_ids)

    def _dataset_statistics(self, dataset_ids: list[str]) -> dict[str, dict[str, Any]]:
        out = empty_statistics(dataset_ids)
        if not dataset_ids:
            return out
        aggs = {"d": {"terms": {"field": "dataset", "size": len(dataset_ids)},
                      "aggs": {"subjects": {"cardinality": {"field": "patient_key", "precision_threshold": 40000}},
                               "modalities": {"terms": {"field": "modalities", "size": 100}},
                               "body_parts": {"terms": {"field": "bodyparts", "size": 200}},
                               "sexes": {"terms": {"field": "patientsex", "size": 20, "missing": ""}},
                               "first": {"terms": {"field": "studydate", "size": 1, "order": {"_key": "asc"}}},
                               "last": {"terms": {"field": "studydate", "size": 1, "order": {"_key": "desc"}}}}}}  # fmt: skip
        found = self.es.search(
            index=self.names[Level.STUDY],
            size=0,
            query={"terms": {"dataset": dataset_ids}},
            aggs=aggs,
        )
        for b in found["aggregations"]["d"]["buckets"]:
            out[b["key"]].update(studies=b["doc_count"], subjects=int(b["subjects"]["value"]),
                                 modalities=sorted(x["key"] for x in b["modalities"]["buckets"]),
                                 body_parts=sorted(x["key"] for x in b["body_parts"]["buckets"]),
                                 sexes=sorted(x["key"] for x in b["sexes"]["buckets"]),
                                 first_date=_edge(b["first"]), last_date=_edge(b["last"]))  # fmt: skip
        makers = self.es.search(index=self.names[Level.SERIES], size=0, query={"terms": {"dataset": dataset_ids}},
                                aggs={"d": {"terms": {"field": "dataset", "size": len(dataset_ids)},
                                            "aggs": {"m": {"terms": {"field": "manufacturer", "size": 100}}}}})  # fmt: skip
        for b in makers["aggregations"]["d"]["buckets"]:
            out[b["key"]]["manufacturers"] = sorted(x["key"] for x in b["m"]["buckets"])
        return out

    def datasets_with_modality(self, codes: list[str]) -> list[str]:
        found = self.es.search(index=self.names[Level.STUDY], size=0, query={"terms": {"modalities": codes}},
                               aggs={"d": {"terms": {"field": "dataset", "size": 10000}}})  # fmt: skip
        return [b["key"] for b in found["aggregations"]["d"]["buckets"]]

    # -- shared --------------------------------------------------------------
    def _page(
        self, query: dict[str, Any], order: list[tuple[str, bool]], req: SearchRequest
    ) -> StudyPage:
        backwards = False
        after = None
        if req.position is not None:
            if len(req.position.values) != len(order):
                raise InvalidQuery("_cursor does not belong to this search", "_cursor")
            after, backwards = list(req.position.values), req.position.backwards
        sort = [
            {
                f: {
                    "order": ("desc" if d != backwards else "asc"),
                    "missing": "_first" if (d == backwards) else "_last",
                }
            }
            for f, d in order
        ]
        found = self.es.search(index=self.names[Level.STUDY], query=query, sort=sort,
                               size=req.count + 1 if req.count > 0 else 0,
                               search_after=after, source_includes=_FIELDS,
                               track_total_hits=req.total == "accurate" or req.summary == "count")  # fmt: skip
        hits = found["hits"]["hits"]
        more = len(hits) > req.count
        hits = hits[: req.count]
        if backwards:
            hits.reverse()
        total = (
            found["hits"]["total"]["value"]
            if (req.total == "accurate" or req.summary == "count")
            else None
        )
        next_c = prev_c = None
        if hits:
            if more or backwards:
                next_c = PagePosition(False, tuple(hits[-1]["sort"]))
            if more if backwards else req.position is not None:
                prev_c = PagePosition(True, tuple(hits[0]["sort"]))
        return StudyPage(self._rows(hits), total, next_c, prev_c)

    def _rows(self, hits: list[dict[str, Any]]) -> list[StudyRow]:
        uids = [h["_source"]["studyinstanceuid"] for h in hits]
        counts = self._study_counts(uids)
        rows = []
        for hit in hits:
            src = hit["_source"]
            data = orjson.loads(_unb64(src.get("json")))
            modalities = sorted(src.get("modalities", []))
            n_series, n_instances = counts.get(src["studyinstanceuid"], (0, 0))
            data["00080061"] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
            data["00201206"] = {"vr": "IS", "Value": [n_series]}
            data["00201208"] = {"vr": "IS", "Value": [n_instances]}
            rows.append(
                StudyRow(
                    src["studyinstanceuid"],
                    data,
                    src.get("dataset"),
                    src.get("patient_key", ""),
                    float(src.get("updated", 0)),
                )
            )
        return rows

    def _study_counts(self, uids: list[str]) -> dict[str, tuple[int, int]]:
        if not uids:
            return {}
        aggs = {"by": {"terms": {"field": "studyinstanceuid", "size": len(uids)},
                       "aggs": {"series": {"cardinality": {"field": "seriesinstanceuid"}}}}}  # fmt: skip
        found = self.es.search(
            index=self.names[Level.INSTANCE],
            size=0,
            aggs=aggs,
            query={"terms": {"studyinstanceuid": uids}},
        )
        return {
            b["key"]: (int(b["series"]["value"]), b["doc_count"])
            for b in found["aggregations"]["by"]["buckets"]
        }

    def _counts(self, field: str, keys: list[str]) -> dict[str, int]:
        if not keys:
            return {}
        found = self.es.search(index=self.names[Level.INSTANCE], size=0, query={"terms": {field: keys}},
                               aggs={"by": {"terms": {"field": field, "size": len(keys)}}})  # fmt: skip
        return {b["key"]: b["doc_count"] for b in found["aggregations"]["by"]["buckets"]}


def _term(field: str, code: str | None) -> dict[str, Any]:
    """An exact match; a token without a code (``system|``) matches nothing, as in SQL."""
    return {"term": {field: code}} if code is not None else {"match_none": {}}


def _restrict(datasets: frozenset[str] | None) -> list[dict[str, Any]]:
    if datasets is None:
        return []
    return [{"terms": {"dataset": sorted(datasets)}}] if datasets else [{"match_none": {}}]


def _patient_value(name: str, field: str, v: Any) -> dict[str, Any]:
    if name == "gender":
        codes = GENDER.get(v.code or "")
        if codes is None:
            return {"bool": {"must_not": [{"terms": {"patientsex": ["M", "F", "O"]}}]}}
        return {"terms": {"patientsex": codes}}
    if name == "birthdate":
        assert isinstance(v, DateValue)
        return _birth_year(v)
    assert isinstance(v, TokenValue)
    return _term(field, v.code)


def _birth_year(v: DateValue) -> dict[str, Any]:
    """Birth dates are answered at year precision, as on SQLite: match the years whose range fits."""
    years: list[dict[str, Any]] = [
        {"prefix": {"patientbirthdate": str(year)}}
        for year in range(1850, 2101)
        if _year_matches(v, f"{year}-01-01T00:00:00.000000", f"{year}-12-31T23:59:59.999999")
    ]
    return {"bool": {"should": years, "minimum_should_match": 1}} if years else {"match_none": {}}


def _year_matches(v: DateValue, lo: str, hi: str) -> bool:
    contained = lo >= v.low and hi <= v.high
    return {
        "eq": contained, "ne": not contained, "gt": hi > v.high, "lt": lo < v.low,
        "ge": hi > v.high or contained, "le": lo < v.low or contained,
        "sa": lo > v.high, "eb": hi < v.low, "ap": not (hi < v.low or lo > v.high),
    }[v.prefix]  # fmt: skip


def _edge(agg: dict[str, Any]) -> str | None:
    """The one key of a size-1 terms aggregation ordered by key (first or last StudyDate)."""
    buckets = agg["buckets"]
    return str(buckets[0]["key"]) if buckets else None
