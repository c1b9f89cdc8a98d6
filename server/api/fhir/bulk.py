"""FHIR Bulk Data Access v2.0.0 export under ``/fhir`` (kick-off, status, cancel, files).

Registered before the FHIR REST router, so ``/fhir/$export`` and
``/fhir/Patient/$export`` are never read as a search or a read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response, StreamingResponse

from server.api.deps import audit_note, gateway, principal
from server.api.fhir.router import FHIR_JSON, fhir_base, fhir_body
from server.core.fhir.bulk import NDJSON, Level, parameters_pairs, parse_kickoff
from server.core.mediatypes import parse_accept
from server.errors import BadRequest, NotAcceptable
from server.services.bulk_export import BulkExportService
from server.services.bulk_jobs import JobState
from server.services.fhir_write import parse_json_object

router = APIRouter(tags=["FHIR Bulk Data export"])


def _service(request: Request) -> BulkExportService:
    return gateway(request).bulk


def _accept_outcome(request: Request) -> None:
    """Kick-off and status answer JSON (manifest) or an OperationOutcome."""
    for r in parse_accept(request.headers.get("accept")):
        if r.type in ("*/*", "application/*", "application/json", FHIR_JSON, "application/json+fhir"):  # fmt: skip
            return
    raise NotAcceptable(f"Accept {request.headers.get('accept')!r}: $export answers {FHIR_JSON}")


async def _kickoff(request: Request, level: Level, group: str | None = None) -> Response:
    _accept_outcome(request)
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":  # Bulk Data v2.0.0: the parameters in a Parameters body
        if any(key not in ("_format", "_pretty") for key, _ in pairs):
            raise BadRequest("a POST kick-off takes its parameters in the Parameters body only")
        pairs = parameters_pairs(parse_json_object(await fhir_body(request)))
    req = parse_kickoff(level, group, pairs, request.headers.get("prefer"))
    caller = principal(request)
    # The manifest's ``request``: the kick-off URL (of a POST: without its parameters).
    job = await run_in_threadpool(_service(request).kickoff, caller, req, str(request.url))
    audit_note(request, datasets=(group,) if group else (), entities=(f"export:{job.id}",))
    request.state.audit_note["action"] = "export"
    location = f"{fhir_base(request)}/$export-status/{job.id}"
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational",
         "diagnostics": "export accepted; poll the Content-Location URL"
         + (f" (ignored: {', '.join(req.ignored)})" if req.ignored else "")}]}  # fmt: skip
    return Response(orjson.dumps(body), 202, {"Content-Location": location}, FHIR_JSON)


# The six kick-off routes (Bulk Data v2.0.0 kick-off request): GET with query parameters or
# POST with a Parameters body, at system, all-patients and group level, all through _kickoff.
# The route names keep the published operation ids; summaries and descriptions are the API's.
_KICKOFFS: tuple[tuple[str, str, Level, str, str], ...] = (
    ("GET", "export_system", Level.SYSTEM, "system export (Bulk Data v2.0.0)",
     "Bulk Data v2.0.0 system-level export: every dataset the caller may export."),
    ("GET", "export_patients", Level.PATIENT, "patient export (Bulk Data v2.0.0)",
     "Bulk Data v2.0.0 all-patients export: the compartments of every patient the caller may see."),
    ("GET", "export_group", Level.GROUP, "group export: a dataset's cohort",
     "Bulk Data v2.0.0 group export; the Group id is a dataset's (ResearchStudy) id."),
    ("POST", "export_system_post", Level.SYSTEM, "system export, POST with Parameters",
     "Bulk Data v2.0.0 system export kicked off with a FHIR Parameters body."),
    ("POST", "export_patients_post", Level.PATIENT, "patient export, POST with Parameters",
     "Bulk Data v2.0.0 all-patients export kicked off with a FHIR Parameters body."),
    ("POST", "export_group_post", Level.GROUP, "group export, POST with Parameters",
     "Bulk Data v2.0.0 group export kicked off with a FHIR Parameters body."),
)  # fmt: skip
_KICKOFF_PATHS = {Level.SYSTEM: "/$export", Level.PATIENT: "/Patient/$export",
                  Level.GROUP: "/Group/{group}/$export"}  # fmt: skip


def _kickoff_endpoint(level: Level) -> Callable[..., Awaitable[Response]]:
    if level is Level.GROUP:

        async def export_group(request: Request, group: str) -> Response:
            return await _kickoff(request, Level.GROUP, group)

        return export_group

    async def export(request: Request) -> Response:
        return await _kickoff(request, level)

    return export


for _method, _name, _level, _summary, _description in _KICKOFFS:
    router.add_api_route(
        _KICKOFF_PATHS[_level], _kickoff_endpoint(_level), methods=[_method], name=_name,
        summary=_summary, description=_description,
    )  # fmt: skip


@router.get("/$export-status/{job_id}", summary="export status / manifest")
async def export_status(request: Request, job_id: str) -> Response:
    """Bulk Data v2.0.0 status request: 202 while running, 200 and the manifest when done."""
    service = _service(request)
    job = await run_in_threadpool(service.job_of, job_id, principal(request))
    audit_note(request, entities=(f"export:{job.id}",))
    request.state.audit_note["action"] = "export"
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        retry = str(service.settings.retry_after_seconds)
        return Response(status_code=202, headers={"X-Progress": job.progress, "Retry-After": retry})
    headers = {"Expires": formatdate(job.expires or 0, usegmt=True)}
    body = service.manifest(job, fhir_base(request))
    return Response(orjson.dumps(body), 200, headers, "application/json")


@router.delete("/$export-status/{job_id}", summary="cancel or delete an export")
async def export_delete(request: Request, job_id: str) -> Response:
    """Bulk Data v2.0.0 delete request: cancels a running export or removes a finished one."""
    await run_in_threadpool(_service(request).cancel, job_id, principal(request))
    audit_note(request, entities=(f"export:{job_id}",))
    request.state.audit_note["action"] = "export"
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": "export deleted"}]}  # fmt: skip
    return Response(orjson.dumps(body), 202, media_type=FHIR_JSON)


@router.get("/$export-file/{job_id}/{name}", summary="download an export file (NDJSON)")
async def export_file(request: Request, job_id: str, name: str) -> Response:
    """Bulk Data v2.0.0 file request: ``application/fhir+ndjson``, for the exporting caller only."""
    accepted = [r.type for r in parse_accept(request.headers.get("accept"))]
    if accepted and not any(t in ("*/*", "application/*", NDJSON, "application/ndjson") for t in accepted):  # fmt: skip
        raise NotAcceptable(f"export files are {NDJSON}")
    job, found = await run_in_threadpool(_service(request).file, job_id, name, principal(request))
    audit_note(request, entities=(f"export:{job.id}", f"export-file:{name}"))
    request.state.audit_note["action"] = "export-download"
    if isinstance(found, Path):
        return FileResponse(found, media_type=NDJSON)
    return StreamingResponse(found, media_type=NDJSON)  # from the bucket
