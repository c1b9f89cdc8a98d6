"""What the shared database costs a request: a gateway on SQLite and one on PostgreSQL,
side by side in one run, answering the same authorised requests over HTTP.

Each gateway runs with OAuth2 on (production defaults, agreement cache as shipped) and
one worker; a client with an agreement for one dataset holds a token. Per engine and
round: ``--n`` QIDO study searches of the dataset and ``--n`` FHIR reads of its
ResearchStudy, one client at a time (latency, not throughput). On PostgreSQL the transactions the
database counted (``pg_stat_database``) divided by the requests give the round trips a
request costs beyond its own reads. Rounds interleave the engines; medians.

    .venv/bin/python bench/request_db_cost.py [--rounds 3] [--n 300]

A throwaway PostgreSQL (durable defaults) is started on ``--pg-port``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import LiveServer  # noqa: E402
from tests.pg_server import new_database, start_postgres  # noqa: E402
from tests.security.conftest import add_client, auth_env, cli_ok, token  # noqa: E402


def _xacts(url: str | None) -> int:
    if url is None:
        return 0
    time.sleep(1.2)  # backends report their counters at most once a second
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def _more(live: LiveServer, admin: str, agreements: int, datasets: int) -> None:
    """More agreements (for other organisations) and datasets, as a node in use holds:
    copies of the ones the command line made, written over FHIR."""
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/fhir+json"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=60) as client:
        contract = client.get("/fhir/Contract/bench-daa").json()
        study = client.get("/fhir/ResearchStudy/bench").json()
        for rtype, original, count in (("Contract", contract, agreements),
                                       ("ResearchStudy", study, datasets)):  # fmt: skip
            text = orjson.dumps({k: v for k, v in original.items() if k != "meta"}).decode()
            for i in range(count):
                body = orjson.loads(text.replace("org-b", f"org-{i}"))
                body["id"] = f"{original['id']}-{i}"
                answer = client.put(f"/fhir/{rtype}/{body['id']}", content=orjson.dumps(body))
                assert answer.status_code in (200, 201), answer.text[:300]


def _round(tmp: Path, url: str | None, n: int, agreements: int, datasets: int) -> dict[str, float]:
    env = auth_env(GATEWAY_AUTH__AGREEMENT_CACHE_SECONDS="2")
    if url:
        env["GATEWAY_DATABASE_URL"] = url
    live = LiveServer(tmp / "data", extra_env=env)
    cli_ok(live, "dataset", "create", "bench", "--title", "bench", "--deidentify", "none")
    reader = add_client(live, "reader", "--organization", "org-b")
    operator = add_client(live, "operator", "--admin")
    cli_ok(live, "daa", "create", "bench-daa", "--dataset", "bench", "--condition", "download",
           "--organization", "org-b")  # fmt: skip
    live.start()
    out: dict[str, float] = {}
    try:
        _more(live, token(live, operator), agreements, datasets)
        access = token(live, reader)
        headers = {"Authorization": f"Bearer {access}"}
        requests = {
            "QIDO studies": f"{live.url}/dicom-web/studies",
            "FHIR read ResearchStudy": f"{live.url}/fhir/ResearchStudy/bench",
        }
        with httpx.Client(timeout=60) as client:
            for name, target in requests.items():
                for _ in range(20):  # warm caches and connections
                    client.get(target, headers=headers)
                before = _xacts(url)
                started = time.perf_counter()
                samples = []
                for _ in range(n):
                    one = time.perf_counter()
                    answer = client.get(target, headers=headers)
                    samples.append((time.perf_counter() - one) * 1000)
                    assert answer.status_code in (200, 204), answer.text[:300]
                elapsed = time.perf_counter() - started
                samples.sort()
                out[f"{name} /s"] = n / elapsed
                out[f"{name} p99 ms"] = samples[int(n * 0.99) - 1]
                out[f"{name} max ms"] = samples[-1]
                if url:
                    out[f"{name} db transactions/request"] = (_xacts(url) - before) / n
    finally:
        live.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--pg-port", type=int, default=18651)
    parser.add_argument("--agreements", type=int, default=200, help="other agreements held")
    parser.add_argument("--datasets", type=int, default=50, help="other datasets held")
    args = parser.parse_args()
    admin_url, stop = start_postgres(args.pg_port, durable=True)
    results: dict[str, dict[str, list[float]]] = {"sqlite": {}, "postgresql": {}}
    try:
        for _ in range(args.rounds):
            for engine in ("sqlite", "postgresql"):
                url = new_database(admin_url) if engine == "postgresql" else None
                with tempfile.TemporaryDirectory() as tmp:
                    for name, value in _round(
                        Path(tmp), url, args.n, args.agreements, args.datasets
                    ).items():
                        results[engine].setdefault(name, []).append(value)
    finally:
        stop()
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {args.rounds} rounds of "
          f"{args.n} requests, one client; {args.agreements} other agreements, "
          f"{args.datasets} other datasets")  # fmt: skip
    print("| request | SQLite /s | PostgreSQL /s | PostgreSQL/SQLite | SQLite / PostgreSQL p99 ms "
          "| SQLite / PostgreSQL max ms | PostgreSQL transactions/request |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    med = {e: {k: statistics.median(v) for k, v in r.items()} for e, r in results.items()}
    lite, pg = med["sqlite"], med["postgresql"]
    for name in [k.removesuffix(" /s") for k in lite if k.endswith(" /s")]:
        print(f"| {name} | {lite[name + ' /s']:.0f} | {pg[name + ' /s']:.0f} "
              f"| {pg[name + ' /s'] / lite[name + ' /s']:.2f} "
              f"| {lite[name + ' p99 ms']:.1f} / {pg[name + ' p99 ms']:.1f} "
              f"| {lite[name + ' max ms']:.1f} / {pg[name + ' max ms']:.1f} "
              f"| {pg[name + ' db transactions/request']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
