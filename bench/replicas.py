"""STOW and QIDO throughput with 1, 2 and 3 gateway replicas behind nginx, in one run.

The production shape of tests/replicas: N ``serve`` processes (one worker each) sharing one
state (Elasticsearch index, one data directory for blobs and the other stores), OAuth2 on,
nginx (Debian) balancing round-robin in front. Elasticsearch: ES_URL, or one started on
loopback.

- STOW: ``--clients`` threads push one-instance studies (``--rows`` square CT, 16-bit)
  through nginx for ``--seconds``; instances/s acknowledged (200).
- QIDO: ``--instances`` metadata-only records are bulk-loaded into the index once
  (index_scale.py's records: 20 instances per study, 2 studies per patient); then
  ``--clients`` threads send QIDO study searches by PatientID (random patients) through
  nginx for ``--seconds``; requests/s and p50/p95 latency.

The clients are Python threads on the same 2 cores as the replicas, nginx and
Elasticsearch: the table says how much the replicas add on this machine, not what they
would add on machines of their own.

    .venv/bin/python bench/replicas.py [--replicas 1,2,3] [--instances 100000]
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from es_scale import _es
from index_scale import _clone, _template, bench_data_dir

from server.synthetic import generate_cohort, to_part10_bytes
from tests.replicas.conftest import Cluster, launch, start_cluster
from tests.security.conftest import add_client, cli_ok, token

BATCH = 2000


def _cluster(data: Path, count: int, es_url: str, prefix: str) -> Cluster:
    os.environ["GATEWAY_TEST_ES_URL"] = ""  # the bench names its own index prefix
    cluster = start_cluster(
        data, count, GATEWAY_INDEX="elasticsearch",
        GATEWAY_ELASTICSEARCH__HOSTS=f'["{es_url}"]',
        GATEWAY_ELASTICSEARCH__INDEX_PREFIX=prefix, GATEWAY_LOG_LEVEL="warning",
    )  # fmt: skip
    return cluster


def _bodies(count: int, rows: int) -> list[tuple[str, bytes]]:
    """``count`` one-instance STOW bodies (fresh UIDs each), built before the clock."""
    out = []
    for ds in generate_cohort(patients=count, series_per_study=1, instances_per_series=1,
                              rows=rows, columns=rows, seed=11):  # fmt: skip
        boundary = uuid.uuid4().hex
        part = to_part10_bytes(ds)
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + part
            + f"\r\n--{boundary}--\r\n".encode()
        )
        out.append((boundary, body))
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


def _stow(args: argparse.Namespace, tmp: Path, es_url: str, count: int) -> dict[str, object]:
    data = tmp / f"stow-{count}" / "data"
    cluster = _cluster(data, count, es_url, f"rstow{count}{int(time.time())}")
    first = cluster.first
    cli_ok(first, "dataset", "create", "bench", "--title", "bench", "--deidentify", "none")
    pusher = add_client(first, "router", "--store", "bench")
    bodies = _bodies(args.bodies, args.rows)
    launch(cluster)
    try:
        access = token(first, pusher)
        next_body = iter(bodies)
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

        count_done, latencies = _run(args.clients, args.seconds, push)
        assert not failures, failures[:5]
        assert count_done < len(bodies), "ran out of prepared bodies: raise --bodies"
        return {
            "replicas": count,
            "stow_instances_per_s": round(count_done / args.seconds, 1),
            "stow_p50_ms": round(statistics.median(latencies), 1),
        }
    finally:
        cluster.stop()


def _load(data: Path, es_url: str, prefix: str, instances: int, tmp: Path) -> int:
    from elasticsearch import Elasticsearch

    from server.index.elasticsearch import ElasticsearchIndex

    bench_data_dir(data)
    index = ElasticsearchIndex(Elasticsearch(es_url, request_timeout=300), prefix, refresh=False)
    template = _template(tmp)
    rng = random.Random(0)
    started = time.perf_counter()
    for first in range(0, instances, BATCH):
        batch = [dataclasses.replace(_clone(template, n, 10, 20, rng), dataset="bench")
                 for n in range(first, min(instances, first + BATCH))]  # fmt: skip
        index.add_instances(batch, overwrite=False)
    index.es.indices.refresh(index=f"{prefix}-*")
    print(f"loaded {instances:,} instances in {time.perf_counter() - started:.0f} s", flush=True)
    return instances // 40  # patients


def _qido(
    args: argparse.Namespace, data: Path, es_url: str, prefix: str, count: int, patients: int
) -> dict[str, object]:
    cluster = _cluster(data, count, es_url, prefix)
    launch(cluster)
    try:
        admin = token(cluster.first, args.admin)
        headers = {"Authorization": f"Bearer {admin}"}
        rng = random.Random(count)

        def search(client: httpx.Client) -> bool:
            patient = rng.randrange(patients)
            answer = client.get(f"{cluster.url}/dicom-web/studies",
                                params={"PatientID": f"PAT{patient:07d}"}, headers=headers)  # fmt: skip
            assert answer.status_code == 200 and answer.json(), answer.text[:200]
            return True

        _run(args.clients, 3, search)  # warm-up
        done, latencies = _run(args.clients, args.seconds, search)
        latencies.sort()
        return {
            "replicas": count,
            "qido_per_s": round(done / args.seconds, 1),
            "qido_p50_ms": round(statistics.median(latencies), 1),
            "qido_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 1),
        }
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--bodies", type=int, default=6000)
    parser.add_argument("--instances", type=int, default=100_000)
    args = parser.parse_args()
    counts = [int(c) for c in args.replicas.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    es_url, stop = _es(tmp)
    rows: dict[int, dict[str, object]] = {c: {"replicas": c} for c in counts}
    try:
        for c in counts:
            rows[c].update(_stow(args, tmp, es_url, c))
            print(json.dumps(rows[c]), flush=True)
        data = tmp / "qido" / "data"
        prefix = f"rqido{int(time.time())}"
        patients = _load(data, es_url, prefix, args.instances, tmp)
        first = _cluster(data, 1, es_url, prefix).first
        cli_ok(first, "dataset", "create", "bench", "--title", "bench", "--deidentify", "none")
        args.admin = add_client(first, "operator", "--admin")
        for c in counts:
            rows[c].update(_qido(args, data, es_url, prefix, c, patients))
            print(json.dumps(rows[c]), flush=True)
    finally:
        stop()  # type: ignore[operator]
    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {args.clients} client "
          f"threads; QIDO index {args.instances:,} instances")  # fmt: skip
    print("| replicas | STOW instances/s | STOW p50 ms | QIDO req/s | QIDO p50 ms | QIDO p95 ms |")
    print("|---|---|---|---|---|---|")
    for c in counts:
        r = rows[c]
        print(f"| {c} | {r.get('stow_instances_per_s')} | {r.get('stow_p50_ms')} | "
              f"{r.get('qido_per_s')} | {r.get('qido_p50_ms')} | {r.get('qido_p95_ms')} |")  # fmt: skip


if __name__ == "__main__":
    main()
