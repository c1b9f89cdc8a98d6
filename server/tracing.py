"""OpenTelemetry traces: off unless configured, and then one span per request, per index,
storage and database call, and per outbound HTTP call.

Tracing is on when ``GATEWAY_TRACING__ENABLED=true`` or when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; spans then
go to that OTLP/HTTP (protobuf) endpoint through a batching exporter, configured by the
standard ``OTEL_*`` variables (headers, timeout, ``OTEL_SERVICE_NAME``, sampler).

When off, nothing of the SDK is imported and :func:`span` is a shared no-op context
manager: the cost is one global lookup per instrumented call.

Span attributes never carry request data: routes are templates, backends and operations
are names; the request span carries the request id (``gateway.request_id``) so a trace
joins the access log and the audit trail.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("gateway.tracing")
_tracer: Any = None
_provider: Any = None
_override: Any = None  # a span exporter set by export_to (tests)
_NOOP = contextlib.nullcontext()


def enabled() -> bool:
    return _tracer is not None


def wanted(setting: bool) -> bool:
    """True if the setting or the standard OTLP endpoint variables ask for traces."""
    standard = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    return not disabled and (setting or any(os.environ.get(name) for name in standard))


def export_to(exporter: Any) -> None:
    """Send spans of every later :func:`configure` in this process to ``exporter`` (an SDK
    span exporter, e.g. the in-memory one of the tests) instead of OTLP; None undoes it."""
    global _override
    _override = exporter


def configure(setting: bool, exporter: Any = None) -> bool:
    """Set up the tracer for this process (call after any fork). ``exporter``: a span
    exporter to use instead of OTLP/HTTP. Returns whether tracing is on."""
    global _tracer, _provider
    exporter = exporter if exporter is not None else _override
    if exporter is None and not wanted(setting):
        shutdown()
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from server import __version__

    service = os.environ.get("OTEL_SERVICE_NAME") or "imaging-gateway"
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": __version__})
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Not the global provider: libraries that trace on their own (FastAPI's native telemetry
    # records raw URL paths and queries) stay silent; spans come from this module only.
    _shutdown_provider()
    _provider = provider
    _tracer = provider.get_tracer("imaging-gateway", __version__)
    log.info("tracing on: service %s", service)
    return True


@contextlib.contextmanager
def job(name: str, setting: bool) -> Iterator[None]:
    """A command-line job (``import``, ``pull``, ``reindex``) as one trace when tracing is
    configured: a root span ``job <name>`` over every storage, index, database and outbound
    span of the run, flushed to the collector before the command exits."""
    configure(setting)
    try:
        with span(f"job {name}", **{"gateway.job": name}):
            yield
    finally:
        shutdown()


def shutdown() -> None:
    """Flush spans still in the batch and stop (clean shutdown)."""
    global _tracer
    _tracer = None
    _shutdown_provider()


def _shutdown_provider() -> None:
    global _provider
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()
    _provider = None


def span(
    name: str, kind: str = "internal", parent: Any = None, **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """A span as the current one (a no-op when tracing is off); ``parent``: a context from
    :func:`extract`."""
    if _tracer is None:
        return _NOOP
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(
        name, context=parent, kind=getattr(SpanKind, kind.upper()), attributes=attributes
    )


@contextlib.contextmanager
def detached_span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span not made current (generators: their body runs across other contexts)."""
    if _tracer is None:
        yield None
        return
    s = _tracer.start_span(name, attributes=attributes)
    try:
        yield s
    except BaseException as exc:
        s.record_exception(exc)
        from opentelemetry.trace import Status, StatusCode

        s.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        s.end()


def inject(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the W3C ``traceparent`` of the current span (outbound calls)."""
    if _tracer is not None:
        from opentelemetry.propagate import inject as put

        put(headers)
    return headers


def extract(headers: dict[str, str]) -> Any:
    """The remote parent context of an incoming request (``traceparent``), or None."""
    if _tracer is None:
        return None
    from opentelemetry.propagate import extract as get

    return get(headers)
