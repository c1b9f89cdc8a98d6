"""One contract for the stores of non-index state, run on SQLite and on PostgreSQL.

Each store (FHIR resources with versions and history, the client registry and jti
replay, token-failure counters, bulk-export jobs, pull jobs, the audit chain) is built
the way ``create_app`` builds it: a SQLite file in a temp dir, or a fresh database on
a throwaway PostgreSQL cluster (tests/pg_server.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from server.core.fhir.search import parse_search
from server.errors import Conflict, PreconditionFailed
from server.index.federation_noise import NoiseStore
from server.index.fhir_store import FhirStore
from server.peers.base import RemoteInstance
from server.security.audit import AccessRecord, AuditLog, verify, verify_shared
from server.security.clients import AeTitleInUse, ClientRegistry, DicomNode
from server.security.throttle import FailureThrottle, Limits
from server.services.bulk_jobs import Job, JobState, SqlJobStore
from server.services.pull_jobs import PullJobs
from server.services.reindex_jobs import ReindexJobs, ReindexState

ENGINES = ["sqlite", "postgresql"]


@dataclass
class Engine:
    name: str
    data_dir: Path
    url: str | None

    def path(self, file: str) -> Path:
        return self.data_dir / file


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    url = request.getfixturevalue("database_url") if request.param == "postgresql" else None
    return Engine(request.param, tmp_path / "data", url)


# -- FHIR store ----------------------------------------------------------------------------


@pytest.fixture
def fhir(engine: Engine) -> Iterator[FhirStore]:
    store = FhirStore(engine.path("fhir.sqlite"), engine.url)
    yield store
    store.close()


def _study(rid: str, title: str) -> dict[str, object]:
    return {"resourceType": "ResearchStudy", "id": rid, "status": "active", "title": title}


def test_fhir_put_read_versions_and_history(fhir: FhirStore) -> None:
    stored, created = fhir.put(_study("s1", "Lung screening"))
    assert created and stored["meta"]["versionId"] == "1"
    updated, created = fhir.put(_study("s1", "Lung screening 2"), if_match=1)
    assert not created and updated["meta"]["versionId"] == "2"
    resource, deleted = fhir.read("ResearchStudy", "s1")
    assert resource is not None and resource["title"] == "Lung screening 2" and not deleted
    first = fhir.vread("ResearchStudy", "s1", 1)
    assert first is not None and first.resource is not None
    assert first.resource["title"] == "Lung screening" and first.method == "POST"
    history = fhir.history("ResearchStudy", "s1", 10, None)
    assert [v.version for v in history] == [2, 1]


def test_fhir_if_match_on_a_stale_version_changes_nothing(fhir: FhirStore) -> None:
    fhir.put(_study("s2", "A"))
    fhir.put(_study("s2", "B"))
    with pytest.raises(PreconditionFailed):
        fhir.put(_study("s2", "C"), if_match=1)
    resource, _ = fhir.read("ResearchStudy", "s2")
    assert resource is not None and resource["title"] == "B"
    assert len(fhir.history("ResearchStudy", "s2", 10, None)) == 2


def test_fhir_delete_is_soft_and_versioned(fhir: FhirStore) -> None:
    fhir.put(_study("s3", "A"))
    assert fhir.delete("ResearchStudy", "s3")
    assert not fhir.delete("ResearchStudy", "s3")
    assert fhir.read("ResearchStudy", "s3") == (None, True)
    assert fhir.last_content("ResearchStudy", "s3") is not None
    versions = fhir.history("ResearchStudy", "s3", 10, None)
    assert [(v.version, v.method) for v in versions] == [(2, "DELETE"), (1, "POST")]
    assert fhir.ids("ResearchStudy") == []


def test_fhir_transaction_is_all_or_nothing(fhir: FhirStore) -> None:
    def work(writer) -> None:  # type: ignore[no-untyped-def]
        writer.put(_study("t1", "one"))
        writer.put(_study("t2", "two"))
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        fhir.transaction(work)
    assert fhir.read("ResearchStudy", "t1") == (None, False)
    fhir.transaction(lambda w: [w.put(_study("t1", "one")), w.put(_study("t2", "two"))])
    assert sorted(fhir.ids("ResearchStudy")) == ["t1", "t2"]


def test_fhir_search_by_string_and_id_pages_without_repeats(fhir: FhirStore) -> None:
    for n in range(5):
        fhir.put(_study(f"p{n}", f"Prostate {n}" if n % 2 else f"Breast {n}"))
    req = parse_search("ResearchStudy", [("title", "pros"), ("_count", "1")])
    page = fhir.search(req)
    assert [r["id"] for r in page.resources] == ["p1"] and page.total == 2
    assert page.next_cursor is not None
    rest = fhir.search(replace(req, count=5, position=page.next_cursor))
    assert [r["id"] for r in rest.resources] == ["p3"]
    by_id = fhir.search(parse_search("ResearchStudy", [("_id", "p4")]))
    assert [r["id"] for r in by_id.resources] == ["p4"]
    contains = fhir.search(parse_search("ResearchStudy", [("title:contains", "east 2")]))
    assert [r["id"] for r in contains.resources] == ["p2"]


def test_fhir_current_is_every_live_resource_of_a_type_by_id_in_one_query(
    fhir: FhirStore,
) -> None:
    for rid in ("c3", "a1", "b2", "gone"):
        fhir.put(_study(rid, f"T {rid}"))
    fhir.put(_study("b2", "T b2, second version"))
    fhir.delete("ResearchStudy", "gone")
    fhir.put({"resourceType": "Contract", "id": "k1", "status": "executed"})
    queries: list[str] = []
    reader = fhir.db.reader

    def counting() -> object:  # the real connection; the statements it runs are counted
        conn = reader()

        class Counted:
            def execute(self, sql: str, *args: object) -> object:
                queries.append(sql)
                return conn.execute(sql, *args)

        return Counted()

    fhir.db.reader = counting  # type: ignore[method-assign]
    try:
        found = fhir.current("ResearchStudy")
    finally:
        fhir.db.reader = reader  # type: ignore[method-assign]
    assert [r["id"] for r in found] == ["a1", "b2", "c3"]  # no deleted one, no Contract
    assert found[1]["title"] == "T b2, second version" and found[1]["meta"]["versionId"] == "2"
    assert len(queries) == 1  # a cache reload is one round trip, whatever the count


def test_fhir_concurrent_updates_of_one_resource_get_distinct_versions(fhir: FhirStore) -> None:
    fhir.put(_study("c1", "start"))
    errors: list[BaseException] = []

    def bump(n: int) -> None:
        try:
            for k in range(10):
                fhir.put(_study("c1", f"{n}-{k}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = [v.version for v in fhir.history("ResearchStudy", "c1", 100, None)]
    assert sorted(versions) == list(range(1, 42))


# -- clients, jti replay, DICOM nodes ---------------------------------------------------------


@pytest.fixture
def clients(engine: Engine) -> Iterator[ClientRegistry]:
    registry = ClientRegistry(engine.path("security.sqlite"), engine.url)
    yield registry
    registry.close()


def test_clients_add_check_update_remove(clients: ClientRegistry) -> None:
    client, secret = clients.add("PACS", organization="org1", store=("d1",), http_basic=True)
    assert secret is not None
    assert clients.check_secret(client.client_id, secret) == client
    assert clients.check_secret(client.client_id, "wrong") is None
    changed = clients.update(client.client_id, curate=("d2",))
    assert changed is not None and changed.curate_datasets == ("d2",)
    assert changed.store_datasets == ("d1",) and changed.http_basic
    assert [c.client_id for c in clients.list()] == [client.client_id]
    assert clients.remove(client.client_id)
    assert clients.get(client.client_id) is None and not clients.remove(client.client_id)


def test_a_jti_is_accepted_once_per_client(clients: ClientRegistry) -> None:
    later = time.time() + 60
    assert clients.use_jti("c-a", "j1", later)
    assert not clients.use_jti("c-a", "j1", later)
    assert clients.use_jti("c-b", "j1", later)  # another client's jti space


def test_an_expired_jti_is_forgotten(clients: ClientRegistry) -> None:
    assert clients.use_jti("c-a", "old", time.time() - 1)
    assert clients.use_jti("c-a", "old", time.time() + 60)


def test_an_ae_title_belongs_to_one_client(clients: ClientRegistry) -> None:
    first, _ = clients.add("one")
    second, _ = clients.add("two")
    clients.set_dicom_node(DicomNode(first.client_id, "MODALITY", "127.0.0.1", 104))
    clients.set_dicom_node(DicomNode(first.client_id, "MODALITY", "127.0.0.1", 105))
    with pytest.raises(AeTitleInUse):
        clients.set_dicom_node(DicomNode(second.client_id, "MODALITY"))
    assert clients.dicom_node("MODALITY ") == DicomNode(
        first.client_id, "MODALITY", "127.0.0.1", 105
    )
    clients.remove(first.client_id)
    assert clients.dicom_nodes() == []


# -- token-failure throttle ----------------------------------------------------------------------


def test_throttle_counts_failures_per_client(engine: Engine) -> None:
    throttle = FailureThrottle(engine.path("throttle.sqlite"), Limits(2, 100, 60), engine.url)
    try:
        assert throttle.retry_after("c-x", "10.0.0.1") is None
        throttle.failed("c-x", "10.0.0.1")
        throttle.failed("c-x", "10.0.0.1")
        wait = throttle.retry_after("c-x", "10.0.0.1")
        assert wait is not None and 1 <= wait <= 60
        throttle.succeeded("c-x")
        assert throttle.retry_after("c-x", "10.0.0.1") is None
    finally:
        throttle.close()


# -- bulk-export jobs -------------------------------------------------------------------------


def _job(job_id: str, created: float) -> Job:
    return Job(id=job_id, owner="c-owner", state=JobState.QUEUED, created=created,
               request_url="http://x/$export", request={}, principal={},
               transaction_time="2026-01-01T00:00:00Z")  # fmt: skip


def test_bulk_jobs_claim_lease_and_take_over(engine: Engine) -> None:
    jobs = SqlJobStore(engine.path("bulk.sqlite"), engine.url)
    try:
        jobs.add(_job("j1", 1.0))
        jobs.add(_job("j2", 2.0))
        assert jobs.active_of("c-owner") == 2
        now = time.time()
        first = jobs.claim("w1", 30, now)
        assert first is not None and first.id == "j1" and first.attempts == 1
        second = jobs.claim("w2", 30, now)
        assert second is not None and second.id == "j2"
        assert jobs.claim("w3", 30, now) is None
        assert jobs.renew("j1", "w1", 30, "10%")
        assert not jobs.renew("j1", "w2", 30, "stolen")
        taken = jobs.claim("w3", 30, now + 3600)  # both leases ran out: the oldest first
        assert taken is not None and taken.id == "j1" and taken.attempts == 2
        assert not jobs.renew("j1", "w1", 30, "late")
        taken.state = JobState.COMPLETE
        taken.expires = now - 1
        assert jobs.finish(taken, "w3")
        assert jobs.expired(now) == ["j1"]
        assert jobs.ids() == {"j1", "j2"}
        assert jobs.remove("j1") and not jobs.remove("j1")
    finally:
        jobs.close()


# -- pull jobs ----------------------------------------------------------------------------------


def test_reindex_jobs_one_unfinished_one_holder_and_take_over_with_its_checkpoint(
    engine: Engine,
) -> None:
    jobs = ReindexJobs(engine.data_dir, engine.url)
    try:
        job = jobs.start(keep_old=False, started_by="cli")
        with pytest.raises(Conflict):  # one unfinished job at a time
            jobs.start(keep_old=True, started_by="admin")
        held = jobs.claim("w1", 30)
        assert held is not None and held.id == job.id and held.attempts == 1
        assert jobs.claim("w2", 30) is None and jobs.claim("w2", 30, job.id) is None
        held.report.indexed, held.report.cursor, held.report.phase = 4, "k4", "load"
        assert jobs.save(held)
        with jobs.db.write() as conn:  # w1 died: its lease ran out
            conn.execute("UPDATE reindex_job SET lease_until = 0 WHERE id = ?", (job.id,))
        taken = jobs.claim("w2", 30, job.id)
        assert taken is not None and taken.attempts == 2
        assert (taken.report.indexed, taken.report.cursor, taken.report.phase) == (4, "k4", "load")
        assert not jobs.save(held) and not jobs.renew(held, 30)  # w1 no longer holds it
        taken.state = ReindexState.COMPLETE
        assert jobs.save(taken) and jobs.active() is None
        assert jobs.counts() == {"complete": 1}
        assert [j.id for j in jobs.latest()] == [job.id]
        assert jobs.start(keep_old=False, started_by="cli").id != job.id  # a new one may start
    finally:
        jobs.close()


def test_pull_jobs_resume_and_count(engine: Engine) -> None:
    engine.data_dir.mkdir(parents=True, exist_ok=True)
    jobs = PullJobs(engine.data_dir, engine.url)
    try:
        job = jobs.open("http://pacs/dicom-web", "d1", {"study": "1.2"}, {})
        found = [RemoteInstance("1.2", "1.2.1", f"1.2.1.{n}") for n in range(3)]
        jobs.add_found(job.id, found)
        jobs.add_found(job.id, found[:1])  # found again: not a new item
        jobs.mark(job.id, "1.2.1.0", "stored", size=10)
        jobs.mark(job.id, "1.2.1.1", "failed", "refused")
        assert jobs.counts(job.id) == {"pending": 1, "stored": 1, "failed": 1}
        assert jobs.done(job.id, "1.2") == {"1.2.1.0"}
        assert jobs.failures(job.id) == [("1.2", "1.2.1.1", "refused")]
        assert jobs.job_states() == {"running": 1} and jobs.running_items_done() == 1  # /metrics
        again = jobs.open("http://pacs/dicom-web", "d1", {"study": "1.2"}, {"x": 1})
        assert again.id == job.id and again.options == {"x": 1}
        jobs.finish(job.id, "done")
        got = jobs.get(job.id)
        assert got is not None and got.state == "done"
        assert jobs.job_states() == {"complete": 1} and jobs.running_items_done() == 0
    finally:
        jobs.close()


# -- federated-search noise ------------------------------------------------------------------


def test_a_noise_sample_is_drawn_once_per_key_whoever_asks(engine: Engine) -> None:
    first = NoiseStore(engine.path("federation.sqlite"), engine.url)
    second = NoiseStore(engine.path("federation.sqlite"), engine.url)  # another replica
    try:
        key = ("d1", "studies", 42, 0.5, 1e-6)
        assert first.sample(key, lambda: 1.25) == 1.25
        assert second.sample(key, lambda: -7.0) == 1.25
        assert second.sample(("d1", "studies", 43, 0.5, 1e-6), lambda: -7.0) == -7.0
    finally:
        first.close()
        second.close()


# -- the audit chain --------------------------------------------------------------------------


def _record(n: int, client: str = "c-1") -> AccessRecord:
    return AccessRecord(action="read", outcome=0, http_status=200, method="GET",
                        path=f"/fhir/ResearchStudy/{n}", query=None, source_address="127.0.0.1",
                        client_id=client, subject=None, datasets=(f"d{n % 3}",),
                        entities=(f"ResearchStudy/{n}",))  # fmt: skip


def _verify(engine: Engine):  # type: ignore[no-untyped-def]
    return verify_shared(engine.url) if engine.url else verify(engine.path("audit.sqlite"))


def _audit(engine: Engine, interval: float = 0.05) -> AuditLog:
    return AuditLog(engine.path("audit.sqlite"), database_url=engine.url, flush_interval=interval)


def test_audit_appends_search_read_and_verify(engine: Engine) -> None:
    log = _audit(engine)
    try:
        for n in range(12):
            log.record(_record(n, "c-1" if n < 8 else "c-2"))
        log.flush()
        assert log.count() == 12
        found = log.search(client_id="c-2")
        assert [seq for seq, _ in found] == [9, 10, 11, 12]
        assert [seq for seq, _ in log.search(dataset="d0", limit=2)] == [1, 4]
        assert [seq for seq, _ in log.search(entity="ResearchStudy/5")] == [6]
        event = found[0][1]
        assert log.read(event["id"]) == event
    finally:
        log.close()
    report = _verify(engine)
    assert report.ok, report.problems
    assert report.events == 12 and report.last_seq == 12


def test_audit_chain_of_two_writers_stays_one_sequence(engine: Engine) -> None:
    first, second = _audit(engine, 0.002), _audit(engine, 0.002)
    try:

        def write(log: AuditLog, client: str) -> None:
            for n in range(150):
                log.record(_record(n, client))
                if n % 10 == 0:
                    time.sleep(0.003)

        threads = [threading.Thread(target=write, args=(log, c))
                   for log, c in ((first, "c-a"), (second, "c-b"))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first.flush()
        second.flush()
    finally:
        first.close()
        second.close()
    report = _verify(engine)
    assert report.ok, report.problems
    assert report.events == 300


def test_audit_reopened_log_continues_the_chain(engine: Engine) -> None:
    for n in range(3):
        log = _audit(engine)
        log.record(_record(n))
        log.close()
    report = _verify(engine)
    assert report.ok and report.events == 3 and report.last_seq == 3
