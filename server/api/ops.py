"""What operators and orchestrators call: liveness, readiness, metrics, and the API docs.

- ``/healthz``: liveness. The process answers; nothing else is asked, so an index outage
  does not make an orchestrator restart every replica. Administrators (and development mode)
  also get the version and the index counts (that part needs the index).
- ``/readyz``: readiness. The index, the blob store and the database answer now (a
  constant-time read each: it runs every few seconds on every replica); else 503
  with the names of the failing components (no detail, no secret) and Retry-After. While
  an upgrade's index backfill runs in the background: 503 ``migrating`` with its names.
- ``/metrics``: Prometheus text format, for the networks in ``GATEWAY_METRICS__ALLOW``
  (loopback by default) or an administrator's token; labels carry no request data.
- ``/docs``: Swagger UI served from the gateway's own files (works offline, no CDN).
"""

from __future__ import annotations

import ipaddress
import logging
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from server import __version__
from server.api.deps import gateway, principal
from server.errors import Forbidden, NotFound
from server.metrics import exposition, job_exposition

router = APIRouter(include_in_schema=False)
log = logging.getLogger("gateway.ops")
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def _admin(request: Request) -> bool:
    gw = gateway(request)
    if gw.settings.auth.enabled and not request.headers.get("authorization"):
        return False
    caller = principal(request)  # a bad token is a 401, as everywhere
    return bool(caller.admin or caller.unrestricted)


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, object]:
    if not _admin(request):
        return {"status": "ok"}
    try:
        counts = await run_in_threadpool(gateway(request).index.counts)
    except Exception as exc:  # any index failure: alive all the same; /readyz names it
        log.warning("healthz: index: %s", exc)
        return {"status": "ok", "version": __version__, "index": "unavailable"}
    return {"status": "ok", "version": __version__, **counts}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    failing = await run_in_threadpool(_failing, request)
    if failing:
        log.warning("not ready: %s", ", ".join(failing))
        return JSONResponse(
            {"status": "unavailable", "failing": failing}, 503, headers={"Retry-After": "5"}
        )
    migrating = await run_in_threadpool(gateway(request).migrations.pending)
    if migrating:  # serving already; what needs the filled values answers 503 meanwhile
        return JSONResponse(
            {"status": "migrating", "migrating": migrating}, 503, headers={"Retry-After": "30"}
        )
    return JSONResponse({"status": "ready"})


def _failing(request: Request) -> list[str]:
    gw = gateway(request)
    failing = []
    try:
        gw.index.ping()  # constant time: a probe runs every few seconds on every replica
    except Exception as exc:  # any failure of the index is "not ready", as below
        log.warning("readiness: index: %s", exc)
        failing.append("index")
    problem = gw.store.ready()
    if problem is not None:
        log.warning("readiness: blob store: %s", problem)
        failing.append("store")
    try:
        gw.fhir_store.read("ResearchStudy", "readiness-probe")
        gw.clients.get("readiness-probe")
    except Exception as exc:  # any failure of the database is "not ready"
        log.warning("readiness: database: %s", exc)
        failing.append("database")
    return failing


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    settings = gateway(request).settings.metrics
    if not settings.enabled:
        raise NotFound("metrics are disabled (GATEWAY_METRICS__ENABLED)")
    client = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(client)
        allowed = any(address in ipaddress.ip_network(n, strict=False) for n in settings.allow)
    except ValueError:
        allowed = False
    if not allowed and not _admin(request):
        raise Forbidden("metrics are for the networks in GATEWAY_METRICS__ALLOW or administrators")
    body, media_type = await run_in_threadpool(exposition)
    jobs = await run_in_threadpool(_jobs, request)
    return Response(body + jobs, media_type=media_type)


def _jobs(request: Request) -> bytes:
    gw = gateway(request)
    try:
        active = gw.reindexer.jobs.active()
        states = {"export": gw.bulk.jobs.counts(), "reindex": gw.reindexer.jobs.counts(),
                  "pull": gw.pull_jobs.job_states()}  # fmt: skip
        progress = {"reindex": active.report.indexed if active else 0,
                    "pull": gw.pull_jobs.running_items_done()}  # fmt: skip
    except Exception:  # the database is down: /readyz says so; the process metrics remain
        log.warning("job metrics unavailable", exc_info=True)
        return b""
    return job_exposition(states, progress)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Cancer-imaging interoperability gateway: API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFound("no such documentation asset")
    data = resources.files("fastapi_swagger").joinpath("resources", name).read_bytes()
    return Response(
        data, media_type=_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"}
    )
