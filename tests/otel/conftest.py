"""A real OpenTelemetry Collector (its OTLP/HTTP receiver, the contrib file exporter) for
the tracing tests: built once by tests/otel/setup.sh, started per module on a free port,
every span it receives written as OTLP JSON lines to a file the tests read."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.live import free_port

SETUP = Path(__file__).parent / "setup.sh"
CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {spans}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"""


@dataclass
class Collector:
    port: int
    spans_file: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, with ``service`` (its resource's service.name) and
        ``attrs`` (attributes as a plain dict) added."""
        if not self.spans_file.exists():
            return []
        found: list[dict[str, Any]] = []
        for line in self.spans_file.read_bytes().splitlines():
            if not line.strip():
                continue
            for resource in orjson.loads(line).get("resourceSpans", []):
                service = _attrs(resource.get("resource", {}).get("attributes", [])).get(
                    "service.name"
                )
                for scope in resource.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        found.append({**span, "service": service,
                                      "attrs": _attrs(span.get("attributes", []))})  # fmt: skip
        return found

    def wait_for(self, check: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if check(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


def _attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: next(iter(a.get("value", {}).values()), None) for a in items}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    built = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    binary = built.stdout.strip().splitlines()[-1]
    folder = tmp_path_factory.mktemp("otel")
    port = free_port()
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(port=port, spans=folder / "spans.jsonl"))
    log = (folder / "collector.log").open("wb")
    process = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (folder / "collector.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the collector did not listen"
                time.sleep(0.1)
        yield Collector(port, folder / "spans.jsonl")
    finally:
        process.terminate()
        process.wait(15)
        log.close()
