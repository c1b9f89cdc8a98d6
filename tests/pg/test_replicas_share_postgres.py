"""Two gateway processes on one PostgreSQL database: what one writes, the other serves,
and their audit events form one verifiable chain.

Each gateway has a data directory of its own (blobs and index stay per replica here);
the FHIR store, clients, jti replay, jobs and the audit chain live in the shared database.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import orjson
import pytest
from joserfc.jwk import ECKey

from tests.live import LiveServer
from tests.security.conftest import add_client, auth_env, bearer, cli_ok, token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _pair(tmp_path: Path, database_url: str, **env: str) -> tuple[LiveServer, LiveServer]:
    extra = {"GATEWAY_DATABASE_URL": database_url, **env}
    first = LiveServer(tmp_path / "one", extra_env=dict(extra)).start()
    try:
        second = LiveServer(tmp_path / "two", extra_env=dict(extra)).start()
    except BaseException:
        first.stop()
        raise
    return first, second


def test_a_resource_written_through_one_replica_is_read_with_history_through_the_other(
    tmp_path: Path, database_url: str
) -> None:
    one, two = _pair(tmp_path, database_url)
    try:
        study = {"resourceType": "ResearchStudy", "id": "shared-1", "status": "active",
                 "title": "Shared"}  # fmt: skip
        created = httpx.put(f"{one.url}/fhir/ResearchStudy/shared-1", json=study, headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        study["title"] = "Shared, renamed"
        updated = httpx.put(f"{two.url}/fhir/ResearchStudy/shared-1", json=study, headers=FHIR_JSON)
        assert updated.status_code == 200, updated.text
        read = httpx.get(f"{one.url}/fhir/ResearchStudy/shared-1")
        assert read.json()["title"] == "Shared, renamed"
        assert read.json()["meta"]["versionId"] == "2"
        history = httpx.get(f"{one.url}/fhir/ResearchStudy/shared-1/_history").json()
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
        first = httpx.get(f"{two.url}/fhir/ResearchStudy/shared-1/_history/1").json()
        assert first["title"] == "Shared"
    finally:
        one.stop()
        two.stop()


def test_a_token_issued_by_one_replica_is_accepted_by_the_other(
    tmp_path: Path, database_url: str
) -> None:
    key_file = tmp_path / "signing-key.json"
    key = ECKey.generate_key("P-256", private=True)
    key_file.write_bytes(orjson.dumps({**key.as_dict(private=True), "alg": "ES256"}))
    key_file.chmod(0o600)
    # replicas behind one load balancer: one issuer, one signing key (by reference)
    env = auth_env(GATEWAY_AUTH__SIGNING_KEY_FILE=str(key_file),
                   GATEWAY_AUTH__ISSUER="https://gateway.example")  # fmt: skip
    one, two = _pair(tmp_path, database_url, **env)
    try:
        admin = add_client(one, "admin", "--admin")  # registered through one's command line
        issued = token(one, admin)
        answer = httpx.get(f"{two.url}/fhir/ResearchStudy", headers=bearer(issued))
        assert answer.status_code == 200, answer.text
        cli_ok(two, "clients", "remove", admin.client_id)
        refused = httpx.get(f"{one.url}/fhir/ResearchStudy", headers=bearer(issued))
        assert refused.status_code == 401  # removed through two: one stops accepting it
    finally:
        one.stop()
        two.stop()


def test_replicas_without_a_key_file_sign_with_the_key_in_the_database(
    tmp_path: Path, database_url: str
) -> None:
    env = auth_env(GATEWAY_AUTH__ISSUER="https://gateway.example")
    one, two = _pair(tmp_path, database_url, **env)
    try:
        admin = add_client(two, "admin", "--admin")
        issued = token(two, admin)
        answer = httpx.get(f"{one.url}/fhir/ResearchStudy", headers=bearer(issued))
        assert answer.status_code == 200, answer.text
        assert (
            httpx.get(f"{one.url}/oauth/jwks").json() == httpx.get(f"{two.url}/oauth/jwks").json()
        )
        assert not (one.data_dir / "keys").exists() and not (two.data_dir / "keys").exists()
    finally:
        one.stop()
        two.stop()


def test_two_replicas_appending_audit_events_at_once_keep_one_verifiable_chain(
    tmp_path: Path, database_url: str
) -> None:
    one, two = _pair(tmp_path, database_url)
    requests_each = 120
    failures: list[str] = []

    def hammer(live: LiveServer) -> None:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            for n in range(requests_each):
                answer = http.get("/fhir/ResearchStudy", params={"_id": f"x{n}"})
                if answer.status_code != 200:
                    failures.append(answer.text)

    try:
        threads = [threading.Thread(target=hammer, args=(live,))
                   for live in (one, two, one, two)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        one.stop()
        two.stop()  # a stopped gateway has flushed its queue
    assert not failures
    done = one.cli("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: chain and anchor intact" in done.stdout
    events = int(done.stdout.split("events: ")[1].split(";")[0])
    assert events >= 4 * requests_each
    shown = one.cli("audit", "show", "--limit", "3")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3


def test_the_audit_table_refuses_updates_and_verify_reports_a_rewritten_event(
    tmp_path: Path, database_url: str
) -> None:
    import psycopg

    one = LiveServer(tmp_path / "one", extra_env={"GATEWAY_DATABASE_URL": database_url}).start()
    try:
        for n in range(5):
            httpx.get(f"{one.url}/fhir/ResearchStudy", params={"_id": f"y{n}"})
    finally:
        one.stop()
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE audit_event SET client_id = 'someone' WHERE seq = 2")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM audit_event")
        # an owner who drops the guard can rewrite a row; the chain shows it
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
        conn.execute("UPDATE audit_event SET client_id = 'someone' WHERE seq = 2")
    done = one.cli("audit", "verify")
    assert done.returncode == 1
    assert "event 2: search columns differ from the event" in done.stdout


def test_backup_and_restore_refuse_a_shared_database(tmp_path: Path, database_url: str) -> None:
    live = LiveServer(tmp_path / "one", extra_env={"GATEWAY_DATABASE_URL": database_url})
    done = live.cli("backup", str(tmp_path / "backup"))
    assert done.returncode != 0 and "pg_dump" in done.stderr + done.stdout
    assert not (tmp_path / "backup").exists()
    done = live.cli("restore", str(tmp_path / "backup"))
    assert done.returncode != 0 and "pg_restore" in done.stderr + done.stdout


def test_replicas_starting_at_once_create_the_schema_once(database_url: str) -> None:
    """Four processes open every store on an empty database at the same moment."""
    script = (
        "import sys, tempfile, pathlib\n"
        "from server.index.fhir_store import FhirStore\n"
        "from server.security.clients import ClientRegistry\n"
        "from server.security.audit import AuditLog\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "url = sys.argv[1]\n"
        "for s in (FhirStore(d / 'f', url), ClientRegistry(d / 'c', url),"
        " AuditLog(d / 'a', database_url=url)):\n"
        "    s.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, database_url],
                              stderr=subprocess.PIPE) for _ in range(4)]  # fmt: skip
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT store, version FROM schema_version ORDER BY store").fetchall()
    assert rows == [("audit", 1), ("clients", 2), ("fhir", 1)]


def test_a_database_that_goes_away_answers_503_and_readyz_names_it(tmp_path: Path) -> None:
    from tests.live import free_port
    from tests.pg_server import new_database, start_postgres

    admin, stop = start_postgres(free_port())
    live = LiveServer(tmp_path / "one", extra_env={"GATEWAY_DATABASE_URL": new_database(admin)})
    try:
        live.start()
        assert httpx.get(f"{live.url}/fhir/ResearchStudy").status_code == 200
        stop()
        answer = httpx.get(f"{live.url}/fhir/ResearchStudy/any", timeout=60)
        assert answer.status_code == 503, answer.text
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert "Retry-After" in answer.headers
        ready = httpx.get(f"{live.url}/readyz", timeout=60)
        assert ready.status_code == 503 and "database" in ready.json()["failing"]
    finally:
        live.stop()
        stop()


def test_an_unreachable_database_stops_the_start_with_a_clear_line(tmp_path: Path) -> None:
    from tests.live import free_port

    url = f"postgresql://gateway:hunter2-secret@127.0.0.1:{free_port()}/gateway"
    live = LiveServer(tmp_path / "one", extra_env={"GATEWAY_DATABASE_URL": url})
    done = live.cli_process("clients", "list")
    assert done.returncode == 1
    assert "cannot connect to the database at 127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2-secret" not in done.stdout + done.stderr
