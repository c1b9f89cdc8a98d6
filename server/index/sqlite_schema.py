"""SQLite schema generated from the attribute table (server.core.attributes)."""

from __future__ import annotations

from server.core.attributes import MATCHING, Level

SCHEMA_VERSION = 2

_TABLE = {Level.STUDY: "study", Level.SERIES: "series", Level.INSTANCE: "instance"}
_PARENT_COLUMNS = {
    Level.STUDY: "",
    Level.SERIES: "study_pk INTEGER NOT NULL REFERENCES study(pk),",
    Level.INSTANCE: (
        "series_pk INTEGER NOT NULL REFERENCES series(pk),"
        " study_pk INTEGER NOT NULL REFERENCES study(pk),"
    ),
}
_EXTRA = {
    Level.STUDY: "dataset TEXT, patient_key TEXT NOT NULL DEFAULT '', started_lo TEXT,"
    " started_hi TEXT, modalities TEXT, num_series INTEGER NOT NULL DEFAULT 0,"
    " num_instances INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,",
    Level.SERIES: "num_instances INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL,",
    Level.INSTANCE: "transfer_syntax TEXT NOT NULL, blob_key TEXT NOT NULL UNIQUE,"
    " size INTEGER NOT NULL, sha256 TEXT NOT NULL, pixel_index BLOB, updated REAL NOT NULL,",
}
_UID_COLUMN = {
    Level.STUDY: "studyinstanceuid",
    Level.SERIES: "seriesinstanceuid",
    Level.INSTANCE: "sopinstanceuid",
}


def table(level: Level) -> str:
    return _TABLE[level]


def uid_column(level: Level) -> str:
    return _UID_COLUMN[level]


def level_columns(level: Level) -> list[str]:
    """Matching columns of a level in schema order (PN attributes add a ``_fuzzy`` twin)."""
    out: list[str] = []
    for spec in MATCHING.values():
        if spec.level is level:
            out.append(spec.column)
            if spec.vr == "PN":
                out.append(spec.column + "_fuzzy")
    return out


def _sql_type(column: str) -> str:
    for spec in MATCHING.values():
        if spec.column == column and spec.vr in ("IS", "US"):
            return "INTEGER"
    return "TEXT"


def create_statements() -> list[str]:
    statements = []
    for level in Level:
        cols = []
        for column in level_columns(level):
            constraint = " NOT NULL UNIQUE" if column == _UID_COLUMN[level] else ""
            cols.append(f"{column} {_sql_type(column)}{constraint}")
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {_TABLE[level]} (pk INTEGER PRIMARY KEY, "
            f"{_PARENT_COLUMNS[level]} {', '.join(cols)}, {_EXTRA[level]} json BLOB NOT NULL)"
        )
        for column in level_columns(level):
            if column != _UID_COLUMN[level] and not column.endswith("_fuzzy"):
                statements.append(
                    f"CREATE INDEX IF NOT EXISTS ix_{_TABLE[level]}_{column} "
                    f"ON {_TABLE[level]}({column})"
                )
    statements += [
        "CREATE INDEX IF NOT EXISTS ix_series_study ON series(study_pk, seriesnumber)",
        "CREATE INDEX IF NOT EXISTS ix_study_dataset ON study(dataset)",
        "CREATE INDEX IF NOT EXISTS ix_study_patient_key ON study(patient_key)",
        "CREATE INDEX IF NOT EXISTS ix_study_started ON study(started_lo, pk)",
        "CREATE INDEX IF NOT EXISTS ix_study_started_hi ON study(started_hi)",
        "CREATE INDEX IF NOT EXISTS ix_series_bodypart_study ON series(bodypartexamined, study_pk)",
        "CREATE INDEX IF NOT EXISTS ix_study_updated ON study(updated, pk)",
        "CREATE INDEX IF NOT EXISTS ix_series_modality_study ON series(modality, study_pk)",
        "CREATE INDEX IF NOT EXISTS ix_instance_series ON instance(series_pk, instancenumber)",
        "CREATE INDEX IF NOT EXISTS ix_instance_study ON instance(study_pk)",
        "CREATE TABLE IF NOT EXISTS instance_metadata (instance_pk INTEGER PRIMARY KEY"
        " REFERENCES instance(pk), metadata BLOB NOT NULL)",
        # De-identification record per instance (admin-only; names of attributes, never
        # values). A side table, so databases made before it gain it on open; their
        # instances have no row (stored before de-identification on ingest).
        "CREATE TABLE IF NOT EXISTS instance_deid (instance_pk INTEGER PRIMARY KEY"
        " REFERENCES instance(pk), record BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL)",
    ]
    return statements
