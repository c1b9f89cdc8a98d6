"""Prometheus metrics (prometheus-client), safe with several worker processes.

The metric objects are process-wide, as prometheus-client intends; with more than one
worker ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a folder of the data dir before the
workers start, so that ``/metrics`` in any worker answers for all of them.

Each metered call is also a trace span when tracing is on (``server/tracing.py``).

Labels never carry request data: routes are templates (``/dicom-web/studies/{study}``),
failure reasons are DICOM status codes, backends are names.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from server import tracing

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class _Metrics:
    http_requests: Counter
    http_latency: Histogram
    ingest_instances: Counter
    ingest_bytes: Counter
    ingest_failures: Counter
    backend_latency: Histogram
    backend_errors: Counter
    job_items: Counter
    file_bytes: Counter
    body_cache: Counter


@functools.cache
def _m() -> _Metrics:
    """Built on first use, so that ``serve`` can choose multi-process mode before (the
    prometheus-client value class is fixed when the library is first imported)."""
    from prometheus_client import Counter, Histogram

    return _Metrics(
        http_requests=Counter(
            "gateway_http_requests_total", "HTTP requests by route template, method and status",
            ["route", "method", "status"],
        ),
        http_latency=Histogram(
            "gateway_http_request_duration_seconds", "HTTP request duration until the last byte",
            ["route", "method"], buckets=_LATENCY,
        ),
        ingest_instances=Counter(
            "gateway_ingest_instances_total",
            "Instances through the ingest pipeline (STOW, import, DIMSE, pull) by outcome",
            ["outcome"],
        ),
        ingest_bytes=Counter("gateway_ingest_bytes_total", "Bytes received by the ingest pipeline"),
        ingest_failures=Counter(
            "gateway_ingest_failures_total", "Refused instances by DICOM failure status", ["reason"]
        ),
        backend_latency=Histogram(
            "gateway_backend_duration_seconds", "Index, storage and database calls",
            ["backend", "operation"], buckets=_LATENCY,
        ),
        backend_errors=Counter(
            "gateway_backend_errors_total", "Index, storage and database calls that failed",
            ["backend", "operation"],
        ),
        job_items=Counter(
            "gateway_job_items_total", "Items processed by background jobs (export, reindex, pull)",
            ["job", "outcome"],
        ),
        file_bytes=Counter(
            "gateway_http_file_bytes_total",
            "Response bytes sent from stored files by zero-copy sends, by how they went"
            " (sendfile: kernel to socket; copy: read and written by the server)",
            ["mode"],
        ),
        body_cache=Counter(
            "gateway_wado_body_cache_total",
            "WADO-RS bodies kept as one file: hit, miss, kept, evicted, purged (a blob deleted),"
            " abandoned (a blob gone while writing), skipped (disk nearly full)",
            ["outcome"],
        ),
    )  # fmt: skip


def use_multiprocess(folder: Path) -> None:
    """Before the first metric: every process writes its values under ``folder`` (emptied)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    m = _m()
    m.http_requests.labels(route, method, str(status)).inc()
    m.http_latency.labels(route, method).observe(seconds)


def observe_file_bytes(mode: str, count: int) -> None:
    _m().file_bytes.labels(mode).inc(count)


def observe_body_cache(outcome: str, count: int = 1) -> None:
    _m().body_cache.labels(outcome).inc(count)


def observe_ingest(sizes: Sequence[int], failures: Sequence[int | None]) -> None:
    """One ingest call: the received sizes and, per item, its failure status (None: stored)."""
    m = _m()
    m.ingest_bytes.inc(sum(sizes))
    for failure in failures:
        if failure is None:
            m.ingest_instances.labels("stored").inc()
        else:
            m.ingest_instances.labels("refused").inc()
            m.ingest_failures.labels(f"0x{failure:04X}").inc()


def observe_job(job: str, outcome: str, items: int = 1) -> None:
    _m().job_items.labels(job, outcome).inc(items)


@contextmanager
def timed(backend: str, operation: str, *, current: bool = True) -> Iterator[None]:
    """Latency and errors of one backend call, and its trace span when tracing is on
    (``current=False`` for generators: the span is not made the current one)."""
    m = _m()
    started = time.perf_counter()
    name = f"{backend} {operation}"
    attributes = {"gateway.backend": backend, "gateway.operation": operation}
    traced = (
        tracing.span(name, **attributes) if current else tracing.detached_span(name, **attributes)
    )
    try:
        with traced:
            yield
    except Exception:
        m.backend_errors.labels(backend, operation).inc()
        raise
    finally:
        m.backend_latency.labels(backend, operation).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The text exposition for every worker process (multi-process mode) or this one."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    _m()  # every family listed, even before its first sample
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def job_exposition(states: dict[str, dict[str, int]], progress: dict[str, int]) -> bytes:
    """Stored jobs as gauges, read from the shared database at scrape time (so every
    replica, and every worker process, reports the same numbers): ``gateway_jobs`` by kind
    and state, ``gateway_job_progress_items`` of the active job of each kind."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    class _Jobs:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            jobs = GaugeMetricFamily(
                "gateway_jobs",
                "Stored jobs (export, reindex, pull) by state",
                labels=["job", "state"],
            )
            for kind, counts in states.items():
                for state in ("queued", "running", "complete", "failed"):
                    jobs.add_metric([kind, state], counts.get(state, 0))
            yield jobs
            done = GaugeMetricFamily(
                "gateway_job_progress_items",
                "Items done by the active jobs of each kind (reindex: instances indexed; pull: stored)",
                labels=["job"],
            )
            for kind, items in progress.items():
                done.add_metric([kind], items)
            yield done

    registry = CollectorRegistry()
    registry.register(_Jobs())
    return generate_latest(registry)


C = TypeVar("C", bound=type)


def metered(backend: str) -> Callable[[C], C]:
    """Class decorator: time every public method (and whole iterations of generator methods)
    into ``gateway_backend_duration_seconds`` / ``gateway_backend_errors_total``."""

    def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with timed(backend, name, current=False):
                    yield from fn(*args, **kwargs)

            return generator

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with timed(backend, name):
                return fn(*args, **kwargs)

        return call

    def decorate(cls: C) -> C:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(member):
                setattr(cls, name, wrap(member, name))
        return cls

    return decorate
