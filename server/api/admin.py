"""Administrative jobs over HTTP (admin token): the stored reindex jobs.

- ``POST /admin/reindex``: queue a rebuild of the Elasticsearch index; a serving replica's
  runner takes it (202, ``Location`` of the job). 409 while another one is unfinished;
  400 on the embedded index.
- ``GET /admin/reindex``: the latest jobs; ``GET /admin/reindex/{job}``: one, from any
  replica (the jobs live in the shared database).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from server.api.deps import audit_note, gateway, principal
from server.errors import BadRequest, NotFound
from server.security.enforce import require_admin

router = APIRouter(prefix="/admin", tags=["Administration"])


async def _admin(request: Request) -> str:
    caller = await run_in_threadpool(principal, request)  # scrypt off the loop
    require_admin(caller)
    return caller.party.client_id or "admin"


@router.post("/reindex", status_code=202, summary="Queue a rebuild of the Elasticsearch index")
async def start_reindex(
    request: Request,
    keep_old: bool = Query(False, alias="keepOld", description="Keep the replaced indices."),
) -> JSONResponse:
    who = await _admin(request)
    # the operation takes no body: one is read (and so capped like every body, 413 past the
    # limit) and refused before anything is queued
    if await request.body():
        raise BadRequest("POST /admin/reindex takes no body (use the keepOld parameter)")
    runner = gateway(request).reindexer
    job = await run_in_threadpool(runner.queue, keep_old=keep_old, started_by=who)
    audit_note(request, entities=(f"reindex:{job.id}",))
    return JSONResponse(
        job.to_json(), status_code=202, headers={"Location": f"/admin/reindex/{job.id}"}
    )


@router.get("/reindex", summary="The latest reindex jobs")
async def list_reindex(request: Request) -> JSONResponse:
    await _admin(request)
    jobs = await run_in_threadpool(gateway(request).reindexer.jobs.latest)
    return JSONResponse({"jobs": [job.to_json() for job in jobs]})


@router.get("/reindex/{job_id}", summary="One reindex job: state and progress")
async def get_reindex(request: Request, job_id: str) -> JSONResponse:
    await _admin(request)
    job = await run_in_threadpool(gateway(request).reindexer.jobs.get, job_id)
    if job is None:
        raise NotFound("no such reindex job")
    return JSONResponse(job.to_json())
