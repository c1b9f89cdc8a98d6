"""``make test``'s pytest passes: the whole suite on SQLite, the API suites on Elasticsearch,
and a slice of them with the shared state in PostgreSQL (after the SQLite pass).

Both passes share one Elasticsearch (ES_URL, or one started here with tests/es/start.sh)
and run at the same time by default: most of a pass's wall time is spent waiting for
gateway processes and HTTP answers, so a second pass fills the idle core. TEST_JOBS=1 runs
them one after the other. The SQLite pass prints as it goes; the Elasticsearch pass's
output follows when both are done. The exit status is non-zero if either pass failed.

    python -m tests.run_passes [PYTEST ARGS FOR BOTH PASSES]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The API suites again (DICOMweb, FHIR, access control, CLI, catalogue, federation, DIMSE,
# and the no-PHI proof of de-identification),
# every live gateway on a real Elasticsearch; tests marked index_independent are left out.
ES_PASS = [
    "tests/api", "tests/fhir", "tests/security", "tests/cli", "tests/storage",
    "tests/catalogue", "tests/federation", "tests/dimse", "tests/deid/test_no_phi.py",
    "tests/replicas", "tests/s3",
    "--index-backend", "elasticsearch",
    "--ignore=tests/fhir/test_validator_served.py", "--ignore=tests/fhir/test_validator_validate.py",
]  # fmt: skip


# A slice of the API suites again with every live gateway's non-index state (FHIR store,
# clients, jti, sign-in sessions, jobs, audit chain) in PostgreSQL: a throwaway cluster
# started by the pass (tests/pg_server.py). Tests that open the SQLite files themselves are left out.
PG_PASS = [
    "tests/fhir/test_api_rest.py", "tests/fhir/test_bulk_export_restart.py",
    "tests/security/test_api_matrix.py", "tests/security/test_api_oauth.py",
    "tests/deid/test_ingest.py", "tests/replicas", "tests/pull/test_pull_dicomweb.py",
    "tests/security/test_api_login.py",
    "--deselect", "tests/security/test_api_oauth.py::test_secret_is_stored_hashed",
    "--database", "postgresql",
]  # fmt: skip


def _shared_elasticsearch() -> tuple[dict[str, str], Callable[[], None]]:
    """ES_URL for both passes; without one, a node started once for both."""
    if os.environ.get("ES_URL"):
        return {}, lambda: None
    from tests.es_server import ElasticsearchUnavailable, ensure_elasticsearch, must_run

    work = Path(tempfile.mkdtemp(prefix="imaging-gateway-tests."))
    try:
        url, stop = ensure_elasticsearch(work)
    except ElasticsearchUnavailable as exc:
        if must_run():
            raise
        print(f"no Elasticsearch ({exc}): its pass will skip", file=sys.stderr)
        return {}, lambda: None
    return {"ES_URL": url}, stop


def main(extra: list[str]) -> int:
    env_add, stop = _shared_elasticsearch()
    env = {**os.environ, **env_add}
    pytest = [sys.executable, "-m", "pytest", "-q", *extra]
    concurrent = os.environ.get("TEST_JOBS", "2") != "1"
    started = time.monotonic()
    es_pass: subprocess.Popen[bytes] | None = None
    try:
        with tempfile.TemporaryFile("w+") as es_log:
            if concurrent:
                es_pass = subprocess.Popen([*pytest, *ES_PASS], cwd=ROOT, env=env,
                                           stdout=es_log, stderr=subprocess.STDOUT)  # fmt: skip
            print("== SQLite pass", flush=True)
            sqlite_rc = subprocess.run(pytest, cwd=ROOT, env=env).returncode
            sqlite_time = time.monotonic() - started
            print("== PostgreSQL pass", flush=True)
            pg_rc = subprocess.run([*pytest, *PG_PASS], cwd=ROOT, env=env).returncode
            if es_pass is None:
                print("== Elasticsearch pass", flush=True)
                es_rc = subprocess.run([*pytest, *ES_PASS], cwd=ROOT, env=env).returncode
            else:
                es_rc = es_pass.wait()
                es_log.seek(0)
                print("== Elasticsearch pass", flush=True)
                sys.stdout.write(es_log.read())
    finally:
        if es_pass is not None and es_pass.poll() is None:  # interrupted
            es_pass.terminate()
            es_pass.wait()
        stop()
    total = time.monotonic() - started
    print(
        f"== SQLite pass: exit {sqlite_rc} after {sqlite_time:.0f} s; PostgreSQL pass: exit "
        f"{pg_rc}; Elasticsearch pass: exit {es_rc}; {total:.0f} s in all "
        f"({'concurrent' if concurrent else 'one after the other'})"
    )
    return 0 if sqlite_rc == 0 and pg_rc == 0 and es_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
