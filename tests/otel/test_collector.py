"""Traces received by a real OpenTelemetry Collector (OTLP/HTTP receiver, file exporter):
a live gateway's request spans named by route template, with the index and storage spans
under them, the request id, and nothing of the request's data; the command-line jobs and
the export process trace as well."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer
from tests.otel.conftest import Collector


def _traced(collector: Collector, service: str) -> dict[str, str]:
    return {"GATEWAY_TRACING__ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_SERVICE_NAME": service, "OTEL_BSP_SCHEDULE_DELAY": "200"}  # fmt: skip


def _by_trace(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["traceId"]].append(span)
    return traces


def _trace_of(spans: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    for trace in _by_trace(spans).values():
        if any(s["attrs"].get("gateway.request_id") == rid for s in trace):
            return trace
    return []


def test_a_stow_and_a_qido_reach_the_collector_as_route_spans_with_index_and_storage_spans(
    collector: Collector, tmp_path: Path
) -> None:
    service = f"gateway-{uuid.uuid4().hex[:8]}"
    live = LiveServer(tmp_path / "data", extra_env=_traced(collector, service)).start()
    try:
        datasets = cohort(instances_per_series=2)
        stored = stow(live, [part10(ds) for ds in datasets])
        assert stored.status_code == 200, stored.text
        patient = str(datasets[0].PatientID)
        found = httpx.get(f"{live.dicomweb}/studies", params={"PatientID": patient}, timeout=30)
        assert found.status_code == 200 and found.json(), found.text
        rids = (stored.headers["X-Request-ID"], found.headers["X-Request-ID"])
        spans = collector.wait_for(lambda s: all(_trace_of(s, r) for r in rids))
    finally:
        live.stop()
    mine = [s for s in spans if s["service"] == service]
    stow_trace, qido_trace = (_trace_of(mine, r) for r in rids)
    assert stow_trace and qido_trace, sorted({s["name"] for s in mine})
    stow_names = {s["name"] for s in stow_trace}
    assert "POST /dicom-web/studies" in stow_names, stow_names
    assert "filesystem put_file" in stow_names, stow_names
    assert any(n.endswith(" add_instances") for n in stow_names), stow_names  # the index
    qido_names = {s["name"] for s in qido_trace}
    assert "GET /dicom-web/studies" in qido_names, qido_names
    assert {s["attrs"].get("gateway.backend") for s in qido_trace} & {"sqlite", "elasticsearch"}
    root = next(s for s in qido_trace if s["name"] == "GET /dicom-web/studies")
    assert root["attrs"]["gateway.request_id"] == rids[1] and not root.get("parentSpanId")
    for span in qido_trace:  # one trace: every other span hangs under the request span
        assert span is root or span.get("parentSpanId"), span["name"]
    # no patient data in any span: ids, names, UIDs, the query's value
    phi = {str(ds.PatientID) for ds in datasets} | {str(ds.PatientName) for ds in datasets}
    phi |= {str(ds.StudyInstanceUID) for ds in datasets} | {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    texts = [s["name"] for s in mine] + [str(v) for s in mine for v in s["attrs"].values()]
    assert not [t for t in texts if any(p and p in t for p in phi)]


def test_the_import_command_sends_one_trace_per_run_to_the_collector(
    collector: Collector, tmp_path: Path
) -> None:
    service = f"import-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "in"
    folder.mkdir()
    for n, ds in enumerate(cohort(instances_per_series=2)):
        (folder / f"{n}.dcm").write_bytes(part10(ds))
    live = LiveServer(tmp_path / "data", extra_env=_traced(collector, service))
    done = live.cli("import", str(folder), "--quiet")
    assert done.returncode == 0, done.stderr
    spans = collector.wait_for(  # the root span ends last: its batch is the last one
        lambda s: any(x["service"] == service and x["name"] == "job import" for x in s)
    )
    mine = [s for s in spans if s["service"] == service]
    roots = [s for s in mine if s["name"] == "job import"]
    assert len(roots) == 1 and roots[0]["attrs"]["gateway.job"] == "import", mine
    names = {s["name"] for s in mine if s["traceId"] == roots[0]["traceId"]}
    assert "filesystem put_file" in names and any(n.endswith(" add_instances") for n in names)


def test_an_export_run_in_the_export_process_is_traced(
    collector: Collector, tmp_path: Path
) -> None:
    service = f"export-{uuid.uuid4().hex[:8]}"
    env = {**_traced(collector, service), "GATEWAY_BULK__PROCESS": "true"}
    live = LiveServer(tmp_path / "data", extra_env=env).start()
    try:
        assert stow(live, [part10(ds) for ds in cohort()]).status_code == 200
        kick = httpx.get(f"{live.url}/fhir/$export", params={"_type": "ImagingStudy"},
                         headers={"Prefer": "respond-async", "Accept": "application/fhir+json"},
                         timeout=30)  # fmt: skip
        assert kick.status_code == 202, kick.text
        spans = collector.wait_for(
            lambda s: any(x["service"] == service and x["name"] == "job export" for x in s), 90
        )
    finally:
        live.stop()
    exports = [s for s in spans if s["service"] == service and s["name"] == "job export"]
    assert exports and exports[0]["attrs"]["gateway.job"] == "export"
    under = {s["name"] for s in spans if s["traceId"] == exports[0]["traceId"]}
    assert len(under) > 1, under  # the index reads of the export are in its trace


def test_a_reindex_run_sends_its_trace_with_the_index_writes(
    collector: Collector, elasticsearch_url: str, tmp_path: Path
) -> None:
    service = f"reindex-{uuid.uuid4().hex[:8]}"
    prefix = f"otel{uuid.uuid4().hex[:10]}"
    env = {**_traced(collector, service), "GATEWAY_INDEX": "elasticsearch",
           "GATEWAY_ELASTICSEARCH__HOSTS": f'["{elasticsearch_url}"]',
           "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": prefix}  # fmt: skip
    live = LiveServer(tmp_path / "data", extra_env=env)
    try:
        folder = tmp_path / "in"
        folder.mkdir()
        for n, ds in enumerate(cohort(instances_per_series=2)):
            (folder / f"{n}.dcm").write_bytes(part10(ds))
        assert live.cli("import", str(folder), "--quiet").returncode == 0
        done = live.cli("reindex", "--quiet")
        assert done.returncode == 0, done.stderr
        spans = collector.wait_for(
            lambda s: any(x["service"] == service and x["name"] == "job reindex" for x in s)
        )
    finally:
        httpx.delete(f"{elasticsearch_url}/{prefix}-*", timeout=120)
    roots = [s for s in spans if s["service"] == service and s["name"] == "job reindex"]
    assert len(roots) == 1, [s["name"] for s in spans if s["service"] == service]
    names = {s["name"] for s in spans if s["traceId"] == roots[0]["traceId"]}
    assert "job reindex run" in names and "elasticsearch add_instances" in names, names
