"""``POST /api/datasets/eucaimSearch``: the EUCAIM reference mediator's route, for a node's
Focus with ``ENDPOINT_TYPE=omop`` (chaimeleon-eu/dataset-service ``RESTServer.py``).

The edge only reads the request: who asks (``Authorization: Secret <token>`` as the
reference, or an OAuth2 bearer token with ``federation:search``), the media type, the
JSON; the service does the rest. Errors answer ``{"error", "status_code"}`` like the
reference (plus this gateway's ``status``/``message``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.api.deps import gateway, principal
from server.errors import BadRequest

log = logging.getLogger("gateway.federation")
router = APIRouter(tags=["federation"])
PATH = "/api/datasets/eucaimSearch"


@router.post(PATH, summary="EUCAIM federated search (reference mediator contract)")
async def eucaim_search(request: Request) -> Response:
    """Counts of matching studies and subjects per dataset, protected (README "Joining EUCAIM")."""
    service = gateway(request).federation
    scheme, _, credential = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" or not gateway(request).settings.auth.enabled:
        service.check_bearer(principal(request))
    else:
        request.state.audit_client = "eucaim-search-secret"
        service.check_secret(credential.strip() if scheme.lower() == "secret" else None)
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise BadRequest("The request content type must be application/json")
    raw = await request.body()
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Error decoding the body as JSON: {exc}") from None
    outcome = await run_in_threadpool(service.search, body)
    request.state.audit_note = {
        "datasets": outcome.datasets,
        "entities": (f"eucaim-query:{outcome.query_hash}",)
        + ((f"eucaim-conditions-false:{len(outcome.issues)}",) if outcome.issues else ()),
        "action": "search",
    }
    headers = {"X-Conditions-Evaluated-False": str(len(outcome.issues))} if outcome.issues else {}
    return Response(orjson.dumps(outcome.answer), media_type="application/json", headers=headers)
