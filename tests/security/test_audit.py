"""The audit trail: AuditEvents in a hash chain on real SQLite, tamper detection, search, CLI."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from server.security.audit import (
    CLIENT_ID_SYSTEM,
    GENESIS,
    AccessRecord,
    AuditLog,
    audit_event,
    verify,
)

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass

ROOT = Path(__file__).resolve().parents[2]


def _record(n: int = 0, **changes: object) -> AccessRecord:
    values: dict[str, object] = {
        "action": "search",
        "outcome": 0,
        "http_status": 200,
        "method": "GET",
        "path": "/dicom-web/studies",
        "query": f"PatientID=p{n}&limit=10",
        "source_address": "192.0.2.7",
        "client_id": "analysis-node",
        "subject": None,
        "agreements": ("agreement-1",),
        "purpose": "HRESCH",
        "datasets": ("lung-1",),
        "entities": (f"study:1.2.826.0.1.{n}",),
    }
    values.update(changes)
    return AccessRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "audit.sqlite"


@pytest.fixture
def log(log_path: Path) -> Iterator[AuditLog]:
    audit = AuditLog(log_path, flush_interval=0.02)
    yield audit
    audit.close()


def _filled(log_path: Path, n: int) -> None:
    audit = AuditLog(log_path)
    for i in range(n):
        audit.record(_record(i))
    audit.close()


def _tamper(log_path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Change the database the way someone with file access would (triggers dropped first)."""
    conn = sqlite3.connect(log_path)
    conn.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    for sql, args in statements:
        conn.execute(sql, args)
    conn.commit()
    conn.close()


def _rows(log_path: Path) -> list[tuple[int, bytes, str, str]]:
    conn = sqlite3.connect(log_path)
    rows = conn.execute(
        "SELECT seq, event, prev_hash, hash FROM audit_event ORDER BY seq"
    ).fetchall()
    conn.close()
    return rows


# -- the AuditEvent ---------------------------------------------------------------------------


def test_audit_event_is_a_valid_balp_style_r4_auditevent() -> None:
    record = _record(
        1,
        subject="alice",
        issuer="https://login.example.org",
        entities=("study:1.2.3", "ImagingStudy/1.2.3", "instance:1.2.3.4.5"),
        recorded=1_700_000_000.25,
    )
    event = audit_event(record, event_id="e1", observer="gw-test")
    parsed = AuditEvent.model_validate(event)
    assert parsed.id == "e1"
    assert event["type"]["code"] == "rest"
    assert event["subtype"][0] == {
        "system": "http://hl7.org/fhir/restful-interaction",
        "code": "search-type",
    }
    assert event["action"] == "E"
    assert event["outcome"] == "0"
    assert event["recorded"] == "2023-11-14T22:13:20.250000Z"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "HRESCH"
    client, user, server = event["agent"]
    assert client["who"]["identifier"] == {"system": CLIENT_ID_SYSTEM, "value": "analysis-node"}
    assert client["requestor"] is True
    assert client["network"] == {"address": "192.0.2.7", "type": "2"}
    assert user["who"]["identifier"] == {"system": "https://login.example.org", "value": "alice"}
    assert user["policy"] == ["Contract/agreement-1"]
    assert server["requestor"] is False
    assert event["source"]["observer"] == {"display": "gw-test"}
    assert event["source"]["type"][0]["code"] == "4"
    request, dataset, study, resource, instance = event["entity"]
    assert base64.b64decode(request["query"]).decode() == "PatientID=p1&limit=10"
    assert request["role"]["code"] == "24"
    assert request["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
        "code": "2",
        "display": "System Object",
    }
    assert dataset["what"] == {"reference": "ResearchStudy/lung-1"}
    assert study["what"]["identifier"]["value"] == "urn:oid:1.2.3"
    assert resource["what"] == {"reference": "ImagingStudy/1.2.3"}
    assert instance["what"]["identifier"]["value"] == "urn:oid:1.2.3.4.5"


@pytest.mark.parametrize(
    ("action", "method", "subtype", "crude"),
    [
        ("retrieve", "GET", "read", "R"),
        ("read", "GET", "read", "R"),
        ("store", "POST", "create", "C"),
        ("create", "POST", "create", "C"),
        ("delete", "DELETE", "delete", "D"),
        ("token", "POST", "operation", "E"),
        ("admin", "PUT", "update", "U"),
        ("admin", "GET", "read", "R"),
    ],
)
def test_actions_map_to_restful_interactions(
    action: str, method: str, subtype: str, crude: str
) -> None:
    record = _record(action=action, method=method, query=None, agreements=(), purpose=None)
    event = audit_event(record, event_id="x", observer="gw")
    AuditEvent.model_validate(event)
    assert event["subtype"][0]["code"] == subtype
    assert event["action"] == crude


def test_refused_and_failed_attempts_and_anonymous_callers_validate() -> None:
    refused = _record(
        outcome=4, http_status=403, client_id=None, agreements=(), source_address="gw.local"
    )
    event = audit_event(refused, event_id="r", observer="gw")
    AuditEvent.model_validate(event)
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "HTTP 403 Forbidden"
    assert event["agent"][0]["who"] == {"display": "anonymous"}
    assert event["agent"][0]["network"]["type"] == "1"
    failed = audit_event(_record(outcome=8, http_status=500), event_id="f", observer="gw")
    AuditEvent.model_validate(failed)
    assert failed["outcome"] == "8"
    with pytest.raises(ValueError):
        audit_event(_record(outcome=3), event_id="bad", observer="gw")


# -- the chain --------------------------------------------------------------------------------


def test_records_are_stored_in_order_with_a_valid_chain(log: AuditLog, log_path: Path) -> None:
    for i in range(25):
        log.record(_record(i))
    log.flush()
    assert log.count() == 25
    rows = _rows(log_path)
    assert [seq for seq, *_ in rows] == list(range(1, 26))
    prev = GENESIS
    for _seq, data, prev_hash, digest in rows:
        assert prev_hash == prev
        assert digest == hashlib.sha256(prev.encode() + data).hexdigest()
        event = orjson.loads(data)
        assert data == orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        AuditEvent.model_validate(event)
        prev = digest
    queries = [base64.b64decode(event["entity"][0]["query"]).decode() for _, event in log.search()]
    assert queries == [f"PatientID=p{i}&limit=10" for i in range(25)]
    anchor = orjson.loads(log_path.with_suffix(".head").read_bytes())
    assert anchor == {"seq": 25, "hash": rows[-1][3]}


def test_the_writer_thread_flushes_without_being_asked(log: AuditLog) -> None:
    log.record(_record())
    deadline = time.monotonic() + 5
    while log.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.count() == 1


def test_a_bad_record_does_not_stop_the_writer(log: AuditLog) -> None:
    log.record(_record(1))
    log.record(_record(2, outcome=99))  # not an AuditEvent outcome: dropped, logged
    log.record(_record(3))
    time.sleep(0.1)
    log.record(_record(4))
    log.flush()
    assert log.count() == 3
    assert verify(log.path).ok


def test_two_writers_sharing_one_log_keep_one_chain(log_path: Path) -> None:
    """Server processes share the data directory; each has its own log object and writer."""
    first = AuditLog(log_path, flush_interval=0.005)
    second = AuditLog(log_path, flush_interval=0.005)

    def write(log: AuditLog, offset: int) -> None:
        for i in range(500):
            log.record(_record(offset + i))
            if i % 50 == 0:
                time.sleep(0.002)

    threads = [
        threading.Thread(target=write, args=(first, 0)),
        threading.Thread(target=write, args=(second, 1000)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.close()
    second.close()
    report = verify(log_path)
    assert report.ok, report.problems
    assert report.events == 1000


def test_the_table_refuses_updates_and_deletes(log: AuditLog, log_path: Path) -> None:
    log.record(_record())
    log.flush()
    conn = sqlite3.connect(log_path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE audit_event SET client_id = 'someone-else'")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM audit_event")
    conn.close()


def test_verify_is_ok_on_an_untouched_log(log_path: Path) -> None:
    _filled(log_path, 40)
    report = verify(log_path)
    assert report.ok, report.problems
    assert report.events == 40
    assert report.problems == []


def test_verify_is_ok_on_an_empty_log_and_across_reopening(log_path: Path) -> None:
    AuditLog(log_path).close()
    assert verify(log_path).ok
    _filled(log_path, 3)
    _filled(log_path, 4)
    report = verify(log_path)
    assert report.ok, report.problems
    assert report.events == 7


def test_verify_detects_an_event_edited_in_place(log_path: Path) -> None:
    _filled(log_path, 40)
    data = _rows(log_path)[16][1]
    edited = data.replace(b"analysis-node", b"innocent-node")
    _tamper(log_path, ("UPDATE audit_event SET event = ? WHERE seq = 17", (edited,)))
    report = verify(log_path)
    assert not report.ok
    assert "event 17: hash mismatch (changed)" in report.problems


def test_verify_detects_an_edit_with_recomputed_hash(log_path: Path) -> None:
    _filled(log_path, 10)
    _, data, prev, _ = _rows(log_path)[4]
    edited = data.replace(b"HRESCH", b"TREAT")
    forged = hashlib.sha256(prev.encode() + edited).hexdigest()
    _tamper(
        log_path, ("UPDATE audit_event SET event = ?, hash = ? WHERE seq = 5", (edited, forged))
    )
    report = verify(log_path)
    assert not report.ok
    assert any(p.startswith("event 6: does not follow event 5") for p in report.problems)


def test_verify_detects_search_columns_edited(log_path: Path) -> None:
    _filled(log_path, 5)
    _tamper(log_path, ("UPDATE audit_event SET client_id = 'other' WHERE seq = 2", ()))
    report = verify(log_path)
    assert report.problems == ["event 2: search columns differ from the event"]


def test_verify_detects_events_deleted_from_the_middle(log_path: Path) -> None:
    _filled(log_path, 40)
    _tamper(log_path, ("DELETE FROM audit_event WHERE seq IN (18, 19)", ()))
    report = verify(log_path)
    assert not report.ok
    assert "events 18-19 missing (removed)" in report.problems
    assert report.events == 38


def test_verify_detects_the_last_events_deleted(log_path: Path) -> None:
    _filled(log_path, 42)
    _tamper(log_path, ("DELETE FROM audit_event WHERE seq > 40", ()))
    report = verify(log_path)
    assert not report.ok
    assert report.problems == ["anchor: log ends at 40, anchor says 42 (tail removed)"]


def test_a_removed_tail_stays_visible_after_the_log_is_written_again(log_path: Path) -> None:
    _filled(log_path, 12)
    _tamper(log_path, ("DELETE FROM audit_event WHERE seq > 10", ()))
    _filled(log_path, 2)  # numbering continues after the anchored 12
    report = verify(log_path)
    assert not report.ok
    assert "events 11-12 missing (removed)" in report.problems
    assert [seq for seq, *_ in _rows(log_path)][-2:] == [13, 14]


def test_verify_detects_a_row_inserted(log_path: Path) -> None:
    _filled(log_path, 10)
    last_hash = _rows(log_path)[-1][3]
    forged_event = orjson.dumps(
        audit_event(_record(99), event_id="forged", observer="gw"), option=orjson.OPT_SORT_KEYS
    )
    forged_hash = hashlib.sha256(last_hash.encode() + forged_event).hexdigest()
    _tamper(
        log_path,
        (
            "INSERT INTO audit_event (seq, recorded, event, prev_hash, hash, action, outcome) "
            "VALUES (11, '2024-01-01T00:00:00.000000Z', ?, ?, ?, 'search', 0)",
            (forged_event, last_hash, forged_hash),
        ),
    )
    report = verify(log_path)
    assert not report.ok
    assert any("anchor says 10" in p for p in report.problems)


def test_verify_detects_a_row_inserted_before_the_first(log_path: Path) -> None:
    _filled(log_path, 3)
    _tamper(
        log_path,
        (
            "INSERT INTO audit_event (seq, recorded, event, prev_hash, hash) "
            "VALUES (0, '2024-01-01T00:00:00.000000Z', ?, ?, ?)",
            (b"{}", GENESIS, hashlib.sha256(GENESIS.encode() + b"{}").hexdigest()),
        ),
    )
    report = verify(log_path)
    assert not report.ok
    assert "event 0: out of sequence (inserted)" in report.problems


def test_verify_detects_a_removed_anchor_or_database(log_path: Path) -> None:
    _filled(log_path, 3)
    anchor = log_path.with_suffix(".head")
    saved = anchor.read_bytes()
    anchor.unlink()
    assert not verify(log_path).ok
    anchor.write_bytes(saved)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log_path}{suffix}").unlink(missing_ok=True)
    report = verify(log_path)
    assert report.problems == ["anchor: log ends at 0, anchor says 3 (tail removed)"]


# -- search -----------------------------------------------------------------------------------


def test_search_filters_and_pages(log: AuditLog) -> None:
    base = 1_700_000_000.0
    log.record(_record(1, recorded=base))
    log.record(
        _record(
            2,
            client_id="viewer",
            subject="alice",
            action="retrieve",
            datasets=("breast-2",),
            recorded=base + 86_400,
        )
    )
    log.record(
        _record(
            3, outcome=4, http_status=403, agreements=(), datasets=(), recorded=base + 2 * 86_400
        )
    )
    log.record(_record(4, datasets=("lung-1", "breast-2"), entities=("ImagingStudy/9.8.7",)))
    log.flush()

    def seqs(**filters: object) -> list[int]:
        return [seq for seq, _ in log.search(**filters)]  # type: ignore[arg-type]

    assert seqs() == [1, 2, 3, 4]
    assert seqs(client_id="viewer") == [2]
    assert seqs(subject="alice") == [2]
    assert seqs(action="search") == [1, 3, 4]
    assert seqs(outcome=4) == [3]
    assert seqs(dataset="breast-2") == [2, 4]
    assert seqs(dataset="breast") == []
    assert seqs(entity="study:1.2.826.0.1.3") == [3]
    assert seqs(entity="ImagingStudy/9.8.7") == [4]
    assert seqs(since="2023-11-15T22:13:20Z", until="2023-11-16T00:00:00Z") == [2]
    assert seqs(since="2023-11-15", until="2023-11-16") == [2, 3]
    assert seqs(client_id="analysis-node", outcome=0) == [1, 4]
    assert seqs(limit=2) == [1, 2]
    assert seqs(limit=2, after_seq=2) == [3, 4]
    _, event = log.search(subject="alice")[0]
    AuditEvent.model_validate(event)


def test_ten_thousand_records_do_not_wait_for_the_disk(log: AuditLog) -> None:
    records = [_record(i) for i in range(10_000)]
    started = time.perf_counter()
    for record in records:
        log.record(record)
    elapsed = time.perf_counter() - started
    # A queue hand-off each: ~20 ms in all on a quiet machine; one write and fsync each
    # would take 10 s or more. The bound leaves room for a busy machine (CI).
    assert elapsed < 2.0, f"record() took {elapsed:.3f}s for 10,000 events"
    log.flush()
    assert log.count() == 10_000
    assert verify(log.path).ok


# -- the command line -------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "server.cli.audit", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_verify_exits_0_when_intact_and_1_when_tampered(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log_path = data_dir / "audit.sqlite"
    _filled(log_path, 20)
    result = _cli("verify", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "events: 20" in result.stdout

    shown = _cli("show", "--data-dir", str(data_dir), "--limit", "3")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[0] == "18"
    assert "client=analysis-node" in lines[0]
    assert "GET /dicom-web/studies?PatientID=p17&limit=10" in lines[0]

    _tamper(log_path, ("DELETE FROM audit_event WHERE seq = 7", ()))
    result = _cli("verify", "--data-dir", str(data_dir))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "event 7 missing (removed)" in result.stdout
