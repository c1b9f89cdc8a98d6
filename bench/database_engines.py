"""The shared-state stores on SQLite vs PostgreSQL, side by side in one run.

Per engine and round: FHIR resource writes (create + update, each a versioned write
with its search entries), reads, a search page, audit events appended and flushed, and
jti checks; the same work on both engines, rounds interleaved, medians reported with
the PostgreSQL/SQLite ratio and the load average.

    .venv/bin/python bench/database_engines.py [--rounds 3] [--n 500] [--pg-url URL]

Without --pg-url a throwaway cluster is started (tests/pg_server.py) with PostgreSQL's
durable defaults (fsync on), as the SQLite stores run with synchronous=FULL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.core.fhir.search import parse_search  # noqa: E402
from server.index.fhir_store import FhirStore  # noqa: E402
from server.security.audit import AccessRecord, AuditLog  # noqa: E402
from server.security.clients import ClientRegistry  # noqa: E402
from tests.live import free_port  # noqa: E402
from tests.pg_server import new_database, start_postgres  # noqa: E402


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _round(data: Path, url: str | None, n: int) -> dict[str, float]:
    fhir = FhirStore(data / "fhir.sqlite", url)
    audit = AuditLog(data / "audit.sqlite", database_url=url)
    clients = ClientRegistry(data / "security.sqlite", url)
    study = {"resourceType": "ResearchStudy", "status": "active"}
    search = parse_search("ResearchStudy", [("title", "T 1"), ("_count", "20")])
    event = AccessRecord("read", 0, 200, "GET", "/fhir", None, None, "c", None)

    def writes() -> None:
        for i in range(n):
            fhir.put({**study, "id": f"s{i}", "title": f"T {i}"})

    def reads() -> None:
        for i in range(n):
            fhir.read("ResearchStudy", f"s{i}")

    def searches() -> None:
        for _ in range(50):
            fhir.search(search)

    def appends() -> None:
        for _ in range(n):
            audit.record(event)
        audit.flush()

    def jtis() -> None:
        for i in range(n):
            clients.use_jti("c", f"j{i}", time.time() + 60)

    try:
        return {
            "fhir write/s": n / _timed(writes),
            "fhir read/s": n / _timed(reads),
            "fhir search/s": 50 / _timed(searches),
            "audit append/s": n / _timed(appends),
            "jti check/s": n / _timed(jtis),
        }
    finally:
        fhir.close()
        audit.close()
        clients.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--pg-url", default=os.environ.get("PG_URL"))
    args = parser.parse_args()
    stop: Callable[[], None] = lambda: None  # noqa: E731
    admin = args.pg_url
    if admin is None:
        admin, stop = start_postgres(free_port(), durable=True)  # commits flushed, as SQLite's
    results: dict[str, dict[str, list[float]]] = {"sqlite": {}, "postgresql": {}}
    try:
        for _ in range(args.rounds):
            for engine in ("sqlite", "postgresql"):
                url = new_database(admin) if engine == "postgresql" else None
                with tempfile.TemporaryDirectory() as tmp:
                    for name, value in _round(Path(tmp), url, args.n).items():
                        results[engine].setdefault(name, []).append(value)
    finally:
        stop()
    print(f"load average {os.getloadavg()[0]:.1f} (1 min); {args.rounds} rounds of {args.n}")
    print(f"{'operation':<16}{'sqlite':>12}{'postgresql':>12}{'pg/sqlite':>11}")
    for name in results["sqlite"]:
        lite = statistics.median(results["sqlite"][name])
        pg = statistics.median(results["postgresql"][name])
        print(f"{name:<16}{lite:>12.0f}{pg:>12.0f}{pg / lite:>11.2f}")


if __name__ == "__main__":
    main()
