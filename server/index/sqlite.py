"""Embedded SQLite index (default backend): WAL, one writer, a reader per thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

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
from server.index.federation_sql import (
    FIRST_STUDY_MIGRATION,
    first_study_backfill,
    first_study_schema,
)
from server.index.sqlite_db import SqliteDatabase
from server.index.sqlite_migrations import Migration, Migrations
from server.index.sqlite_query import search_sql, uid_clauses
from server.index.sqlite_schema import SCHEMA_VERSION, create_statements, level_columns
from server.metrics import metered

_INSTANCE_FIELDS = (
    "st.studyinstanceuid, se.seriesinstanceuid, i.sopinstanceuid, i.sopclassuid,"
    " i.transfer_syntax, i.blob_key, i.size, i.pixel_index"
)
_SCOPE_FROM = "instance i JOIN series se ON i.series_pk = se.pk JOIN study st ON i.study_pk = st.pk"
_ORDER = "ORDER BY se.seriesnumber, se.pk, i.instancenumber, i.pk"
# Recorded, in order (sqlite_migrations): a database that has them all does no work at open.
MIGRATIONS = [Migration(FIRST_STUDY_MIGRATION, first_study_schema, first_study_backfill)]
_REFUSED = (AddOutcome.CONFLICT, AddOutcome.HIERARCHY, AddOutcome.DATASET, AddOutcome.IDENTICAL)


class _Memo:
    """One reader's remembered :meth:`SqliteIndex.instances` answers, valid while the
    index's ``data_version`` is ``version``; at most ``ROWS`` instances in all (under 1 kB
    each: a few MB per worker thread at most)."""

    ROWS = 5_000

    def __init__(self, conn: sqlite3.Connection, version: int) -> None:
        self.conn = conn
        self.version = version
        self.entries: OrderedDict[Scope, list[StoredInstance]] = OrderedDict()
        self.rows = 0

    def keep(self, scope: Scope, found: list[StoredInstance]) -> None:
        """Remember ``found``; an entry costs one row more than it holds, so that empty
        answers (a caller probing UIDs that do not exist) are bounded too."""
        if len(found) >= self.ROWS:
            return
        self.entries[scope] = found
        self.rows += len(found) + 1
        while self.rows > self.ROWS:
            _, gone = self.entries.popitem(last=False)
            self.rows -= len(gone) + 1


@metered("sqlite")
class SqliteIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        fresh = not _has_study_table(path)
        self.db = SqliteDatabase(path, create_statements())
        with self.db.write() as conn:
            if conn.execute("SELECT count(*) FROM schema_info").fetchone()[0] == 0:
                conn.execute("INSERT INTO schema_info VALUES (?)", (SCHEMA_VERSION,))
        self.migrations = Migrations(self.db, MIGRATIONS, fresh=fresh)

    def _reader(self) -> sqlite3.Connection:
        return self.db.reader()

    def close(self) -> None:
        self.db.close()

    # -- writes ------------------------------------------------------------
    def add_instances(
        self, records: Sequence[InstanceRecord], *, overwrite: bool
    ) -> list[AddResult]:
        results: list[AddResult] = []
        with self.db.write() as conn:
            for record in records:
                # A refused record leaves no trace, even after an overwrite removed a row.
                conn.execute("SAVEPOINT record")
                result = self._add_one(conn, record, overwrite)
                if result.outcome in _REFUSED:
                    conn.execute("ROLLBACK TO record")
                conn.execute("RELEASE record")
                results.append(result)
        return results

    def _add_one(self, conn: sqlite3.Connection, rec: InstanceRecord, overwrite: bool) -> AddResult:
        existing = conn.execute(
            "SELECT i.pk, i.sha256, i.blob_key, st.dataset FROM instance i"
            " JOIN study st ON i.study_pk = st.pk WHERE i.sopinstanceuid = ?",
            (rec.sop_uid,),
        ).fetchone()
        replaced: str | None = None
        if existing is not None and existing[3] != rec.dataset:
            return AddResult(AddOutcome.DATASET)
        if existing is not None:
            if existing[1] == rec.sha256:
                return AddResult(AddOutcome.IDENTICAL)
            if not overwrite:
                return AddResult(AddOutcome.CONFLICT)
            replaced = existing[2]
            self._delete_instance_pks(conn, [existing[0]])
        study_pk = self._ensure_study(conn, rec)
        if study_pk is None:
            return AddResult(AddOutcome.DATASET)
        series = conn.execute(
            "SELECT pk, study_pk FROM series WHERE seriesinstanceuid = ?", (rec.series_uid,)
        ).fetchone()
        if series is not None and series[1] != study_pk:
            return AddResult(AddOutcome.HIERARCHY)
        series_pk = series[0] if series is not None else self._insert_series(conn, rec, study_pk)
        self._insert_instance(conn, rec, study_pk, series_pk)
        now = time.time()
        conn.execute(
            "UPDATE series SET num_instances = num_instances + 1, updated = ? WHERE pk = ?",
            (now, series_pk),
        )
        conn.execute(
            "UPDATE study SET num_instances = num_instances + 1, updated = ? WHERE pk = ?",
            (now, study_pk),
        )
        return AddResult(AddOutcome.REPLACED if replaced else AddOutcome.STORED, replaced)

    def _ensure_study(self, conn: sqlite3.Connection, rec: InstanceRecord) -> int | None:
        """The study's pk, inserting it if new; None if it belongs to another dataset."""
        row = conn.execute(
            "SELECT pk, dataset FROM study WHERE studyinstanceuid = ?", (rec.study_uid,)
        ).fetchone()
        if row is not None:
            return int(row[0]) if row[1] == rec.dataset else None
        values = rec.columns[Level.STUDY]
        cols = level_columns(Level.STUDY)
        cursor = conn.execute(
            f"INSERT INTO study ({', '.join(cols)}, dataset, patient_key, started_lo, started_hi,"
            f" updated, json) VALUES ({', '.join('?' for _ in cols)}, ?, ?, ?, ?, ?, ?)",
            [
                *(values.get(c) for c in cols),
                rec.dataset,
                rec.patient_key,
                *rec.started,
                time.time(),
                rec.level_json[Level.STUDY],
            ],
        )
        return int(cursor.lastrowid or 0)

    def _insert_series(self, conn: sqlite3.Connection, rec: InstanceRecord, study_pk: int) -> int:
        values = rec.columns[Level.SERIES]
        cols = level_columns(Level.SERIES)
        cursor = conn.execute(
            f"INSERT INTO series (study_pk, {', '.join(cols)}, updated, json) "
            f"VALUES (?, {', '.join('?' for _ in cols)}, ?, ?)",
            [study_pk, *(values.get(c) for c in cols), time.time(), rec.level_json[Level.SERIES]],
        )
        self._refresh_study_series(conn, [study_pk])
        return int(cursor.lastrowid or 0)

    def _insert_instance(
        self, conn: sqlite3.Connection, rec: InstanceRecord, study_pk: int, series_pk: int
    ) -> None:
        values = rec.columns[Level.INSTANCE]
        cols = level_columns(Level.INSTANCE)
        cursor = conn.execute(
            f"INSERT INTO instance (series_pk, study_pk, {', '.join(cols)}, transfer_syntax,"
            f" blob_key, size, sha256, pixel_index, updated, json) "
            f"VALUES (?, ?, {', '.join('?' for _ in cols)}, ?, ?, ?, ?, ?, ?, ?)",
            [
                series_pk,
                study_pk,
                *(values.get(c) for c in cols),
                rec.transfer_syntax,
                rec.blob_key,
                rec.size,
                rec.sha256,
                rec.pixel_index,
                time.time(),
                rec.level_json[Level.INSTANCE],
            ],
        )
        conn.execute(
            "INSERT INTO instance_metadata (instance_pk, metadata) VALUES (?, ?)",
            (cursor.lastrowid, rec.metadata),
        )
        if rec.deid is not None:
            conn.execute(
                "INSERT INTO instance_deid (instance_pk, record) VALUES (?, ?)",
                (cursor.lastrowid, rec.deid),
            )

    @staticmethod
    def _refresh_study_series(conn: sqlite3.Connection, study_pks: Sequence[int]) -> None:
        for pk in study_pks:
            conn.execute(
                "UPDATE study SET num_series = (SELECT count(*) FROM series WHERE study_pk = ?),"
                " modalities = (SELECT group_concat(m, '\\') FROM (SELECT DISTINCT modality AS m"
                " FROM series WHERE study_pk = ? AND modality IS NOT NULL ORDER BY m))"
                " WHERE pk = ?",
                (pk, pk, pk),
            )

    def _delete_instance_pks(self, conn: sqlite3.Connection, pks: Sequence[int]) -> None:
        if not pks:
            return
        marks = ", ".join("?" for _ in pks)
        rows = conn.execute(
            f"SELECT DISTINCT series_pk, study_pk FROM instance WHERE pk IN ({marks})", list(pks)
        ).fetchall()
        conn.execute(f"DELETE FROM instance_metadata WHERE instance_pk IN ({marks})", list(pks))
        conn.execute(f"DELETE FROM instance_deid WHERE instance_pk IN ({marks})", list(pks))
        conn.execute(f"DELETE FROM instance WHERE pk IN ({marks})", list(pks))
        now = time.time()
        for series_pk in {r[0] for r in rows}:
            conn.execute(
                "UPDATE series SET num_instances = (SELECT count(*) FROM instance"
                " WHERE series_pk = ?), updated = ? WHERE pk = ?",
                (series_pk, now, series_pk),
            )
            conn.execute("DELETE FROM series WHERE pk = ? AND num_instances = 0", (series_pk,))
        for study_pk in {r[1] for r in rows}:
            conn.execute(
                "UPDATE study SET num_instances = (SELECT count(*) FROM instance"
                " WHERE study_pk = ?), updated = ? WHERE pk = ?",
                (study_pk, now, study_pk),
            )
            conn.execute("DELETE FROM study WHERE pk = ? AND num_instances = 0", (study_pk,))
        self._refresh_study_series(conn, list({r[1] for r in rows}))

    def delete(self, scope: Scope) -> list[StoredInstance]:
        where, params = _scope_where(scope)
        with self.db.write() as conn:
            rows = conn.execute(
                f"SELECT i.pk, {_INSTANCE_FIELDS} FROM {_SCOPE_FROM} WHERE {where}", params
            ).fetchall()
            self._delete_instance_pks(conn, [r[0] for r in rows])
        return [StoredInstance(*r[1:]) for r in rows]

    def referenced(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        conn = self._reader()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            found.update(
                row[0]
                for row in conn.execute(
                    f"SELECT blob_key FROM instance WHERE blob_key IN ({marks})", chunk
                )
            )
        return found

    def remove_by_blob_keys(self, keys: Sequence[str]) -> int:
        removed = 0
        with self.db.write() as conn:
            for key in keys:
                row = conn.execute("SELECT pk FROM instance WHERE blob_key = ?", (key,)).fetchone()
                if row is not None:
                    self._delete_instance_pks(conn, [row[0]])
                    removed += 1
        return removed

    # -- reads -------------------------------------------------------------
    def find_by_sop(self, sop_uid: str) -> StoredInstance | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {_INSTANCE_FIELDS} FROM {_SCOPE_FROM} WHERE i.sopinstanceuid = ?",
                (sop_uid,),
            )
            .fetchone()
        )
        return StoredInstance(*row) if row else None

    def deid_record(self, sop_uid: str) -> tuple[str | None, bytes | None] | None:
        row = (
            self._reader()
            .execute(
                "SELECT st.dataset, d.record FROM instance i JOIN study st ON i.study_pk = st.pk"
                " LEFT JOIN instance_deid d ON d.instance_pk = i.pk WHERE i.sopinstanceuid = ?",
                (sop_uid,),
            )
            .fetchone()
        )
        return (row[0], row[1]) if row else None

    def study_dataset(self, study_uid: str) -> tuple[bool, str | None]:
        row = (
            self._reader()
            .execute("SELECT dataset FROM study WHERE studyinstanceuid = ?", (study_uid,))
            .fetchone()
        )
        return (True, row[0]) if row else (False, None)

    def instances(self, scope: Scope) -> list[StoredInstance]:
        """The instances at ``scope``, in retrieval order.

        Answers are remembered per reader connection (one per thread) until anything is
        committed to the index by any connection of any process, which SQLite's
        ``PRAGMA data_version`` of that reader tells exactly (readers never write): a
        series retrieved again, unchanged, costs one pragma instead of its rows."""
        conn = self._reader()
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        memo: _Memo | None = getattr(self._local, "memo", None)
        if memo is None or memo.conn is not conn or memo.version != version:
            memo = self._local.memo = _Memo(conn, version)  # (versions of one connection only)
        found = memo.entries.get(scope)
        if found is not None:
            memo.entries.move_to_end(scope)
            return list(found)
        where, params = _scope_where(scope)
        rows = conn.execute(
            f"SELECT {_INSTANCE_FIELDS} FROM {_SCOPE_FROM} WHERE {where} {_ORDER}", params
        ).fetchall()
        result = [StoredInstance(*r) for r in rows]
        memo.keep(scope, result)
        return list(result)

    def metadata(self, scope: Scope) -> Iterator[bytes]:
        where, params = _scope_where(scope)
        cursor = self._reader().execute(
            f"SELECT m.metadata FROM {_SCOPE_FROM} JOIN instance_metadata m"
            f" ON m.instance_pk = i.pk WHERE {where} {_ORDER}",
            params,
        )
        for (blob,) in cursor:
            yield bytes(blob)

    def search(self, query: QidoQuery) -> SearchPage:
        sql, params = search_sql(query)
        rows = self._reader().execute(sql, params).fetchall()
        has_more = len(rows) > query.limit
        return SearchPage([_merge_row(query, row) for row in rows[: query.limit]], has_more)

    def blob_keys(self) -> dict[str, str]:
        return dict(self._reader().execute("SELECT blob_key, sopinstanceuid FROM instance"))

    def counts(self) -> dict[str, int]:
        conn = self._reader()
        return {
            name: int(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
            for name in ("study", "series", "instance")
        }

    def ping(self) -> None:
        self._reader().execute(
            "SELECT (SELECT 1 FROM study LIMIT 1), (SELECT 1 FROM series LIMIT 1),"
            " (SELECT 1 FROM instance LIMIT 1)"
        ).fetchone()


def _has_study_table(path: Path) -> bool:
    if not path.exists():
        return False
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'study'"
        ).fetchone()
        return row is not None
    finally:
        conn.close()


def _scope_where(scope: Scope) -> tuple[str, list[Any]]:
    clauses, params = uid_clauses(scope.study_uid, scope.series_uid or None, scope.sop_uid or None)
    return " AND ".join(clauses), params


def _us(value: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [int(value)]}


def _merge_row(query: QidoQuery, row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    include_study = query.level is Level.STUDY or query.study_uid is None
    if include_study:
        out.update(orjson.loads(row[0]))
        modalities = row[1].split("\\") if row[1] else []
        out[f"{MODALITIES_IN_STUDY:08X}"] = (
            {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
        )
        out[f"{NUMBER_OF_STUDY_RELATED_SERIES:08X}"] = _us(row[2])
        out[f"{NUMBER_OF_STUDY_RELATED_INSTANCES:08X}"] = _us(row[3])
    if query.level is Level.SERIES or (query.level is Level.INSTANCE and query.series_uid is None):
        out.update(orjson.loads(row[4]))
        out[f"{NUMBER_OF_SERIES_RELATED_INSTANCES:08X}"] = _us(row[5])
    if query.level is Level.INSTANCE:
        if query.include_all and row[7] is not None:
            full = orjson.loads(row[7])
            out.update({k: v for k, v in full.items() if "BulkDataURI" not in v})
        out.update(orjson.loads(row[6]))
    return out
