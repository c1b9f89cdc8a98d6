"""Elasticsearch index backend: the Index protocol on one index per level.

Writes go through the bulk API; by default a write answers once an explicit refresh shared
with concurrent writers is done (a STOW answer means the instance is searchable: see
es_refresh.py for the modes); 429/503 are retried with backoff by the client; when the
cluster cannot be reached the caller gets ServiceUnavailable (STOW answers 503 with
Retry-After, and no instance is acknowledged but unindexed: its blob is reconciled by
``imaging-gateway check --repair``). Computed attributes come from aggregations, so
no counter can drift; ModalitiesInStudy is kept on the study document for matching.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from elasticsearch import (
    ApiError,
    Elasticsearch,
    NotFoundError,
    helpers,
)

from server.core.attributes import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    Level,
)
from server.core.qido import QidoQuery
from server.core.records import InstanceRecord
from server.index.base import AddOutcome, AddResult, Scope, SearchPage, StoredInstance
from server.index.es_mapping import (
    ADDED_FIELDS,
    FEDERATION_FIELDS,
    LEVEL_INDEX,
    columns,
    mapping,
    settings,
)
from server.index.es_outage import outage_is_unavailable
from server.index.es_query import qido_query
from server.index.es_refresh import SharedRefresh
from server.index.federation_es import (
    FirstStudies,
    Patient,
    StudyFacts,
    first_facts,
    series_facts,
    series_objects,
    study_facts,
)
from server.index.pixel_cache import PixelIndexCache, ShortLived
from server.metrics import metered

PAGE = 1000
_INSTANCE_FIELDS = ["studyinstanceuid", "seriesinstanceuid", "sop_uid", "sop_class_uid",
                    "transfer_syntax", "blob_key", "size", "pixel_index"]  # fmt: skip
_HEAD_FIELDS = _INSTANCE_FIELDS[:-1]  # all but the pixel index (frame table)


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


@metered("elasticsearch")
@outage_is_unavailable
class ElasticsearchIndex:
    def __init__(
        self,
        client: Elasticsearch,
        prefix: str = "imaging",
        shards: int = 1,
        replicas: int = 0,
        refresh: Any = "immediate",
        names: dict[Level, str] | None = None,
        cache_seconds: float = 0.0,
    ) -> None:
        self.es = client
        # A write returns once searchable: "immediate" (an explicit refresh shared by
        # concurrent writers; default), "wait_for" (the next periodic refresh) or True (a
        # refresh per request, tests); "none": once durable, searchable within the refresh
        # interval; False: bulk loads (reindex), which refresh and backfill at the end.
        self.refresh: Any = refresh
        self._es_refresh: Any = refresh if refresh in ("wait_for", True) else False
        self.shards, self.replicas = shards, replicas
        # Per level an alias over a versioned index, so `reindex` can switch atomically.
        self.names = names or {level: f"{prefix}-{name}" for level, name in LEVEL_INDEX.items()}
        self.first_studies = FirstStudies(self.es, self.names[Level.STUDY])
        self.pixel_indexes = PixelIndexCache()
        # (study, series, SOP) -> instance and study -> dataset, for retrieval: a round trip
        # to the cluster costs more than the rest of a frame request on a busy machine
        self.recent_instances: ShortLived[tuple[str, str | None, str], StoredInstance]
        self.recent_instances = ShortLived(cache_seconds)
        self.recent_studies: ShortLived[str, str | None] = ShortLived(cache_seconds)
        self.shared_refresh = SharedRefresh(
            lambda: self.es.indices.refresh(index=list(self.names.values()))
        )
        if names is None:  # (an unreachable cluster is ServiceUnavailable: es_outage)
            for level, alias in self.names.items():
                if not self.es.indices.exists(index=alias):
                    self.create_version(level, alias, with_alias=True)
                elif level in ADDED_FIELDS:  # indices made by an earlier version
                    self.es.indices.put_mapping(index=alias, properties=ADDED_FIELDS[level])
            # indices made by earlier releases: add the federated-search fields (idempotent)
            # and the patients' first-study values (one count when there is nothing to do)
            self.es.indices.put_mapping(index=self.names[Level.STUDY], properties=FEDERATION_FIELDS)
            self.first_studies.backfill()

    def create_version(self, level: Level, alias: str, *, with_alias: bool) -> str:
        """A new concrete index ``<alias>-v<time>`` with the level's mapping."""
        concrete = f"{alias}-v{time.time_ns()}"
        self.es.indices.create(
            index=concrete,
            mappings=mapping(level),
            settings=settings(self.shards, self.replicas),
            aliases={alias: {}} if with_alias else None,
        )
        return concrete

    def close(self) -> None:
        self.es.close()

    # -- writes ------------------------------------------------------------
    def add_instances(
        self, records: Sequence[InstanceRecord], *, overwrite: bool
    ) -> list[AddResult]:
        return self._add(records, overwrite)

    def _add(self, records: Sequence[InstanceRecord], overwrite: bool) -> list[AddResult]:
        self._forget_recent()
        existing = self._mget(
            Level.INSTANCE, [r.sop_uid for r in records], ["sha256", "blob_key", "dataset"]
        )
        series = self._mget(Level.SERIES, [r.series_uid for r in records], ["studyinstanceuid"])
        studies = self._mget(Level.STUDY, [r.study_uid for r in records], ["dataset", *_STUDY_SETS])
        results: list[AddResult] = []
        accepted: list[tuple[InstanceRecord, dict[str, list[str]]]] = []
        for rec in records:
            result = self._outcome(rec, existing, series, studies, overwrite)
            results.append(result)
            if result.outcome in (AddOutcome.STORED, AddOutcome.REPLACED):
                study = studies.setdefault(rec.study_uid, {"dataset": rec.dataset})
                for name, value in _study_facts(rec).items():
                    study[name] = sorted({*study.get(name, []), *([value] if value else [])})
                accepted.append((rec, {n: study[n] for n in _STUDY_SETS}))
                existing[rec.sop_uid] = {
                    "sha256": rec.sha256,
                    "blob_key": rec.blob_key,
                    "dataset": rec.dataset,
                }
                series[rec.series_uid] = {"studyinstanceuid": rec.study_uid}
        first, actions = self._first_values([rec for rec, _ in accepted])
        for rec, sets in accepted:
            actions += self._actions(rec, sets, first.get(rec.study_uid, {}))
        if actions:
            helpers.bulk(
                self.es, actions, refresh=self._es_refresh, max_retries=5, initial_backoff=1
            )
            if self.refresh is not False:  # bulk loads (reindex) backfill after their refresh
                self._visible()
                self._recompute({r.patient_key for r, _ in accepted})
        return results

    def _visible(self, *, always: bool = False) -> None:
        """What this process wrote so far is searchable once this returns ("immediate"; in
        every mode when ``always``: a delete counts what is left)."""
        if self.refresh == "immediate":
            self.shared_refresh.wait()
        elif always and self._es_refresh is False:
            self.es.indices.refresh(index=list(self.names.values()))

    def _recompute(self, patients: set[str]) -> None:
        if self.first_studies.recompute(patients, self._es_refresh):
            self._visible()

    def _first_values(
        self, written: list[InstanceRecord]
    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """First-study values of the studies written (by study uid), and the updates of
        their patients' other studies, both for the same bulk."""
        if not written or self.refresh is False:
            return {}, []
        incoming: dict[str, tuple[Patient, StudyFacts]] = {}
        for rec in written:  # the last instance of a study wins, as the bulk's updates do
            incoming[rec.study_uid] = ((rec.dataset, rec.patient_key), first_facts(rec))
        return self.first_studies.for_records(incoming)

    @staticmethod
    def _outcome(rec: InstanceRecord, existing: dict[str, Any], series: dict[str, Any],
                 studies: dict[str, Any], overwrite: bool) -> AddResult:  # fmt: skip
        old = existing.get(rec.sop_uid)
        if old is not None and old.get("dataset") != rec.dataset:
            return AddResult(AddOutcome.DATASET)
        if old is not None and old["sha256"] == rec.sha256:
            return AddResult(AddOutcome.IDENTICAL)
        if old is not None and not overwrite:
            return AddResult(AddOutcome.CONFLICT)
        study = studies.get(rec.study_uid)
        if study is not None and study.get("dataset") != rec.dataset:
            return AddResult(AddOutcome.DATASET)
        owner = series.get(rec.series_uid)
        if owner is not None and owner["studyinstanceuid"] != rec.study_uid:
            return AddResult(AddOutcome.HIERARCHY)
        if old is not None:
            return AddResult(AddOutcome.REPLACED, old["blob_key"])
        return AddResult(AddOutcome.STORED)

    def _actions(
        self, rec: InstanceRecord, sets: dict[str, list[str]], first: dict[str, Any]
    ) -> list[dict[str, Any]]:
        now = time.time()
        base = {"study_uid": rec.study_uid, "dataset": rec.dataset, "patient_key": rec.patient_key,
                "started_lo": rec.started[0], "started_hi": rec.started[1], "updated": now,
                "seq": time.time_ns()}  # fmt: skip
        fields = {lvl: _fields(rec, lvl) for lvl in Level}
        study_doc = {**base, **fields[Level.STUDY], "json": _b64(rec.level_json[Level.STUDY])}
        derived: dict[str, Any] = {**sets, "fed_series": series_objects(sets["series_facts"]),
                                   **study_facts(rec), **first}  # fmt: skip
        series_doc = {**base, **fields[Level.SERIES], "series_uid": rec.series_uid,
                      "json": _b64(rec.level_json[Level.SERIES])}  # fmt: skip
        instance_doc = {
            **base, **fields[Level.INSTANCE], "series_uid": rec.series_uid, "sop_uid": rec.sop_uid,
            "sop_class_uid": rec.sop_class_uid, "transfer_syntax": rec.transfer_syntax,
            "blob_key": rec.blob_key, "sha256": rec.sha256, "size": rec.size,
            "json": _b64(rec.level_json[Level.INSTANCE]), "metadata": _b64(rec.metadata),
            "pixel_index": _b64(rec.pixel_index), "deid": _b64(rec.deid),
        }  # fmt: skip
        return [
            # No scripts (the minimal distribution has none): the merged list is written whole.
            {"_op_type": "update", "_index": self.names[Level.STUDY], "_id": rec.study_uid,
             "doc": {**derived, "updated": now}, "upsert": {**study_doc, **derived}},
            {"_op_type": "update", "_index": self.names[Level.SERIES], "_id": rec.series_uid,
             "doc": {"updated": now}, "upsert": series_doc},
            {"_op_type": "index", "_index": self.names[Level.INSTANCE], "_id": rec.sop_uid,
             "_source": instance_doc},
        ]  # fmt: skip

    def _mget(self, level: Level, ids: list[str], fields: list[str]) -> dict[str, Any]:
        if not ids:
            return {}
        found = self.es.mget(
            index=self.names[level], ids=list(dict.fromkeys(ids)), source_includes=fields
        )
        return {d["_id"]: d["_source"] for d in found["docs"] if d.get("found")}

    def delete(self, scope: Scope) -> list[StoredInstance]:
        self._forget_recent()  # what is deleted is read from the cluster, not remembered
        found = self.instances(scope)
        self.pixel_indexes.forget([i.blob_key for i in found])
        if found:
            self._remove(
                [i.sop_uid for i in found],
                {i.series_uid for i in found},
                {i.study_uid for i in found},
            )
        return found

    def referenced(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        if keys:  # a write acknowledged by a process killed before its refresh counts too
            self.es.indices.refresh(index=self.names[Level.INSTANCE])
        for start in range(0, len(keys), PAGE):
            chunk = list(keys[start : start + PAGE])
            hits = self._scan(Level.INSTANCE, {"terms": {"blob_key": chunk}}, ["blob_key"])
            found.update(h["_source"]["blob_key"] for h in hits)
        return found

    def remove_by_blob_keys(self, keys: Sequence[str]) -> int:
        hits = list(
            self._scan(Level.INSTANCE, {"terms": {"blob_key": list(keys)}}, _INSTANCE_FIELDS)
        )
        rows = [_stored(h) for h in hits]
        if rows:
            self._remove(
                [r.sop_uid for r in rows], {r.series_uid for r in rows}, {r.study_uid for r in rows}
            )
        return len(rows)

    def _forget_recent(self) -> None:
        self.recent_instances.clear()
        self.recent_studies.clear()

    def _remove(self, sops: list[str], series: set[str], studies: set[str]) -> None:
        self._forget_recent()
        # (other processes are not told: their frame tables are keyed by blob keys, which are
        # never reused, and what they recall of instances and studies ages out in seconds)
        patients = {
            doc["patient_key"]
            for doc in self._mget(Level.STUDY, sorted(studies), ["patient_key"]).values()
            if doc.get("patient_key") is not None
        }
        actions = [
            {"_op_type": "delete", "_index": self.names[Level.INSTANCE], "_id": s} for s in sops
        ]
        helpers.bulk(self.es, actions, refresh=self._es_refresh, raise_on_error=False)
        self._visible(always=True)  # the counts below must not see the deleted instances
        for uid in series:
            if self._count(Level.INSTANCE, {"term": {"seriesinstanceuid": uid}}) == 0:
                self.es.options(ignore_status=404).delete(
                    index=self.names[Level.SERIES], id=uid, refresh=self._es_refresh
                )
        for uid in studies:
            if self._count(Level.INSTANCE, {"term": {"studyinstanceuid": uid}}) == 0:
                self.es.options(ignore_status=404).delete(
                    index=self.names[Level.STUDY], id=uid, refresh=self._es_refresh
                )
            else:
                facts: dict[str, Any] = {
                    name: sorted(self._terms(level, {"term": {"studyinstanceuid": uid}}, field))
                    for name, (level, field) in _STUDY_SET_SOURCES.items()}  # fmt: skip
                tuples = sorted({series_facts(h["_source"]) for h in self._scan(
                    Level.SERIES, {"term": {"studyinstanceuid": uid}},
                    ["modality", "bodypartexamined", "manufacturer"])})  # fmt: skip
                facts.update(series_facts=tuples, fed_series=series_objects(tuples))
                self.es.update(
                    index=self.names[Level.STUDY], id=uid, doc=facts, refresh=self._es_refresh
                )
        self._visible()
        if patients:  # a deleted study may have been its patient's first
            self._recompute(patients)

    # -- reads -------------------------------------------------------------
    def find_by_sop(self, sop_uid: str) -> StoredInstance | None:
        try:
            doc = self.es.get(
                index=self.names[Level.INSTANCE], id=sop_uid, source_includes=_INSTANCE_FIELDS
            )
        except NotFoundError:
            return None
        return _stored(dict(doc))

    def deid_record(self, sop_uid: str) -> tuple[str | None, bytes | None] | None:
        try:
            doc = self.es.get(
                index=self.names[Level.INSTANCE], id=sop_uid, source_includes=["dataset", "deid"]
            )
        except NotFoundError:
            return None
        return doc["_source"].get("dataset"), _unb64(doc["_source"].get("deid"))

    def study_dataset(self, study_uid: str) -> tuple[bool, str | None]:
        recent = self.recent_studies.get(study_uid)
        if recent is not None:
            return True, recent or None
        try:
            doc = self.es.get(
                index=self.names[Level.STUDY], id=study_uid, source_includes=["dataset"]
            )
        except NotFoundError:
            return False, None
        dataset = doc["_source"].get("dataset")
        self.recent_studies.put(study_uid, dataset or "")
        return True, dataset

    def instances(self, scope: Scope) -> list[StoredInstance]:
        if scope.sop_uid is not None:
            one = self._instance(scope, scope.sop_uid)
            return [one] if one is not None else []
        hits = self._scan(Level.INSTANCE, _scope_query(scope), _INSTANCE_FIELDS, _ORDER)
        return [_stored(h) for h in hits]

    def _instance(self, scope: Scope, sop_uid: str) -> StoredInstance | None:
        """One instance by its document id: a real-time get (no search, no refresh to wait
        for), without the frame table when this process has it for the same blob key;
        reused for ``cache_seconds``."""
        key = (scope.study_uid, scope.series_uid, sop_uid)
        recent = self.recent_instances.get(key)
        if recent is not None:
            return recent
        found = self._instance_now(scope, sop_uid)
        if found is not None:
            self.recent_instances.put(key, found)
        return found

    def _instance_now(self, scope: Scope, sop_uid: str) -> StoredInstance | None:
        index = self.names[Level.INSTANCE]
        try:
            head = dict(self.es.get(index=index, id=sop_uid, source_includes=_HEAD_FIELDS))
        except NotFoundError:
            return None
        source = head["_source"]
        if source.get("studyinstanceuid") != scope.study_uid or (
            scope.series_uid is not None and source.get("seriesinstanceuid") != scope.series_uid
        ):
            return None
        cached, pixel_index = self.pixel_indexes.get(source["blob_key"])
        if cached:
            return _stored(head)._replace(pixel_index=pixel_index)
        try:
            full = _stored(
                dict(self.es.get(index=index, id=sop_uid, source_includes=_INSTANCE_FIELDS))
            )
        except NotFoundError:  # deleted between the two reads
            return None
        self.pixel_indexes.put(full.blob_key, full.pixel_index)
        return full

    def metadata(self, scope: Scope) -> Iterator[bytes]:
        for hit in self._scan(Level.INSTANCE, _scope_query(scope), ["metadata"], _ORDER):
            data = _unb64(hit["_source"].get("metadata"))
            if data is not None:
                yield data

    def search(self, query: QidoQuery) -> SearchPage:
        level = query.level
        found = self.es.search(
            index=self.names[level], query=qido_query(query), sort=[{"seq": "asc"}],
            from_=query.offset, size=query.limit + 1,
            source_includes=["json", "series_json", "studyinstanceuid", "seriesinstanceuid", "modalities"]
            + (["metadata"] if query.include_all and level is Level.INSTANCE else []),
            track_total_hits=False,
        )  # fmt: skip
        hits = found["hits"]["hits"]
        has_more = len(hits) > query.limit
        hits = hits[: query.limit]
        return SearchPage(self._rows(query, hits), has_more)

    def _rows(self, query: QidoQuery, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        studies = {h["_source"]["studyinstanceuid"] for h in hits}
        need_study = query.level is Level.STUDY or query.study_uid is None
        need_series = query.level is Level.SERIES or (
            query.level is Level.INSTANCE and query.series_uid is None
        )
        study_docs = (
            self._mget(Level.STUDY, sorted(studies), ["json", "modalities"]) if need_study else {}
        )
        study_counts = self._study_counts(sorted(studies)) if need_study else {}
        series_uids = (
            sorted({h["_source"].get("seriesinstanceuid") for h in hits} - {None})
            if need_series
            else []
        )
        series_docs = (
            self._mget(Level.SERIES, series_uids, ["json"])
            if need_series and query.level is not Level.SERIES
            else {}
        )
        series_counts = self._series_counts(series_uids) if need_series else {}
        return [self._row(query, h["_source"], study_docs, study_counts, series_docs, series_counts,
                          need_study, need_series) for h in hits]  # fmt: skip

    @staticmethod
    def _row(query: QidoQuery, src: dict[str, Any], study_docs: dict[str, Any], study_counts: dict[str, Any],
             series_docs: dict[str, Any], series_counts: dict[str, int], need_study: bool, need_series: bool) -> dict[str, Any]:  # fmt: skip
        out: dict[str, Any] = {}
        study_uid = src["studyinstanceuid"]
        if need_study:
            doc = study_docs.get(study_uid, {})
            out.update(orjson.loads(_unb64(doc.get("json")) or b"{}"))
            modalities = sorted(doc.get("modalities", []))
            out[f"{MODALITIES_IN_STUDY:08X}"] = (
                {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
            )
            counts = study_counts.get(study_uid, (0, 0))
            out[f"{NUMBER_OF_STUDY_RELATED_SERIES:08X}"] = {"vr": "IS", "Value": [counts[0]]}
            out[f"{NUMBER_OF_STUDY_RELATED_INSTANCES:08X}"] = {"vr": "IS", "Value": [counts[1]]}
        if need_series:
            series_uid = src["seriesinstanceuid"]
            own = (
                src.get("json")
                if query.level is Level.SERIES
                else series_docs.get(series_uid, {}).get("json")
            )
            out.update(orjson.loads(_unb64(own) or b"{}"))
            out[f"{NUMBER_OF_SERIES_RELATED_INSTANCES:08X}"] = {
                "vr": "IS",
                "Value": [series_counts.get(series_uid, 0)],
            }
        if query.level is Level.INSTANCE:
            if query.include_all and src.get("metadata"):
                full = orjson.loads(_unb64(src["metadata"]) or b"{}")
                out.update({k: v for k, v in full.items() if "BulkDataURI" not in v})
            out.update(orjson.loads(_unb64(src.get("json")) or b"{}"))
        return out

    def _study_counts(self, study_uids: list[str]) -> dict[str, tuple[int, int]]:
        if not study_uids:
            return {}
        aggs = {"by": {"terms": {"field": "studyinstanceuid", "size": len(study_uids)},
                       "aggs": {"series": {"cardinality": {"field": "seriesinstanceuid"}}}}}  # fmt: skip
        found = self.es.search(index=self.names[Level.INSTANCE], size=0, aggs=aggs,
                               query={"terms": {"studyinstanceuid": study_uids}})  # fmt: skip
        return {
            b["key"]: (b["series"]["value"], b["doc_count"])
            for b in found["aggregations"]["by"]["buckets"]
        }

    def _series_counts(self, series_uids: list[str]) -> dict[str, int]:
        if not series_uids:
            return {}
        aggs = {"by": {"terms": {"field": "seriesinstanceuid", "size": len(series_uids)}}}
        found = self.es.search(index=self.names[Level.INSTANCE], size=0, aggs=aggs,
                               query={"terms": {"seriesinstanceuid": series_uids}})  # fmt: skip
        return {b["key"]: b["doc_count"] for b in found["aggregations"]["by"]["buckets"]}

    def _terms(self, level: Level, query: dict[str, Any], field: str) -> list[str]:
        found = self.es.search(index=self.names[level], size=0, query=query,
                               aggs={"v": {"terms": {"field": field, "size": 1000}}})  # fmt: skip
        return [b["key"] for b in found["aggregations"]["v"]["buckets"]]

    def _count(self, level: Level, query: dict[str, Any]) -> int:
        return int(self.es.count(index=self.names[level], query=query)["count"])

    def _scan(self, level: Level, query: dict[str, Any], fields: list[str],
              sort: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Every hit, in ``sort`` order, with search_after (no result window limit)."""
        order = [
            *(sort or []),
            {"seq": "asc"},
            {"sop_uid" if level is Level.INSTANCE else "study_uid": "asc"},
        ]
        after: list[Any] | None = None
        while True:
            found = self.es.search(index=self.names[level], query=query, sort=order, size=PAGE,
                                   source_includes=fields, search_after=after)  # fmt: skip
            hits = found["hits"]["hits"]
            yield from hits
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]

    def blob_keys(self) -> dict[str, str]:
        return {h["_source"]["blob_key"]: h["_source"]["sop_uid"]
                for h in self._scan(Level.INSTANCE, {"match_all": {}}, ["blob_key", "sop_uid"])}  # fmt: skip

    def counts(self) -> dict[str, int]:
        return {name: self._count(level, {"match_all": {}}) for level, name in
                ((Level.STUDY, "study"), (Level.SERIES, "series"), (Level.INSTANCE, "instance"))}  # fmt: skip

    def ping(self) -> None:
        # one search over the three indices that stops at the first hit and counts nothing
        self.es.search(index=",".join(self.names.values()), size=0, terminate_after=1,
                       track_total_hits=False)  # fmt: skip


_STUDY_SETS = ("modalities", "bodyparts", "sop_classes", "series_facts")
_STUDY_SET_SOURCES = {
    "modalities": (Level.SERIES, "modality"),
    "bodyparts": (Level.SERIES, "bodypartexamined"),
    "sop_classes": (Level.INSTANCE, "sop_class_uid"),
}


def _study_facts(rec: InstanceRecord) -> dict[str, str | None]:
    body = rec.columns[Level.SERIES].get("bodypartexamined")
    return {"modalities": rec.modality, "bodyparts": str(body) if body else None,
            "sop_classes": rec.sop_class_uid,
            "series_facts": series_facts(rec.columns[Level.SERIES])}  # fmt: skip


_ORDER: list[dict[str, Any]] = [{"seriesnumber": {"order": "asc", "missing": "_first"}}, {"series_uid": "asc"},
          {"instancenumber": {"order": "asc", "missing": "_first"}}]  # fmt: skip


def _scope_query(scope: Scope) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [{"term": {"studyinstanceuid": scope.study_uid}}]
    if scope.series_uid:
        filters.append({"term": {"seriesinstanceuid": scope.series_uid}})
    if scope.sop_uid:
        filters.append({"term": {"sop_uid": scope.sop_uid}})
    return {"bool": {"filter": filters}}


def _stored(hit: dict[str, Any]) -> StoredInstance:
    s = hit["_source"]
    return StoredInstance(s["studyinstanceuid"], s["seriesinstanceuid"], s["sop_uid"], s["sop_class_uid"],
                          s["transfer_syntax"], s["blob_key"], int(s["size"]), _unb64(s.get("pixel_index")))  # fmt: skip


def _fields(rec: InstanceRecord, level: Level) -> dict[str, Any]:
    """The level's matching columns plus those of the levels above (denormalised)."""
    wanted = set(columns(level))
    out: dict[str, Any] = {}
    for lvl in Level:
        for column, value in rec.columns[lvl].items():
            if column.endswith("_fuzzy"):
                base = column[: -len("_fuzzy")]
                if f"{base}_tokens" in wanted:
                    out[f"{base}_tokens"] = value.split() if value else []
            elif column in wanted:
                out[column] = value
    return out


__all__ = ["ApiError", "ElasticsearchIndex"]
