"""Start-up of the embedded index does no per-row work once it is migrated.

Migrations are versioned and recorded (``index_migration``): a database created now is
born migrated, one made by an earlier release gets the schema step at open and its
backfill once, in batches, in the background. The measure of "per-row work" is SQLite's
own: the virtual-machine steps of every statement the start-up runs (a progress handler
on every connection the gateway opens), at 60 studies and at 3,000.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from server.app import build_gateway
from server.core.attributes import Level
from server.core.records import InstanceRecord, patient_key
from server.index.federation_sql import FIRST_STUDY_MIGRATION
from server.index.sqlite import SqliteIndex
from server.security.keys import InstallationSecret
from server.settings import Settings
from tests.contract.conftest import record_of  # noqa: F401  (fixture)

Build = Callable[..., InstanceRecord]


def as_made_before_first_study(path: Path) -> None:
    """Turn an index database into one written by the release before the first-study
    migration existed: no columns, triggers, indexes or record of it."""
    conn = sqlite3.connect(path)
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'fed_first_%'"
    ).fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    for name in ("first_age", "first_year", "patient", "sex"):
        conn.execute(f"DROP INDEX IF EXISTS ix_study_dataset_{name}")
    for column in ("fed_first_age", "fed_first_year", "fed_age", "fed_year"):
        conn.execute(f"ALTER TABLE study DROP COLUMN {column}")
    conn.execute("DROP TABLE index_migration")
    conn.commit()
    conn.close()


def _studies(
    template: InstanceRecord, first: int, count: int, key: bytes
) -> Iterator[InstanceRecord]:
    """Copies of one record as new studies of their own, two per patient."""
    for n in range(first, first + count):
        study, patient = f"2.25.77{n}", f"P{n // 2}"
        study_json = orjson.loads(template.level_json[Level.STUDY])
        study_json["0020000D"] = {"vr": "UI", "Value": [study]}
        study_json["00100020"] = {"vr": "LO", "Value": [patient]}
        columns = {level: dict(values) for level, values in template.columns.items()}
        columns[Level.STUDY].update(studyinstanceuid=study, patientid=patient)
        columns[Level.SERIES].update(seriesinstanceuid=f"2.25.78{n}")
        columns[Level.INSTANCE].update(sopinstanceuid=f"2.25.79{n}")
        yield dataclasses.replace(
            template,
            study_uid=study, series_uid=f"2.25.78{n}", sop_uid=f"2.25.79{n}",
            columns=columns,
            level_json={**template.level_json, Level.STUDY: orjson.dumps(study_json)},
            blob_key=f"k{n}", sha256=f"s{n}", patient_key=patient_key(key, study_json),
        )  # fmt: skip


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """VM steps (in units of 100) of every SQLite connection opened from now on."""
    steps = [0]
    connect = sqlite3.connect

    def counting(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]

        def tick() -> int:
            steps[0] += 1
            return 0

        conn.set_progress_handler(tick, 100)
        return conn

    monkeypatch.setattr(sqlite3, "connect", counting)
    return steps


def _data_dir(tmp: Path, studies: int, record_of: Build) -> Path:  # noqa: F811
    """A data directory served once (empty), then filled with ``studies`` studies."""
    data = tmp / f"data{studies}"
    build_gateway(Settings(data_dir=data)).close()
    key = InstallationSecret.load_or_create(data).patient_id_key()
    index = SqliteIndex(data / "index.sqlite")
    for first in range(0, studies, 1000):
        index.add_instances(list(_studies(record_of(), first, min(1000, studies - first), key)), overwrite=False)  # fmt: skip
    index.close()
    return data


def _start_steps(data: Path, counted: list[int]) -> int:
    counted[0] = 0
    gateway = build_gateway(Settings(data_dir=data))
    gateway.recover()
    assert gateway.migrations.pending() == []
    gateway.close()
    return counted[0]


def test_start_on_a_migrated_index_does_the_same_work_at_60_and_3000_studies(
    tmp_path: Path,
    record_of: Build,  # noqa: F811
    counted: list[int],
) -> None:
    small = _data_dir(tmp_path, 60, record_of)
    large = _data_dir(tmp_path, 3000, record_of)
    _start_steps(small, counted)  # warm caches of the process (imports, conformance)
    at_60, at_3000 = _start_steps(small, counted), _start_steps(large, counted)
    # a whole start is ~1,000 VM steps; a statement visiting every row at start (a
    # backfill, a re-key scan: 15,000 steps at 3,000 studies) is 150 units of 100
    assert at_3000 - at_60 < 100, (at_60, at_3000)


def test_start_after_an_upgrade_records_the_migration_and_backfills_once(
    tmp_path: Path,
    record_of: Build,  # noqa: F811
    counted: list[int],
) -> None:
    data = _data_dir(tmp_path, 3000, record_of)
    as_made_before_first_study(data / "index.sqlite")
    first = build_gateway(Settings(data_dir=data))  # schema step only: no backfill at open
    assert first.migrations.pending() == [FIRST_STUDY_MIGRATION]
    migrations = first.migrations.migrations
    assert migrations is not None
    assert migrations.run_backfills() == 3000  # what the background thread runs
    assert first.migrations.pending() == []
    first.close()
    conn = sqlite3.connect(data / "index.sqlite")
    unfilled = conn.execute(
        "SELECT count(*) FROM study WHERE fed_first_year IS NOT (SELECT fed_year FROM study s"
        " WHERE s.patient_key = study.patient_key ORDER BY s.studydate, s.studyinstanceuid LIMIT 1)"
    ).fetchone()[0]
    state = conn.execute("SELECT state, progress FROM index_migration").fetchall()
    conn.close()
    assert unfilled == 0
    assert state == [("done", 3000)]
    small = _data_dir(tmp_path, 60, record_of)
    _start_steps(small, counted)
    assert _start_steps(data, counted) - _start_steps(small, counted) < 100
