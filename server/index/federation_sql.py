"""EUCAIM federated search on the SQLite index: counts per dataset, aggregated in SQL.

One ``SELECT dataset, count(*), count(DISTINCT patient_key) ... GROUP BY dataset`` per
distinct plan; series conditions are ``EXISTS`` over the study's series (the reference
mediator's SQL shape). Age and year are computed here exactly as
``server.core.federation.facts`` computes them for the Elasticsearch index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.core.federation.plan import And, Const, Diagnosis, Exists, Expr, Number, Or, Text
from server.core.federation.vocabulary import Field
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
    Field.AGE: "st.fed_age",
    Field.YEAR: "st.fed_year",
    Field.MODALITY: "se.modality",
    Field.BODY_PART: "upper(se.bodypartexamined)",
    Field.MANUFACTURER: "se.manufacturer",
}


# Age and year are virtual generated columns of ``study`` with indexes, so a range or a
# per-dataset min/max is an index scan rather than a JSON parse per row. Added once to
# index databases made before (idempotent; the write lock serialises worker processes).
_GENERATED = {"fed_age": _AGE, "fed_year": _YEAR}
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_fed_age ON study(dataset, fed_age)",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_fed_year ON study(dataset, fed_year)",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_patient ON study(dataset, patient_key)",
    "CREATE INDEX IF NOT EXISTS ix_study_dataset_sex ON study(dataset, patientsex, patient_key)",
]


class SqlFederation:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        with db.write() as conn:
            present = {row[1] for row in conn.execute("PRAGMA table_xinfo(study)")}
            for name, expression in _GENERATED.items():
                if name not in present:
                    conn.execute(
                        f"ALTER TABLE study ADD COLUMN {name} INTEGER"
                        f" GENERATED ALWAYS AS ({expression}) VIRTUAL"
                    )
            for statement in _INDEXES:
                conn.execute(statement)

    def federation_counts(
        self, groups: Sequence[tuple[Expr, Sequence[str]]]
    ) -> dict[str, tuple[int, int]]:
        """(studies, subjects) matching each plan, per dataset of its group; absent: none."""
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
        """Whole-dataset age range (completed years) and sexes (None: some study has none)."""
        out = {d: DatasetProfile() for d in datasets}
        conn = self.db.reader()
        for dataset in datasets:  # per dataset: each is an index seek, not a scan
            p = out[dataset]
            for order in ("ASC", "DESC"):
                row = conn.execute(
                    "SELECT fed_age FROM study INDEXED BY ix_study_dataset_fed_age WHERE dataset = ?"
                    f" AND fed_age IS NOT NULL ORDER BY fed_age {order} LIMIT 1",
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
