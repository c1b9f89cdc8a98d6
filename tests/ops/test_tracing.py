"""OpenTelemetry traces through a live gateway (uvicorn on a loopback port, in this process
so that the SDK's in-memory exporter receives the spans; no OTLP collector is installed by
the test setup): request spans carry the request id and continue an incoming traceparent,
storage/index/database calls are child spans, outbound calls propagate the trace, nothing
of the request's data is in a span, and with tracing off no SDK is loaded."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server import tracing
from server.app import create_app
from server.peers.base import Selection
from server.peers.dicomweb import DicomwebSource
from server.settings import Settings
from tests.helpers import cohort, multipart_body, part10
from tests.live import free_port

pytestmark = pytest.mark.index_independent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing.export_to(exporter)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("traced") / "data", environment="development",
        auth={"enabled": False}, deid={"default_profile": "none"}, tracing={"enabled": True},
    )  # type: ignore[arg-type]  # fmt: skip
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", exporter
    server.should_exit = True
    thread.join(30)
    tracing.export_to(None)
    tracing.configure(False)


def spans_of(exporter: InMemorySpanExporter, trace_id: int) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


def server_span(exporter: InMemorySpanExporter, rid: str) -> Any:
    deadline = time.monotonic() + 10  # the span ends after the last byte was sent
    while time.monotonic() < deadline:
        for s in exporter.get_finished_spans():
            if s.attributes.get("gateway.request_id") == rid:
                return s
        time.sleep(0.05)
    raise AssertionError(f"no server span with request id {rid}")


def test_a_stow_is_one_trace_with_storage_and_index_spans_under_the_request_span(
    traced: tuple[str, InMemorySpanExporter],
) -> None:
    url, exporter = traced
    datasets = cohort(instances_per_series=2)
    boundary = uuid.uuid4().hex
    answer = httpx.post(
        f"{url}/dicom-web/studies",
        content=multipart_body([part10(ds) for ds in datasets], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "traceparent": TRACEPARENT,
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text[:300]
    request = server_span(exporter, answer.headers["X-Request-ID"])
    assert format(request.context.trace_id, "032x") == TRACE_ID  # continues the caller's trace
    assert request.name == "POST /dicom-web/studies"
    assert request.attributes["http.response.status_code"] == 200
    children = spans_of(exporter, request.context.trace_id)
    names = {s.name for s in children}
    assert "filesystem put_file" in names and "sqlite add_instances" in names, names
    ids = {s.context.span_id for s in children}
    for s in children:
        if s.context.span_id != request.context.span_id:
            assert s.parent is not None and s.parent.span_id in ids, s.name

    # nothing of the request's data is in any span (UIDs, names, patient ids)
    secrets = {str(ds.PatientID) for ds in datasets} | {str(ds.StudyInstanceUID) for ds in datasets}
    values = [str(v) for s in children for v in (s.attributes or {}).values()] + [
        s.name for s in children
    ]
    assert not [v for v in values if any(secret in v for secret in secrets)]


def test_a_fhir_read_has_a_database_span(traced: tuple[str, InMemorySpanExporter]) -> None:
    url, exporter = traced
    answer = httpx.get(f"{url}/fhir/ResearchStudy", timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    request = server_span(exporter, answer.headers["X-Request-ID"])
    assert request.name == "GET /fhir/{rtype}"  # the route template, as in the access log
    names = {s.name for s in spans_of(exporter, request.context.trace_id)}
    assert any(n.startswith("fhir-store ") for n in names), names


def test_an_outbound_call_is_a_client_span_whose_trace_the_called_server_continues(
    traced: tuple[str, InMemorySpanExporter],
) -> None:
    url, exporter = traced
    source = DicomwebSource(f"{url}/dicom-web", retries=0)
    try:
        with tracing.span("pull test") as parent:
            source.search_for_studies(Selection(patient_id="nobody"))
    finally:
        source.close()
    trace_id = parent.get_span_context().trace_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = spans_of(exporter, trace_id)
        if any(s.kind.name == "SERVER" for s in spans):
            break
        time.sleep(0.05)
    client = [s for s in spans if s.kind.name == "CLIENT"]
    served = [s for s in spans if s.kind.name == "SERVER"]
    assert client and client[0].attributes["server.address"] == "127.0.0.1"
    assert served and served[0].parent.span_id == client[0].context.span_id
    assert served[0].name == "GET /dicom-web/studies"


def test_with_tracing_off_no_sdk_is_loaded_and_spans_are_a_shared_no_op(tmp_path: Path) -> None:
    code = (
        "import sys; from server.app import create_app; from server.settings import Settings; "
        "from server import tracing; "
        f"create_app(Settings(data_dir={str(tmp_path / 'data')!r}, environment='development', "
        "auth={'enabled': False})); tracing.configure(False); "
        "assert tracing.span('x') is tracing.span('y'); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_gateway_exporting_to_an_unreachable_otlp_endpoint_serves_all_the_same(
    tmp_path: Path,
) -> None:
    from tests.helpers import stow
    from tests.live import LiveServer

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "GATEWAY_LOG_LEVEL": "info",
    }
    live = LiveServer(tmp_path / "data", extra_env=env).start()
    try:
        datasets = cohort(instances_per_series=1)
        assert stow(live, [part10(ds) for ds in datasets]).status_code == 200
        assert httpx.get(f"{live.url}/readyz", timeout=30).status_code == 200
    finally:
        live.stop()
    assert "tracing on" in live.log_path.read_text()
