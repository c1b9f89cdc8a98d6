"""What operators rely on, against real gateway processes: request ids that join the access
log and the audit trail, an access log without patient data (plain and JSON), liveness vs
readiness, Prometheus metrics (one and several worker processes), offline API docs, the
start-up banner and settings errors."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer
from tests.security.conftest import AS_SENT, add_client, auth_env, cli_ok, token

SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development server that logs at info level in JSON, with one stored study."""
    data = tmp_path_factory.mktemp("ops") / "data"
    live = LiveServer(
        data,
        extra_env={
            "GATEWAY_LOG_LEVEL": "info",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_NO_SUCH_SETTING": "1",
        },
    ).start()
    try:
        yield live
    finally:
        live.stop()


def _log_lines(live: LiveServer) -> list[dict[str, object]]:
    time.sleep(0.2)  # the last line of a response is written after its last byte
    lines = []
    for raw in live.log_path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_every_response_carries_a_request_id_and_a_safe_one_sent_is_kept(
    logged: LiveServer,
) -> None:
    mine = "trace-0123456789abcdef"
    assert (
        httpx.get(f"{logged.dicomweb}/studies", headers={"X-Request-ID": mine}).headers[
            "x-request-id"
        ]
        == mine
    )
    for hostile in ("Kowalski Carla", "x" * 200, "short", "a\tb-0123456789"):
        got = httpx.get(f"{logged.dicomweb}/studies", headers={"X-Request-ID": hostile})
        rid = got.headers["x-request-id"]
        assert rid != hostile and SAFE_ID.fullmatch(rid), hostile
    unmatched = httpx.get(f"{logged.url}/no/such/route")
    assert unmatched.status_code == 404 and SAFE_ID.fullmatch(unmatched.headers["x-request-id"])


def test_access_log_names_route_templates_never_uids_or_search_values(
    logged: LiveServer,
) -> None:
    sets = cohort(instances_per_series=1)
    assert stow(logged, [part10(ds) for ds in sets]).status_code == 200
    study = sets[0].StudyInstanceUID
    name = str(sets[0].PatientName)
    rid = "join-me-0123456789"
    r = httpx.get(
        f"{logged.dicomweb}/studies/{study}/metadata", headers={"X-Request-ID": rid}, timeout=30
    )
    assert r.status_code == 200
    httpx.get(f"{logged.dicomweb}/studies", params={"PatientName": name, "StudyInstanceUID": study})
    lines = _log_lines(logged)
    access = [line for line in lines if line.get("logger") == "gateway.access"]
    mine = [line for line in access if line["http"]["request_id"] == rid]  # type: ignore[index]
    assert len(mine) == 1, access[-5:]
    http = mine[0]["http"]
    assert http == {**http, "method": "GET", "route": "/dicom-web/studies/{study}/metadata",
                    "status": 200, "client_id": "-"}  # fmt: skip
    assert http["bytes"] == len(r.content) and http["duration_ms"] >= 0  # type: ignore[operator]
    text = logged.log_path.read_text()
    assert study not in text and name not in text and name.split("^")[0] not in text
    routes = {line["http"]["route"] for line in access}  # type: ignore[index]
    assert "/dicom-web/studies" in routes and "/dicom-web/studies/{study}/metadata" in routes
    assert all(isinstance(line["time"], str) and line["level"] for line in lines)


def test_unknown_gateway_variables_are_reported_at_start(logged: LiveServer) -> None:
    text = logged.log_path.read_text()
    assert "GATEWAY_NO_SUCH_SETTING" in text
    assert "GATEWAY_LOG_LEVEL" not in text.split("GATEWAY_NO_SUCH_SETTING")[0].split("\n")[-1]


def test_start_up_banner_names_the_urls_auth_and_the_next_step(logged: LiveServer) -> None:
    text = logged.log_path.read_text()
    for needle in (f"{logged.url}/dicom-web", f"{logged.url}/fhir", "/oauth/token", "/docs",
                   "/readyz", "authorisation OFF", "The store is empty. Next:",
                   "imaging-gateway dataset create"):  # fmt: skip
        assert needle in text, needle


def test_liveness_does_not_ask_the_index_readiness_asks_every_component(
    logged: LiveServer,
) -> None:
    assert httpx.get(f"{logged.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{logged.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert ready.headers["cache-control"] == "no-store"


def test_readiness_names_the_index_when_its_tables_are_gone(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data").start()
    try:
        assert httpx.get(f"{live.url}/readyz").status_code == 200
        with sqlite3.connect(live.data_dir / "index.sqlite") as conn:  # a damaged index file
            conn.execute("ALTER TABLE instance RENAME TO instance_moved")
        down = httpx.get(f"{live.url}/readyz")
        assert down.status_code == 503 and down.json()["failing"] == ["index"]
        alive = httpx.get(f"{live.url}/healthz")  # development: the caller sees the counts part
        assert alive.status_code == 200 and alive.json()["index"] == "unavailable"
        with sqlite3.connect(live.data_dir / "index.sqlite") as conn:
            conn.execute("ALTER TABLE instance_moved RENAME TO instance")
        assert httpx.get(f"{live.url}/readyz").status_code == 200
    finally:
        live.stop()


def test_readiness_fails_when_the_database_is_gone(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data").start()
    try:
        assert httpx.get(f"{live.url}/readyz").status_code == 200
        blobs = live.data_dir / "blobs"
        blobs.rename(live.data_dir / "blobs-moved")
        down = httpx.get(f"{live.url}/readyz")
        assert down.status_code == 503 and "store" in down.json()["failing"]
        assert int(down.headers["retry-after"]) > 0
        assert httpx.get(f"{live.url}/healthz").status_code == 200  # still alive
        (live.data_dir / "blobs-moved").rename(blobs)
        assert httpx.get(f"{live.url}/readyz").status_code == 200
    finally:
        live.stop()


def _samples(text: str, family: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(family + "{") or line.startswith(family + " "):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_count_requests_by_route_template_and_ingest_by_outcome(
    logged: LiveServer,
) -> None:
    before = _samples(httpx.get(f"{logged.url}/metrics").text, "gateway_http_requests_total")
    for _ in range(3):
        httpx.get(f"{logged.dicomweb}/studies")
    sets = cohort(instances_per_series=1)
    assert stow(logged, [part10(ds) for ds in sets]).status_code == 200
    bad = stow(logged, [b"not dicom at all"])
    assert bad.status_code in (400, 409, 415, 422)
    page = httpx.get(f"{logged.url}/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    after = _samples(page.text, "gateway_http_requests_total")
    key = 'gateway_http_requests_total{method="GET",route="/dicom-web/studies",status="200"}'
    assert after[key] - before.get(key, 0) == 3
    ingest = _samples(page.text, "gateway_ingest_instances_total")
    assert ingest['gateway_ingest_instances_total{outcome="stored"}'] >= len(sets)
    assert ingest['gateway_ingest_instances_total{outcome="refused"}'] >= 1
    assert _samples(page.text, "gateway_ingest_bytes_total")["gateway_ingest_bytes_total"] > 0
    assert "gateway_backend_duration_seconds_bucket" in page.text
    assert "1.2." not in page.text.replace("0.", "")  # no UID-like label values


def test_metrics_are_for_allowed_networks_or_administrators(tmp_path: Path) -> None:
    live = LiveServer(
        tmp_path / "data", extra_env=auth_env(GATEWAY_METRICS__ALLOW='["10.99.0.0/16"]')
    )
    admin = add_client(live, "operator", "--admin")
    user = add_client(live, "viewer")
    cli_ok(live, "dataset", "create", "d1", "--title", "D1", "--cancer-type", "lung", *AS_SENT)
    live.start()
    try:
        assert httpx.get(f"{live.url}/metrics").status_code == 403
        assert httpx.get(f"{live.url}/healthz").json() == {"status": "ok"}
        bearer = {"Authorization": f"Bearer {token(live, user)}"}
        assert httpx.get(f"{live.url}/metrics", headers=bearer).status_code == 403
        bearer = {"Authorization": f"Bearer {token(live, admin)}"}
        assert httpx.get(f"{live.url}/metrics", headers=bearer).status_code == 200
        assert httpx.get(f"{live.url}/readyz").status_code == 200  # probes need no token
    finally:
        live.stop()


def test_metrics_add_up_across_worker_processes(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", extra_env={"GATEWAY_WORKERS": "2"}).start()
    try:
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            httpx.get(f"{live.url}/fhir/metadata")
        total = 0.0
        for _ in range(3):  # whichever worker answers, it reports all of them
            page = httpx.get(f"{live.url}/metrics").text
            got = _samples(page, "gateway_http_requests_total")
            total = got[
                'gateway_http_requests_total{method="GET",route="/fhir/metadata",status="200"}'
            ]
            assert total == 40
        assert list((live.data_dir / "metrics").glob("*.db"))
    finally:
        live.stop()


def test_api_docs_work_offline(logged: LiveServer) -> None:
    page = httpx.get(f"{logged.url}/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", page.text)
    flat = [u for pair in urls for u in pair if u]
    assert flat and all(u.startswith("/") for u in flat), flat  # nothing from a CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        got = httpx.get(f"{logged.url}/docs/assets/{asset}")
        assert got.status_code == 200 and len(got.content) > 100_000
    assert "SwaggerUIBundle" in httpx.get(f"{logged.url}/docs/assets/swagger-ui-bundle.js").text
    assert httpx.get(f"{logged.url}/docs/assets/..%2fmain.py").status_code == 404
    assert httpx.get(f"{logged.url}/openapi.json").json()["openapi"].startswith("3.")


def test_a_bad_log_level_is_a_clear_error(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", extra_env={"GATEWAY_LOG_LEVEL": "verbose"})
    done = live.cli("check")
    assert done.returncode != 0
    assert "log_level" in done.stderr and "debug, info, warning" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_audit_event_of_a_request_carries_its_request_id(logged: LiveServer) -> None:
    rid = "audit-join-0123456789"
    assert httpx.get(f"{logged.dicomweb}/studies", headers={"X-Request-ID": rid}).is_success
    found: list[dict[str, object]] = []
    for _ in range(50):  # the audit log writes in the background, in batches
        bundle = httpx.get(f"{logged.url}/fhir/AuditEvent", params={"_count": "200"}).json()
        found = [
            e["resource"]
            for e in bundle.get("entry", [])
            if rid in json.dumps(e["resource"].get("entity", []))
        ]
        if found:
            break
        time.sleep(0.1)
    assert len(found) == 1
    request = found[0]["entity"][0]  # type: ignore[index]
    assert request["detail"] == [{"type": "request-id", "valueString": rid}]
