"""Three gateway replicas on one shared state behind nginx: what one replica does, every
other sees; a token of one is a token of all; an agreement revoked through one bites on all
within the agreement cache time; an export started on one is polled and downloaded through
others; kill -9 of one replica during STOW loses no acknowledged instance and the others
keep serving; an instance deleted through one is gone from all within a second.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.live import LiveServer
from tests.replicas.conftest import Cluster, launch, start_cluster
from tests.security.conftest import (
    AS_SENT,
    FHIR_JSON,
    Registered,
    Study,
    add_client,
    bearer,
    cli_ok,
    make_study,
    store_study,
    stow_into,
    token,
)

A, B = "replica-a", "replica-b"
BOUND_SECONDS = 1.0 + 0.2  # GATEWAY_ELASTICSEARCH__INSTANCE_CACHE_SECONDS (default) + margin
pytestmark = pytest.mark.timeout(600)


@dataclass
class World:
    cluster: Cluster
    pusher: Registered
    reader: Registered
    admin: Registered
    shape: dict[str, str] = field(default_factory=dict)
    s3: Any = None  # the S3 endpoint when the blobs are in a bucket
    studies: list[Study] = field(default_factory=list)

    def on(self, replica: LiveServer, path: str, access_token: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{replica.url}{path}", headers=bearer(access_token), timeout=30, **kw)


def production_shape(request: pytest.FixtureRequest, data_dir: Any) -> dict[str, str]:
    """With ``--database postgresql`` (the PostgreSQL pass of ``make test``), the whole
    production shape: state in PostgreSQL, blobs in S3 (SeaweedFS), the index in
    Elasticsearch (ES_URL, as the other passes use). Otherwise nothing: the replicas share
    the data directory (and the pass's index backend)."""
    if request.config.getoption("--database") != "postgresql":
        return {}
    endpoint = request.getfixturevalue("s3_endpoint")
    env = dict(endpoint.env(endpoint.new_bucket()))
    es_url = os.environ.get("ES_URL")
    if es_url:
        prefix = "r" + hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
        env |= {"GATEWAY_INDEX": "elasticsearch",
                "GATEWAY_ELASTICSEARCH__HOSTS": f'["{es_url}"]',
                "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix}  # fmt: skip
    return env


@pytest.fixture(scope="module")
def world(cluster_dir: Any, request: pytest.FixtureRequest) -> Iterator[World]:
    shape = production_shape(request, cluster_dir)
    cluster = start_cluster(cluster_dir, 3, **shape)
    first = cluster.first
    for dataset in (A, B):
        cli_ok(first, "dataset", "create", dataset, "--title", dataset, "--cancer-type",
               "lung", *AS_SENT)  # fmt: skip
    pusher = add_client(first, "router", "--store", A, "--store", B)
    reader = add_client(first, "researcher", "--organization", "org-r")
    admin = add_client(first, "operator", "--admin")
    cli_ok(first, "daa", "create", "daa-r-a", "--dataset", A, "--condition", "download",
           "--organization", "org-r")  # fmt: skip
    launch(cluster)
    try:
        s3 = request.getfixturevalue("s3_endpoint") if "GATEWAY_S3__BUCKET" in shape else None
        yield World(cluster, pusher, reader, admin, shape, s3)
    finally:
        cluster.stop()


def _instance(study: Study) -> str:
    return (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series_uid}/instances/{study.sop_uid}"
    )


def test_a_study_stored_through_one_replica_is_read_through_every_other(world: World) -> None:
    w = world
    one, *others = w.cluster.replicas
    study = store_study(one, A, token(one, w.pusher))
    w.studies.append(study)
    for replica in others:
        reader = token(replica, w.reader)
        found = w.on(replica, "/dicom-web/studies", reader, params={"StudyInstanceUID": study.study_uid})  # fmt: skip
        assert found.status_code == 200 and len(found.json()) == 1, found.text
        pixels = w.on(replica, _instance(study), reader)
        assert pixels.status_code == 200 and len(pixels.content) > 1000
        fhir = w.on(replica, f"/fhir/ImagingStudy/{study.study_uid}", reader)
        assert fhir.status_code == 200, fhir.text


def test_a_frame_deleted_through_one_replica_is_gone_from_every_other_within_the_bound(
    world: World,
) -> None:
    """Frames retrieval may reuse instance facts per process (the Elasticsearch index keeps
    an instance's location for GATEWAY_ELASTICSEARCH__INSTANCE_CACHE_SECONDS, 1 s by default;
    SQLite keeps nothing): the deleting replica answers 404 at once, the others within it."""
    w = world
    one, *others = w.cluster.replicas
    study = store_study(one, A, token(one, w.pusher))
    frame = _instance(study) + "/frames/1"
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    tokens = {replica.name: token(replica, w.reader) for replica in w.cluster.replicas}

    def get(replica: LiveServer) -> httpx.Response:
        headers = {**bearer(tokens[replica.name]), "Accept": accept}
        return httpx.get(f"{replica.url}{frame}", headers=headers, timeout=30)

    for replica in w.cluster.replicas:  # every replica has served (and may keep) the frame
        for _ in range(2):
            served = get(replica)
            assert served.status_code == 200 and len(served.content) > 300, served.text[:300]
    gone = httpx.delete(f"{one.url}/dicom-web/studies/{study.study_uid}",
                        headers=bearer(token(one, w.admin)), timeout=60)  # fmt: skip
    assert gone.status_code in (200, 202, 204), gone.text
    assert get(one).status_code == 404
    time.sleep(BOUND_SECONDS)
    for replica in others:
        after = get(replica)
        assert after.status_code == 404, (replica.name, after.status_code, after.text[:300])


def test_a_token_issued_by_one_replica_is_accepted_by_every_replica(world: World) -> None:
    w = world
    for issuer in w.cluster.replicas:
        access = token(issuer, w.reader)
        for replica in w.cluster.replicas:
            answer = w.on(replica, "/dicom-web/studies", access)
            assert answer.status_code == 200, (issuer.name, replica.name, answer.text)
        # a token another replica never saw is still checked: a forged one is refused
        head, payload, signature = access.split(".")
        forged = f"{head}.{payload}.{signature[:-4]}AAAA"
        for replica in w.cluster.replicas:
            assert w.on(replica, "/dicom-web/studies", forged).status_code == 401


def test_an_agreement_revoked_through_one_replica_ends_access_on_all_within_the_cache_time(
    world: World,
) -> None:
    w = world
    one, *others = w.cluster.replicas
    study = store_study(one, A, token(one, w.pusher))
    grantee = add_client(one, "short-lived", "--organization", "org-s")
    cli_ok(one, "daa", "create", "daa-s-a", "--dataset", A, "--condition", "download",
           "--organization", "org-s")  # fmt: skip
    time.sleep(1.5)  # every replica's agreement cache has seen the new agreement
    access = token(others[0], grantee)
    for replica in w.cluster.replicas:
        assert w.on(replica, _instance(study), access).status_code == 200, replica.name
    admin = token(one, w.admin)
    contract = w.on(one, "/fhir/Contract/daa-s-a", admin).json()
    revoked = httpx.put(f"{one.url}/fhir/Contract/daa-s-a", json={**contract, "status": "revoked"},
                        headers={**bearer(admin), "Content-Type": FHIR_JSON}, timeout=30)  # fmt: skip
    assert revoked.status_code == 200, revoked.text
    at = time.monotonic()
    waited: dict[str, float] = {}
    while len(waited) < len(w.cluster.replicas) and time.monotonic() < at + 10:
        for replica in w.cluster.replicas:
            if (
                replica.name not in waited
                and w.on(replica, _instance(study), access).status_code == 404
            ):
                waited[replica.name] = time.monotonic() - at
        time.sleep(0.05)
    assert set(waited) == {r.name for r in w.cluster.replicas}, waited
    # agreement cache 1 s (GATEWAY_AUTH__AGREEMENT_CACHE_SECONDS), plus a loaded machine's slack
    assert max(waited.values()) < 3.0, waited
    # and a new token from any replica no longer names the dataset
    fresh = token(others[-1], grantee)
    assert w.on(others[-1], _instance(study), fresh).status_code == 404


def test_an_export_started_on_one_replica_is_polled_and_downloaded_through_the_others(
    world: World,
) -> None:
    w = world
    one, two, three = w.cluster.replicas
    if not w.studies:
        w.studies.append(store_study(one, A, token(one, w.pusher)))
    access = token(one, w.reader)
    kick = httpx.get(f"{one.url}/fhir/$export", params={"_type": "ImagingStudy"},
                     headers={"Prefer": "respond-async", "Accept": FHIR_JSON, **bearer(access)},
                     timeout=30)  # fmt: skip
    assert kick.status_code == 202, kick.text
    location = urlsplit(kick.headers["content-location"])
    # the status URL names the balancer (the public base URL), not the replica
    assert f"{location.scheme}://{location.netloc}" == w.cluster.url
    manifest: dict[str, Any] | None = None
    for attempt in range(300):
        replica = (two, three)[attempt % 2]
        status = w.on(replica, location.path, access)
        if status.status_code == 200:
            manifest = status.json()
            break
        assert status.status_code == 202, (replica.name, status.text)
        time.sleep(0.1)
    assert manifest is not None, "the export did not finish"
    lines: list[str] = []
    for item in manifest["output"]:
        path = urlsplit(item["url"]).path
        got = w.on(three, path, access)
        assert got.status_code == 200, got.text
        lines += got.text.splitlines()
    expected = {s.study_uid for s in w.studies}
    assert expected <= {line.split('"id":"')[1].split('"')[0] for line in lines}
    if w.s3 is not None:  # the production shape: the files are served from the bucket
        job = location.path.rsplit("/", 1)[-1]
        listed = w.s3.client().list_objects_v2(Bucket=w.shape["GATEWAY_S3__BUCKET"],
                                               Prefix=f"exports/{job}/")  # fmt: skip
        names = {item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", [])}
        assert names == {
            urlsplit(item["url"]).path.rsplit("/", 1)[-1] for item in manifest["output"]
        }
        assert not any(one.data_dir.rglob("*.ndjson"))  # nothing on the (shared) data volume


def test_a_reindex_started_through_one_replica_is_followed_and_finished_through_the_others(
    world: World,
) -> None:
    """The job lives in the shared database: queued through one replica's admin API, run by
    whichever replica's runner claims it, polled through the others and ``reindex --status``."""
    w = world
    one, two, three = w.cluster.replicas
    if one.env().get("GATEWAY_INDEX") != "elasticsearch":
        pytest.skip("reindex rebuilds an Elasticsearch index (the ES and PostgreSQL passes)")
    if not w.studies:
        w.studies.append(store_study(one, A, token(one, w.pusher)))
    refused = httpx.post(
        f"{one.url}/admin/reindex", headers=bearer(token(one, w.reader)), timeout=30
    )
    assert refused.status_code == 403, refused.text
    admin = token(one, w.admin)
    started = httpx.post(f"{one.url}/admin/reindex", headers=bearer(admin), timeout=30)
    assert started.status_code == 202, started.text
    job = started.json()
    seen: set[str] = set()
    state = job
    deadline = time.monotonic() + 180
    for attempt in range(100000):
        replica = (two, three)[attempt % 2]
        state = w.on(replica, f"/admin/reindex/{job['id']}", admin).json()
        seen.add(state["state"])
        if state["state"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert state["state"] == "complete", state
    assert state["indexed"] >= len(w.studies) and state["attempts"] == 1, state
    status = cli_ok(three, "reindex", "--status")
    assert f"{job['id']}  complete" in status, status
    for replica in (two, three):  # every replica reads through the switched aliases
        found = w.on(replica, "/dicom-web/studies", token(replica, w.reader),
                     params={"StudyInstanceUID": w.studies[0].study_uid})  # fmt: skip
        assert found.status_code == 200 and len(found.json()) == 1, found.text


def test_kill_9_of_one_replica_during_stow_loses_no_acknowledged_instance(world: World) -> None:
    """Clients push through nginx while one replica is killed: every instance the gateway
    acknowledged (a 200) is stored and readable through the survivors, and pushes after
    the kill succeed."""
    w = world
    victim = w.cluster.replicas[1]
    survivors = [r for r in w.cluster.replicas if r is not victim]
    pusher = token(survivors[0], w.pusher)
    balancer = LiveServer(victim.data_dir, port=w.cluster.balancer.port)  # its url only
    acknowledged: list[tuple[Study, set[str]]] = []
    failures: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def push() -> None:
        while not stop.is_set():
            study, instances = make_study(B)
            try:
                answer = stow_into(balancer, B, pusher, instances)
            except httpx.HTTPError:
                with lock:
                    failures.append(-1)
                continue
            with lock:
                if answer.status_code == 200:
                    acknowledged.append((study, {str(ds.SOPInstanceUID) for ds in instances}))
                else:
                    failures.append(answer.status_code)

    threads = [threading.Thread(target=push) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        killed_at = len(acknowledged)
        deadline = time.monotonic() + 60
        while len(acknowledged) < killed_at + 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    victim.process = None
    assert len(acknowledged) >= killed_at + 6, "the survivors stopped taking pushes"
    reader = token(survivors[0], w.admin)
    for study, sops in acknowledged:
        for replica in survivors:
            found = w.on(replica, f"/dicom-web/studies/{study.study_uid}/instances", reader)
            assert found.status_code == 200, (study.study_uid, replica.name, found.text)
            assert {i["00080018"]["Value"][0] for i in found.json()} == sops
        assert w.on(survivors[-1], _instance(study), reader).status_code == 200
    if w.s3 is not None:  # the production shape: every acknowledged blob is in the bucket
        client = w.s3.client()
        listed = client.list_objects_v2(Bucket=w.shape["GATEWAY_S3__BUCKET"], MaxKeys=1000)
        assert listed.get("KeyCount", 0) >= sum(len(sops) for _, sops in acknowledged)
        assert not (w.cluster.first.data_dir / "blobs").exists() or not any(
            (w.cluster.first.data_dir / "blobs").rglob("*.dcm")
        )
    # failures are only the connections the dead replica held (502 from nginx, or a reset)
    assert set(failures) <= {-1, 502}, failures
