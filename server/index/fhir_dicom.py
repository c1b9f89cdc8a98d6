"""FHIR search on the DICOM index: ImagingStudy and Patient derived live from the study tables.

No copy, no sync: every ImagingStudy search is SQL on the same ``study``/``series``/
``instance`` tables QIDO uses (FHIR R4 ImagingStudy and Patient search parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from server.core.fhir.search import (
    Criterion,
    DateValue,
    PagePosition,
    ReferenceValue,
    SearchRequest,
    TokenValue,
)
from server.errors import InvalidQuery
from server.index.fhir_sql import date_sql, fetch_page, keyset
from server.index.sqlite_db import SqliteDatabase
from server.metrics import metered

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
BODY_PART_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/CodeSystem/dicom-body-part-examined"
UPDATED = "strftime('%Y-%m-%dT%H:%M:%f000', st.updated, 'unixepoch')"
GENDER = {"male": ["M"], "female": ["F"], "other": ["O"]}
PatientKey = Callable[[dict[str, Any]], str]  # study DICOM JSON -> pseudonymous Patient id


@dataclass
class StudyRow:
    pk: int | str  # SQLite row id, or the Study Instance UID on Elasticsearch
    json: dict[str, Any]
    dataset: str | None
    patient_key: str
    updated: float


@dataclass
class StudyPage:
    rows: list[StudyRow]
    total: int | None
    next_cursor: PagePosition | None
    previous_cursor: PagePosition | None


@metered("sqlite")  # as the Elasticsearch queries: latency, errors and a span per call
class DicomFhirQueries:
    def __init__(
        self, db: SqliteDatabase, endpoint_id: str, body_part_terms: Callable[[str], list[str]]
    ) -> None:
        self.db = db
        self.endpoint_id = endpoint_id
        self.body_part_terms = body_part_terms

    # -- ImagingStudy ------------------------------------------------------
    def search_studies(self, req: SearchRequest) -> StudyPage:
        where, params = self.study_where(req)
        order = [(_STUDY_SORT[name], desc) for name, desc in req.sort]
        order.append(("st.pk", req.sort[-1][1] if req.sort else False))
        return self._page("study st", where, params, order, req, _STUDY_COLUMNS)

    def study(self, study_uid: str) -> StudyRow | None:
        row = (
            self.db.reader()
            .execute(
                f"SELECT {_STUDY_COLUMNS} FROM study st WHERE st.studyinstanceuid = ?", (study_uid,)
            )
            .fetchone()
        )
        return _study_row(row) if row else None

    def series_of(
        self, study_pks: list[Any], with_instances: bool = True
    ) -> dict[Any, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        """Series (with their instances) of the given studies, in series/instance order."""
        if not study_pks:
            return {}
        marks = ", ".join("?" for _ in study_pks)
        conn = self.db.reader()
        out: dict[Any, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {
            pk: [] for pk in study_pks
        }
        by_series: dict[int, list[dict[str, Any]]] = {}
        for pk, study_pk, blob, count in conn.execute(
            f"SELECT pk, study_pk, json, num_instances FROM series WHERE study_pk IN ({marks})"
            " ORDER BY study_pk, seriesnumber, pk",
            study_pks,
        ):
            series_json = orjson.loads(blob)
            series_json["00201209"] = {"vr": "IS", "Value": [count]}
            by_series[pk] = []
            out[study_pk].append((series_json, by_series[pk]))
        if with_instances:
            for series_pk, blob in conn.execute(
                f"SELECT series_pk, json FROM instance WHERE study_pk IN ({marks})"
                " ORDER BY series_pk, instancenumber, pk",
                study_pks,
            ):
                by_series[series_pk].append(orjson.loads(blob))
        return out

    def study_where(self, req: SearchRequest) -> tuple[str, list[Any]]:
        clauses, params = _restrict(req.restrict)
        for c in req.criteria:
            sql, values = self._study_criterion(c)
            clauses.append(f"({sql})")
            params += values
        return " AND ".join(clauses), params

    def _study_criterion(self, c: Criterion) -> tuple[str, list[Any]]:
        name = c.param.name
        if (
            c.chain is not None
        ):  # subject:Patient.x / patient.x: Patient columns live on the study row
            if c.chain.resource_type != "Patient":
                raise InvalidQuery(
                    f"chaining {name} to {c.chain.resource_type} is not supported", name
                )
            return self.patient_where(c.chain)
        if c.modifier == "missing":
            return _missing(name, bool(c.values[0]))
        handler = _STUDY_HANDLERS.get(name)
        if handler is None:
            raise InvalidQuery(f"ImagingStudy search by {name} is not supported", name)
        parts = [handler(self, v) for v in c.values]
        sql = " OR ".join(f"({p})" for p, _ in parts)
        params = [x for _, ps in parts for x in ps]
        return (f"NOT ({sql})", params) if c.modifier == "not" else (sql, params)

    def _uids(self, column: str, table: str, values: list[str]) -> tuple[str, list[Any]]:
        """Selective keys (UIDs): find the rows first, then their studies."""
        marks = ", ".join("?" for _ in values)
        return f"st.pk IN (SELECT study_pk FROM {table} WHERE {column} IN ({marks}))", values

    def _exists(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        """Unselective series attributes (modality, body part): probe each candidate study."""
        marks = ", ".join("?" for _ in values)
        return (
            f"EXISTS (SELECT 1 FROM series se WHERE se.{column} IN ({marks}) AND se.study_pk = st.pk)",
            values,
        )

    def dataset_statistics(self, dataset_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Catalogue figures per dataset, computed from the index (EUCAIM catalogue attributes):
        studies, subjects, modalities, body parts, manufacturers, sexes (PatientSex, '' where
        absent) and the first and last StudyDate."""
        if not dataset_ids:
            return {}
        marks = ", ".join("?" for _ in dataset_ids)
        conn = self.db.reader()
        out = empty_statistics(dataset_ids)
        for dataset, studies, subjects, first, last in conn.execute(
            "SELECT dataset, count(*), count(DISTINCT patient_key), min(studydate), max(studydate)"
            f" FROM study WHERE dataset IN ({marks}) GROUP BY dataset",
            dataset_ids,
        ):
            out[dataset].update(
                studies=studies, subjects=subjects, first_date=first, last_date=last
            )
        for dataset, sex in conn.execute(
            f"SELECT DISTINCT dataset, coalesce(patientsex, '') FROM study WHERE dataset IN ({marks})"
            " ORDER BY 1, 2",
            dataset_ids,
        ):
            out[dataset]["sexes"].append(sex)
        for column, key in (
            ("modality", "modalities"),
            ("bodypartexamined", "body_parts"),
            ("manufacturer", "manufacturers"),
        ):
            for dataset, value in conn.execute(
                f"SELECT DISTINCT st.dataset, se.{column} FROM series se JOIN study st ON se.study_pk = st.pk"
                f" WHERE st.dataset IN ({marks}) AND se.{column} IS NOT NULL ORDER BY 1, 2",
                dataset_ids,
            ):
                out[dataset][key].append(value)
        return out

    def datasets_with_modality(self, codes: list[str]) -> list[str]:
        marks = ", ".join("?" for _ in codes)
        rows = self.db.reader().execute(
            f"SELECT DISTINCT st.dataset FROM series se JOIN study st ON se.study_pk = st.pk"
            f" WHERE se.modality IN ({marks}) AND st.dataset IS NOT NULL",
            codes,
        )
        return [r[0] for r in rows]

    # -- Patient -----------------------------------------------------------
    def rekey_patients(self, key_of: PatientKey, fingerprint: str) -> int:
        """Recompute every study's pseudonymous Patient id when the key changed (or on upgrade
        from unkeyed ids); ``fingerprint`` names the key. Returns the number of studies rekeyed."""
        with self.db.write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS patient_key_state (fingerprint TEXT NOT NULL)")
            row = conn.execute("SELECT fingerprint FROM patient_key_state").fetchone()
            if row is not None and row[0] == fingerprint:
                return 0
            if row is None and conn.execute("SELECT 1 FROM study LIMIT 1").fetchone() is None:
                conn.execute("INSERT INTO patient_key_state VALUES (?)", (fingerprint,))
                return 0  # a new index: its rows will be written with this key
            changed = []
            for pk, blob, old in conn.execute("SELECT pk, json, patient_key FROM study"):
                data = orjson.loads(blob)
                new = key_of(data)
                if new != old:
                    changed.append((new, pk))
            conn.executemany("UPDATE study SET patient_key = ? WHERE pk = ?", changed)
            conn.execute("DELETE FROM patient_key_state")
            conn.execute("INSERT INTO patient_key_state VALUES (?)", (fingerprint,))
            return len(changed)

    def search_patients(self, req: SearchRequest) -> StudyPage:
        where, params = self.patient_where(req)
        desc = req.sort[-1][1] if req.sort else False
        if req.total == "accurate" or req.summary == "count":
            inner = f"(SELECT patient_key, min(pk) AS pk FROM study st WHERE {where} GROUP BY patient_key)"
        else:  # keyset inside the grouping: a page groups its own patients, not all before it
            kwhere, kparams, korder, _ = keyset([("st.patient_key", desc)], req.position)
            inner = (
                f"(SELECT patient_key, min(pk) AS pk FROM study st WHERE {where}"
                f"{' AND ' + kwhere if kwhere else ''} GROUP BY st.patient_key ORDER BY {korder}"
                f" LIMIT {max(0, req.count) + 1})"
            )
            params = [*params, *kparams]
        sub = f"{inner} p JOIN study st ON st.pk = p.pk"
        return self._page(sub, "1 = 1", params, [("p.patient_key", desc)], req, _STUDY_COLUMNS)

    def patient(self, key: str, datasets: frozenset[str] | None = None) -> StudyRow | None:
        """One study row of the patient, within ``datasets`` when given."""
        clauses, params = _restrict(datasets)
        sql = (
            f"SELECT {_STUDY_COLUMNS} FROM study st WHERE st.patient_key = ?"
            f" AND {' AND '.join(clauses)} ORDER BY st.pk LIMIT 1"
        )
        row = self.db.reader().execute(sql, [key, *params]).fetchone()
        return _study_row(row) if row else None

    def patient_where(self, req: SearchRequest) -> tuple[str, list[Any]]:
        clauses, params = _restrict(req.restrict)
        for c in req.criteria:
            if c.modifier == "missing":
                column = {
                    "identifier": "st.patientid",
                    "gender": "st.patientsex",
                    "birthdate": "st.patientbirthdate",
                }.get(c.param.name)
                if column is None:
                    raise InvalidQuery(
                        f":missing is not supported on Patient {c.param.name}", c.param.name
                    )
                clauses.append(f"{column} IS {'' if c.values[0] else 'NOT '}NULL")
                continue
            handler = _PATIENT_HANDLERS.get(c.param.name)
            if handler is None:
                raise InvalidQuery(
                    f"Patient search by {c.param.name} is not supported", c.param.name
                )
            parts = [handler(v) for v in c.values]
            sql = " OR ".join(f"({p})" for p, _ in parts)
            clauses.append(f"NOT ({sql})" if c.modifier == "not" else f"({sql})")
            params += [x for _, ps in parts for x in ps]
        return " AND ".join(clauses), params

    # -- paging ------------------------------------------------------------
    def _page(
        self,
        source: str,
        where: str,
        params: list[Any],
        order: list[tuple[str, bool]],
        req: SearchRequest,
        columns: str,
    ) -> StudyPage:
        page = fetch_page(self.db.reader(), columns, source, where, params, order, req)
        return StudyPage(
            [_study_row(r) for r in page.rows], page.total, page.next_cursor, page.previous_cursor
        )


_STUDY_COLUMNS = "st.pk, st.json, st.dataset, st.patient_key, st.updated, st.modalities, st.num_series, st.num_instances"
_STUDY_SORT = {
    "started": "coalesce(st.started_lo, '')",
    "_lastUpdated": "st.updated",
    "_id": "st.studyinstanceuid",
}


def empty_statistics(dataset_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Catalogue figures of datasets with no study yet."""
    return {d: {"subjects": 0, "studies": 0, "modalities": [], "body_parts": [], "manufacturers": [],
                "sexes": [], "first_date": None, "last_date": None}
            for d in dataset_ids}  # fmt: skip


def _restrict(datasets: frozenset[str] | None) -> tuple[list[str], list[Any]]:
    if datasets is None:
        return ["1 = 1"], []
    if not datasets:
        return ["1 = 0"], []
    return [f"st.dataset IN ({', '.join('?' for _ in datasets)})"], sorted(datasets)


def _study_row(row: tuple[Any, ...]) -> StudyRow:
    data = orjson.loads(row[1])
    modalities = row[5].split("\\") if row[5] else []
    data["00080061"] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    data["00201206"] = {"vr": "IS", "Value": [row[6]]}
    data["00201208"] = {"vr": "IS", "Value": [row[7]]}
    return StudyRow(row[0], data, row[2], row[3], row[4])


def _oid(code: str | None) -> str:
    return (code or "").removeprefix("urn:oid:")


def _identifier(q: DicomFhirQueries, v: Any) -> tuple[str, list[Any]]:
    assert isinstance(v, TokenValue)
    if v.system == "urn:dicom:uid":
        return "st.studyinstanceuid = ?", [_oid(v.code)]
    if v.system:
        return "st.accessionnumber = ?", [v.code]
    return "st.studyinstanceuid = ? OR st.accessionnumber = ?", [_oid(v.code), v.code]


def _reference_key(v: Any, column: str, expected: str) -> tuple[str, list[Any]]:
    assert isinstance(v, ReferenceValue)
    if v.type not in (None, expected):
        return "1 = 0", []
    return f"{column} = ?", [v.id]


def _bodysite(q: DicomFhirQueries, v: Any) -> tuple[str, list[Any]]:
    assert isinstance(v, TokenValue)
    if v.system not in (None, SNOMED, BODY_PART_SYSTEM):
        return "1 = 0", []
    terms = sorted({*q.body_part_terms(v.code or ""), (v.code or "").upper()})
    return q._exists("bodypartexamined", terms)


_STUDY_HANDLERS: dict[str, Callable[[DicomFhirQueries, Any], tuple[str, list[Any]]]] = {
    "_id": lambda q, v: ("st.studyinstanceuid = ?", [v.code]),
    "_lastUpdated": lambda q, v: date_sql(UPDATED, UPDATED, v),
    "identifier": _identifier,
    "patient": lambda q, v: _reference_key(v, "st.patient_key", "Patient"),
    "subject": lambda q, v: _reference_key(v, "st.patient_key", "Patient"),
    "dataset": lambda q, v: _reference_key(v, "st.dataset", "ResearchStudy"),
    "started": lambda q, v: _started(v),
    "modality": lambda q, v: (
        q._exists("modality", [v.code]) if v.system in (None, DCM) else ("1 = 0", [])
    ),
    "bodysite": _bodysite,
    "series": lambda q, v: q._uids("seriesinstanceuid", "series", [_oid(v.code)]),
    "instance": lambda q, v: q._uids("sopinstanceuid", "instance", [_oid(v.code)]),
    "dicom-class": lambda q, v: q._uids("sopclassuid", "instance", [_oid(v.code)]),
    "endpoint": lambda q, v: ("1 = 1", []) if v.id == q.endpoint_id else ("1 = 0", []),
    "status": lambda q, v: ("1 = 1", []) if v.code == "available" else ("1 = 0", []),
}


def _started(v: DateValue) -> tuple[str, list[Any]]:
    """Date prefixes on StudyDate/Time, plus an implied lower bound on ``started_lo``.

    A study's started range is at most one day wide (a date without time), so any
    prefix that implies ``started_hi >= low`` also implies ``started_lo >= low - 1 day``.
    With that bound every range query scans one index range.
    """
    sql, params = date_sql("st.started_lo", "st.started_hi", v)
    floor = started_floor(v)
    if floor is not None:
        sql, params = f"({sql}) AND st.started_lo >= ?", [*params, floor]
    return sql, params


def started_floor(v: DateValue) -> str | None:
    """The implied lower bound on started_lo (a study's range is at most one day wide), or None."""
    if v.prefix not in ("eq", "gt", "ge", "sa") or v.low[:10] <= "0001-01-01":
        return None
    return (datetime.strptime(v.low[:10], "%Y-%m-%d") - timedelta(days=1)).strftime("%Y-%m-%d")


# FHIR :missing on ImagingStudy: the study field whose absence it tests (both backends).
MISSING_FIELDS = {"started": "started_lo", "dataset": "dataset", "identifier": "accessionnumber"}


def _missing(name: str, missing: bool) -> tuple[str, list[Any]]:
    field = MISSING_FIELDS.get(name)
    if field is None:
        raise InvalidQuery(f":missing is not supported on ImagingStudy {name}", name)
    return f"st.{field} IS {'' if missing else 'NOT '}NULL", []


def _gender(v: Any) -> tuple[str, list[Any]]:
    codes = GENDER.get(v.code or "")
    if codes is None:  # unknown: anything not M/F/O
        return "st.patientsex IS NULL OR st.patientsex NOT IN ('M', 'F', 'O')", []
    return "st.patientsex = ?", codes


_BIRTH_LO = "substr(st.patientbirthdate, 1, 4) || '-01-01T00:00:00.000000'"
_BIRTH_HI = "substr(st.patientbirthdate, 1, 4) || '-12-31T23:59:59.999999'"

_PATIENT_HANDLERS: dict[str, Callable[[Any], tuple[str, list[Any]]]] = {
    "_id": lambda v: ("st.patient_key = ?", [v.code]),
    "identifier": lambda v: ("st.patientid = ?", [v.code]),
    "gender": _gender,
    "birthdate": lambda v: date_sql(_BIRTH_LO, _BIRTH_HI, v),
}


__all__ = ["DateValue", "DicomFhirQueries", "StudyPage", "StudyRow"]
