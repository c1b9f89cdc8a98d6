"""EUCAIM federated search on the SQLite index: counts per dataset, aggregated in SQL.

One ``SELECT dataset, count(*), count(DISTINCT patient_key) ... GROUP BY dataset`` per
distinct plan; series conditions are ``EXISTS`` over the study's series (the reference
mediator's SQL shape). Age and year are computed here exactly as
``server.core.federation.facts`` computes them for the Elasticsearch index.

Age and year at diagnosis are the patient's first-study values (``facts.first_study``),
stored on every study of the patient (``fed_first_age``, ``fed_first_year``) by triggers:
inserting, deleting or re-keying a study recomputes them for the patient's studies in the
dataset, in the writing transaction, whichever code path writes (ingest, replace, delete,
repair). Indexes made before get the columns and triggers at start, and the values of their
older studies from a batched background backfill (an index migration, sqlite_migrations).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from server.core.federation.plan import And, Const, Diagnosis, Exists, Expr, Number, Or, Text
from server.core.federation.vocabulary import Field
from server.errors import ServiceUnavailable
from server.index.base import DatasetProfile
from server.index.sqlite_db import SqliteDatabase

_PA = "json_extract(CAST(json AS TEXT), '$.\"00101010\".Value[0]')"
_PA_N = f"CAST(substr({_PA}, 1, 3) AS INTEGER)"
_DA = "'[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'"
_AGE = (
    f"CASE WHEN {_PA} GLOB '[0-9][0-9][0-9][YMWD]' THEN CASE substr({_PA}, 4, 1)"
    f" WHEN 'Y' THEN {_PA_N} WHEN 'M' THEN {_PA_N} / 12 WHEN 'W' THEN {_PA_N} * 7 / 365"
    f" ELSE {_PA_N} / 365 END"
    f" WHEN studydate GLOB {_DA} AND patientbirthdate GLOB {_DA} AND"
    " CAST(substr(studydate, 1, 4) AS INTEGER) - CAST(substr(patientbirthdate, 1, 4) AS INTEGER)"
    " - (substr(studydate, 5) < substr(patientbirthdate, 5)) >= 0"
    " THEN CAST(substr(studydate, 1, 4) AS INTEGER) - CAST(substr(patientbirthdate, 1, 4) AS INTEGER)"
    " - (substr(studydate, 5) < substr(patientbirthdate, 5)) END"
)
_YEAR = f"CASE WHEN studydate GLOB {_DA} THEN CAST(substr(studydate, 1, 4) AS INTEGER) END"
_COLUMN = {
    Field.SEX: "nullif(st.patientsex, '')",
    Field.AGE: "st.fed_first_age",
    Field.YEAR: "st.fed_first_year",
    Field.MODALITY: "se.modality",
    Field.BODY_PART: "upper(se.bodypartexamined)",
    Field.MANUFACTURER: "se.manufacturer",
}


# Age and year at each study are virtual generated columns of ``study`` (a JSON parse when
# read); the patient's first-study values are plain indexed columns kept by triggers, so a
# range or a per-dataset min/max is an index scan. Added once to index databases made
# before, as a recorded index migration (the write lock serialises worker processes).
_GENERATED = {"fed_age": _AGE, "fed_year": _YEAR}


# The first-study order (facts.first_order): dated studies first, earliest, then the UID.
def _first_order(t: str = "") -> str:
    return (
        f"ORDER BY ({t}studydate GLOB {_DA}) DESC, CASE WHEN {t}studydate GLOB {_DA} THEN"
        f" {t}studydate END, {t}studyinstanceuid"
    )


_FIRST_ORDER = _first_order()


def _recompute(row: str) -> str:
    """The statement a trigger runs for the patient of ``row`` (NEW or OLD)."""
    return (
        "UPDATE study SET fed_first_age = f.a, fed_first_year = f.y FROM (SELECT fed_age AS a,"
        f" fed_year AS y FROM study WHERE dataset IS {row}.dataset AND patient_key ="
        f" {row}.patient_key {_FIRST_ORDER} LIMIT 1) AS f WHERE dataset IS {row}.dataset AND"
        f" patient_key = {row}.patient_key AND (fed_first_age IS NOT f.a OR fed_first_year IS NOT f.y);"
    )


_FIRST = {"fed_first_age", "fed_first_year"}
# One backfill batch: the first-study values of the studies with pk in (after, upto], read
# from each one's patient (an index seek on (dataset, patient_key) per study).
_BACKFILL = (
    "UPDATE study SET (fed_first_age, fed_first_year) = (SELECT s.fed_age, s.fed_year FROM study s"
    " WHERE s.dataset IS study.dataset AND s.patient_key = study.patient_key"
    f" {_first_order('s.')}"
    " LIMIT 1) WHERE pk > ? AND pk <= ?"
)
# Triggers are versioned by name: a changed rule gets a new name and drops the old one.
_TRIGGERS = {
    "fed_first_v1_insert": f"AFTER INSERT ON study BEGIN {_recompute('NEW')} END",
    "fed_first_v1_delete": f"AFTER DELETE ON study BEGIN {_recompute('OLD')} END",
    "fed_first_v1_update": "AFTER UPDATE OF studyinstanceuid, studydate, patientbirthdate, json,"
    f" dataset, patient_key ON study BEGIN {_recompute('OLD')} {_recompute('NEW')} END",
}
_INDEXES = [
    # per-study age/year are no longer searched: their indexes (earlier releases) go
    "DROP INDEX IF EXISTS ix_study_dataset_fed_age",
    "DROP INDEX IF EXISTS ix_study_dataset_fed_year",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_first_age ON study(dataset, fed_first_age)",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_first_year ON study(dataset, fed_first_year)",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_patient ON study(dataset, patient_key)",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_sex ON study(dataset, patientsex, patient_key)",
]
FIRST_STUDY_MIGRATION = "federation-first-study-v1"


def first_study_schema(conn: sqlite3.Connection) -> bool:
    """Columns, triggers and indexes of the first-study values (an index migration's schema
    step); True when the values columns were added now, so older rows need the backfill.
    Indexes of earlier releases that added them at every start already have them filled."""
    present = {row[1] for row in conn.execute("PRAGMA table_xinfo(study)")}
    for name, expression in _GENERATED.items():
        if name not in present:
            conn.execute(
                f"ALTER TABLE study ADD COLUMN {name} INTEGER"
                f" GENERATED ALWAYS AS ({expression}) VIRTUAL"
            )
    added = sorted(_FIRST - present)
    for name in added:
        conn.execute(f"ALTER TABLE study ADD COLUMN {name} INTEGER")
    triggers = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'fed_first_%'"
    ).fetchall()
    for (old,) in triggers:
        if old not in _TRIGGERS:
            conn.execute(f"DROP TRIGGER {old}")
    for name, body in _TRIGGERS.items():
        conn.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
    for statement in _INDEXES:
        conn.execute(statement)
    return bool(added)


def first_study_backfill(conn: sqlite3.Connection, after: int, upto: int) -> None:
    conn.execute(_BACKFILL, (after, upto))


class SqlFederation:
    """Counts on the SQLite index; its schema is the index migration FIRST_STUDY_MIGRATION.
    ``ready`` says whether that migration's backfill is done: until then the first-study
    values of older studies are unknown and searches answer 503."""

    def __init__(self, db: SqliteDatabase, ready: Callable[[], bool] = lambda: True) -> None:
        self.db = db
        self.ready = ready

    def _check_ready(self) -> None:
        if not self.ready():
            raise ServiceUnavailable(
                "the index is being migrated (first-study ages and years); retry later", 30
            )

    def federation_counts(
        self, groups: Sequence[tuple[Expr, Sequence[str]]]
    ) -> dict[str, tuple[int, int]]:
        """(studies, subjects) matching each plan, per dataset of its group; absent: none."""
        self._check_ready()
        out: dict[str, tuple[int, int]] = {}
        conn = self.db.reader()
        for plan, datasets in groups:
            if not datasets or plan == Const(False):
                continue
            where, params = _sql(plan)
            marks = ", ".join("?" for _ in datasets)
            rows = conn.execute(
                f"SELECT st.dataset, count(*), count(DISTINCT st.patient_key) FROM study st"
                f" WHERE st.dataset IN ({marks}) AND ({where}) GROUP BY st.dataset",
                [*datasets, *params],
            )
            for dataset, studies, subjects in rows:
                out[dataset] = (studies, subjects)
        return out

    def federation_profiles(self, datasets: Sequence[str]) -> dict[str, DatasetProfile]:
        """Whole-dataset range of the age at diagnosis (completed years at each patient's
        first study) and sexes (None: some study has none)."""
        self._check_ready()
        out = {d: DatasetProfile() for d in datasets}
        conn = self.db.reader()
        for dataset in datasets:  # per dataset: each is an index seek, not a scan
            p = out[dataset]
            for order in ("ASC", "DESC"):
                row = conn.execute(
                    "SELECT fed_first_age FROM study INDEXED BY ix_study_dataset_first_age"
                    " WHERE dataset = ? AND fed_first_age IS NOT NULL"
                    f" ORDER BY fed_first_age {order} LIMIT 1",
                    (dataset,),
                ).fetchone()
                if row is not None:
                    p.age_min, p.age_max = (
                        (row[0], p.age_max) if order == "ASC" else (p.age_min, row[0])
                    )
            p.sexes = {
                sex or None
                for (sex,) in conn.execute(
                    "SELECT DISTINCT patientsex FROM study INDEXED BY ix_study_dataset_sex"
                    " WHERE dataset = ?",
                    (dataset,),
                )
            }
        return out


def _sql(expr: Expr) -> tuple[str, list[Any]]:
    if isinstance(expr, Const):
        return ("1" if expr.value else "0"), []
    if isinstance(expr, And | Or):
        parts = [_sql(c) for c in expr.children]
        joiner = " AND " if isinstance(expr, And) else " OR "
        return joiner.join(f"({p})" for p, _ in parts), [x for _, ps in parts for x in ps]
    if isinstance(expr, Exists):
        inner, params = _sql(expr.series)
        return f"EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.pk AND ({inner}))", params
    if isinstance(expr, Text):
        return _text(expr)
    if isinstance(expr, Number):
        return _number(expr)
    if isinstance(expr, Diagnosis):  # resolved per dataset before querying
        raise ValueError("diagnosis conditions must be resolved before querying")
    raise TypeError(expr)


def _text(t: Text) -> tuple[str, list[Any]]:
    column = _COLUMN[t.field]
    matches: list[str] = []
    params: list[Any] = []
    if t.values and t.contains:
        matches += [f"{column} LIKE ? ESCAPE '\\'" for _ in t.values]
        params += [f"%{_escape_like(v)}%" for v in t.values]
    elif t.values:
        matches.append(f"{column} IN ({', '.join('?' for _ in t.values)})")
        params += list(t.values)
    if t.negate:
        hit = " OR ".join(matches)
        return (f"{column} IS NOT NULL AND NOT ({hit})" if hit else f"{column} IS NOT NULL"), params
    if t.null:
        matches.insert(0, f"{column} IS NULL")
    return " OR ".join(matches), params


def _number(n: Number) -> tuple[str, list[Any]]:
    column = _COLUMN[n.field]
    parts: list[str] = []
    params: list[Any] = []
    if n.low is not None:
        parts.append(f"{column} {'>=' if n.low_inclusive else '>'} ?")
        params.append(n.low)
    if n.high is not None:
        parts.append(f"{column} {'<=' if n.high_inclusive else '<'} ?")
        params.append(n.high)
    if n.not_equal is not None:
        parts.append(f"{column} <> ?")
        params.append(n.not_equal)
    return " AND ".join(parts) or f"{column} IS NOT NULL", params


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
