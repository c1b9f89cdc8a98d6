"""STOW and QIDO throughput with 1, 2 and 3 gateway replicas behind nginx, in one run.

The production shape of tests/replicas: N ``serve`` processes (one worker each) sharing one
state (Elasticsearch index, one data directory for blobs and the other stores), OAuth2 on,
nginx (Debian) balancing round-robin in front. Elasticsearch: ES_URL, or one started on
loopback.

- STOW: for each of ``--stow-clients`` (e.g. 4,16,32) threads, push studies of
  ``--parts`` instances (``--rows`` square CT, 16-bit) through nginx for ``--seconds``;
  instances/s acknowledged (200), request p50/p95. Each run has an index of its own.
- QIDO: ``--instances`` metadata-only records are bulk-loaded into the index directly
  (index_scale.py's records: 20 instances per study, 2 studies per patient; not through
  STOW); an index already holding them on the same Elasticsearch (ES_URL) is reused.
  Then ``--clients`` threads send a mix of QIDO study searches through nginx for
  ``--seconds``: by PatientID (half), a month of StudyDate with ModalitiesInStudy, a
  PatientName wildcard; requests/s and p50/p95 latency, overall and per kind.
- ``--shape production``: the stores on PostgreSQL (a throwaway cluster, durable
  defaults, on ``--pg-port``) and the blobs on S3 (SeaweedFS, tests/s3), as deploy/
  describes; the default shares one data directory between the replicas.

The clients are Python threads on the same 2 cores as the replicas, nginx and
Elasticsearch: the table says how much the replicas add on this machine, not what they
would add on machines of their own.

    .venv/bin/python bench/replicas.py [--replicas 1,2,3] [--instances 100000]
        [--stow-clients 4,16,32] [--parts 1] [--shape production] [--skip stow|qido]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from es_scale import _es
from index_scale import _clone, _template, bench_data_dir

from server.synthetic import generate_cohort, to_part10_bytes
from tests.replicas.conftest import Cluster, launch, start_cluster
from tests.security.conftest import add_client, cli_ok, token

BATCH = 2000


def _cluster(data: Path, count: int, es_url: str, prefix: str, shape: dict[str, str]) -> Cluster:
    os.environ["GATEWAY_TEST_ES_URL"] = ""  # the bench names its own index prefix
    env = {"GATEWAY_INDEX": "elasticsearch", "GATEWAY_ELASTICSEARCH__HOSTS": f'["{es_url}"]',
           "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix, "GATEWAY_LOG_LEVEL": "warning",
           **shape}  # fmt: skip
    return start_cluster(data, count, **env)


def _bodies(count: int, rows: int, parts: int) -> list[tuple[str, bytes]]:
    """``count`` STOW bodies of ``parts`` instances each (one study per body, fresh UIDs),
    built before the clock."""
    out = []
    cohort = generate_cohort(patients=count, series_per_study=1, instances_per_series=parts,
                             rows=rows, columns=rows, seed=11)  # fmt: skip
    by_study: dict[str, list[bytes]] = {}
    for ds in cohort:
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(to_part10_bytes(ds))
    for instances in by_study.values():
        boundary = uuid.uuid4().hex
        body = b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
            for part in instances
        )
        out.append((boundary, body + f"--{boundary}--\r\n".encode()))
    return out


def _run(clients: int, seconds: float, work: object) -> tuple[int, list[float]]:
    """``work(client)`` in ``clients`` threads for ``seconds``; count and latencies (ms)."""
    done: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < stop:
                start = time.perf_counter()
                if not work(client):  # type: ignore[operator]
                    return
                with lock:
                    done.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done), done


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[max(0, int(len(ordered) * q) - 1)], 1)


def _stow(
    args: argparse.Namespace, tmp: Path, es_url: str, count: int, clients: int,
    shape: dict[str, str], env: dict[str, str],
) -> dict[str, object]:  # fmt: skip
    name = f"stow-{count}-{clients}-{uuid.uuid4().hex[:6]}"
    cluster = _cluster(tmp / name / "data", count, es_url, f"r{name}", {**shape, **env})
    first = cluster.first
    cli_ok(first, "dataset", "create", "bench", "--title", "bench", "--deidentify", "none")
    pusher = add_client(first, "router", "--store", "bench")
    launch(cluster)
    try:
        access = token(first, pusher)
        next_body = iter(_BODIES)
        lock = threading.Lock()
        failures: list[int] = []

        def push(client: httpx.Client) -> bool:
            with lock:
                item = next(next_body, None)
            if item is None:
                return False
            boundary, body = item
            answer = client.post(
                f"{cluster.url}/datasets/bench/dicom-web/studies", content=body,
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                         "Authorization": f"Bearer {access}"},
            )  # fmt: skip
            if answer.status_code != 200:
                failures.append(answer.status_code)
            return True

        count_done, latencies = _run(clients, args.seconds, push)
        assert not failures, failures[:5]
        assert count_done < len(_BODIES), "ran out of prepared bodies: raise --bodies"
        return {
            "stow_instances_per_s": round(count_done * args.parts / args.seconds, 1),
            "stow_p50_ms": round(statistics.median(latencies), 1),
            "stow_p95_ms": _pct(latencies, 0.95),
        }
    finally:
        cluster.stop()


_BODIES: list[tuple[str, bytes]] = []


def _documents(index: Any, batch: list[Any]) -> list[dict[str, Any]]:
    """The index documents of a batch of whole patients as plain index operations: what the
    gateway's per-instance upserts converge to (study sets and first-study values included),
    without its duplicate checks and read-modify-writes (a bulk load, not an ingest)."""
    from server.index.elasticsearch import _STUDY_SETS, _study_facts
    from server.index.federation_es import _first_values, first_facts

    sets: dict[str, dict[str, list[str]]] = {}
    patients: dict[str, dict[str, Any]] = {}
    for rec in batch:
        study = sets.setdefault(rec.study_uid, {name: [] for name in _STUDY_SETS})
        for name, value in _study_facts(rec).items():
            study[name] = sorted({*study[name], *([value] if value else [])})
        patients.setdefault(rec.patient_key, {})[rec.study_uid] = first_facts(rec)
    first = {uid: _first_values(list(studies.values()))
             for studies in patients.values() for uid in studies}  # fmt: skip
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in batch:  # a study's last instance carries its complete sets
        for action in index._actions(rec, sets[rec.study_uid], first[rec.study_uid]):
            source = action.get("upsert", action.get("_source"))
            docs[(action["_index"], action["_id"])] = {
                "_op_type": "index", "_index": action["_index"], "_id": action["_id"],
                "_source": source,
            }  # fmt: skip
    return list(docs.values())


def _load(data: Path, es_url: str, prefix: str, instances: int, tmp: Path) -> int:
    """Bulk-load ``instances`` records into the index ``prefix`` (not through STOW). An
    index of that prefix already holding them (an earlier run on the same Elasticsearch)
    is reused as it is: the corpus is deterministic."""
    from elasticsearch import Elasticsearch, helpers

    from server.index.elasticsearch import ElasticsearchIndex

    bench_data_dir(data)
    es = Elasticsearch(es_url, request_timeout=300)
    alias = f"{prefix}-instances"
    held = es.count(index=alias)["count"] if es.indices.exists(index=alias) else 0
    if held == instances:
        print(f"reusing {instances:,} instances loaded earlier in {alias}", flush=True)
        return instances // 40
    if held:  # a load cut short: start again
        es.indices.delete(index=",".join(es.indices.get(index=f"{prefix}-*")))
    index = ElasticsearchIndex(es, prefix, refresh=False)
    names = list(index.names.values())
    es.indices.put_settings(index=names, settings={"refresh_interval": "-1"})
    template = _template(tmp)
    rng = random.Random(0)
    started = time.perf_counter()
    for first in range(0, instances, BATCH):  # whole patients per batch (40 instances)
        batch = [dataclasses.replace(_clone(template, n, 10, 20, rng), dataset="bench")
                 for n in range(first, min(instances, first + BATCH))]  # fmt: skip
        helpers.bulk(es, _documents(index, batch), chunk_size=1500, max_retries=5)
        if first % 100_000 == 0:
            print(f"{first:,} instances loaded, {time.perf_counter() - started:.0f} s", flush=True)
    es.indices.put_settings(index=names, settings={"refresh_interval": "1s"})
    es.indices.refresh(index=names)
    print(f"loaded {instances:,} instances in {time.perf_counter() - started:.0f} s", flush=True)
    return instances // 40  # patients


def _mix(patients: int, rng: random.Random) -> tuple[str, dict[str, str]]:
    """One request of the QIDO mix (es_scale's QIDO searches): by PatientID (half), a
    month of StudyDate with ModalitiesInStudy, a PatientName wildcard."""
    kind = rng.random()
    if kind < 0.5:
        return "PatientID", {"PatientID": f"PAT{rng.randrange(patients):07d}"}
    if kind < 0.75:
        year, month = rng.randint(2015, 2025), rng.randint(1, 12)
        return "StudyDate + ModalitiesInStudy", {
            "StudyDate": f"{year}{month:02d}01-{year}{month:02d}28",
            "ModalitiesInStudy": rng.choice(["CT", "MR", "PT"]), "limit": "100",
        }  # fmt: skip
    return "PatientName wildcard", {"PatientName": rng.choice(_NAME_PREFIXES), "limit": "100"}


_NAME_PREFIXES = ["gar*", "mül*", "smi*", "ros*", "nov*", "oli*"]


def _qido(
    args: argparse.Namespace, data: Path, es_url: str, prefix: str, count: int, patients: int,
    shape: dict[str, str],
) -> dict[str, object]:  # fmt: skip
    cluster = _cluster(data, count, es_url, prefix, shape)
    launch(cluster)
    try:
        admin = token(cluster.first, args.admin)
        headers = {"Authorization": f"Bearer {admin}"}
        rng = random.Random(count)
        lock = threading.Lock()
        by_kind: dict[str, list[float]] = {}

        def search(client: httpx.Client) -> bool:
            with lock:
                kind, params = _mix(patients, rng)
            start = time.perf_counter()
            answer = client.get(f"{cluster.url}/dicom-web/studies", params=params, headers=headers)
            elapsed = (time.perf_counter() - start) * 1000
            assert answer.status_code == 200, answer.text[:200]
            assert kind != "PatientID" or answer.json(), params
            with lock:
                by_kind.setdefault(kind, []).append(elapsed)
            return True

        _run(args.clients, 5, search)  # warm-up
        by_kind.clear()
        done, latencies = _run(args.clients, args.seconds, search)
        row: dict[str, object] = {
            "qido_per_s": round(done / args.seconds, 1),
            "qido_p50_ms": round(statistics.median(latencies), 1),
            "qido_p95_ms": _pct(latencies, 0.95),
        }
        for kind, samples in sorted(by_kind.items()):
            row[f"{kind} p50/p95"] = f"{statistics.median(samples):.1f} / {_pct(samples, 0.95)}"
        return row
    finally:
        cluster.stop()


def _shape(args: argparse.Namespace, tmp: Path, stops: list[object]) -> dict[str, str]:
    """The production shape's shared engines: PostgreSQL (every commit flushed) for the
    stores and S3 (SeaweedFS) for the blobs, or the replicas' shared data directory."""
    env: dict[str, str] = {}
    if args.shape != "production":
        return env
    from tests.pg_server import new_database, start_postgres
    from tests.s3_server import ensure_s3

    admin_url, stop_pg = start_postgres(args.pg_port, durable=True)
    stops.append(stop_pg)
    endpoint, stop_s3 = ensure_s3(tmp / "s3")
    stops.append(stop_s3)
    _S3.append(endpoint)
    env["GATEWAY_DATABASE_URL"] = new_database(admin_url)
    env.update(endpoint.env(endpoint.new_bucket()))
    return env


_S3: list[Any] = []


def _fresh(env: dict[str, str]) -> dict[str, str]:
    """Another empty database and bucket on the same engines, for one STOW cluster (the
    same bodies are sent to each: a bucket holding them would make duplicates cheap)."""
    if "GATEWAY_DATABASE_URL" not in env:
        return {}
    from tests.pg_server import new_database

    admin = env["GATEWAY_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return {"GATEWAY_DATABASE_URL": new_database(admin), **_S3[0].env(_S3[0].new_bucket())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--clients", type=int, default=6, help="QIDO client threads")
    parser.add_argument("--stow-clients", default="6", help="STOW client threads, e.g. 4,16,32")
    parser.add_argument("--parts", type=int, default=1, help="instances per STOW request")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--bodies", type=int, default=6000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="stow or qido: leave that part out")
    parser.add_argument("--shape", choices=["shared-dir", "production"], default="shared-dir",
                        help="production: PostgreSQL + S3 (+ Elasticsearch, nginx)")  # fmt: skip
    parser.add_argument("--pg-port", type=int, default=18650)
    parser.add_argument(
        "--stow-index", default="immediate",
        help="STOW runs, side by side: GATEWAY_ELASTICSEARCH__REFRESH values (immediate, "
        "wait_for, none) and/or sqlite (the embedded index, shared by the replicas)",
    )  # fmt: skip
    args = parser.parse_args()
    counts = [int(c) for c in args.replicas.split(",")]
    stow_clients = [int(c) for c in args.stow_clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    es_url, stop = _es(tmp)
    stops: list[object] = [stop]
    rows: list[dict[str, object]] = []
    try:
        shape = _shape(args, tmp, stops)
        if "stow" not in args.skip:
            _BODIES.extend(_bodies(args.bodies, args.rows, args.parts))
            for clients in stow_clients:
                for c in counts:
                    for kind in args.stow_index.split(","):
                        index = ({"GATEWAY_INDEX": "sqlite"} if kind == "sqlite"
                                 else {"GATEWAY_ELASTICSEARCH__REFRESH": kind})  # fmt: skip
                        row: dict[str, object] = {
                            "part": "STOW", "index": kind, "replicas": c, "clients": clients,
                        }  # fmt: skip
                        fresh = {**shape, **_fresh(shape)}
                        row.update(_stow(args, tmp, es_url, c, clients, fresh, index))
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        if "qido" not in args.skip:
            data = tmp / "qido" / "data"
            prefix = f"rqido{args.instances}"  # the same corpus at each size: reused
            patients = _load(data, es_url, prefix, args.instances, tmp)
            first = _cluster(data, 1, es_url, prefix, shape).first
            cli_ok(first, "dataset", "create", "bench", "--title", "bench", "--deidentify", "none")
            args.admin = add_client(first, "operator", "--admin")
            for c in counts:
                row = {"part": "QIDO", "replicas": c, "clients": args.clients}
                row.update(_qido(args, data, es_url, prefix, c, patients, shape))
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for stopper in reversed(stops):
            stopper()  # type: ignore[operator]
    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; shape {args.shape}; "
          f"QIDO index {args.instances:,} instances")  # fmt: skip
    for part in ("STOW", "QIDO"):
        table = [r for r in rows if r["part"] == part]
        if not table:
            continue
        keys = [k for k in table[0] if k != "part"]
        print("\n| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for r in table:
            print("| " + " | ".join(str(r.get(k)) for k in keys) + " |")


if __name__ == "__main__":
    main()
