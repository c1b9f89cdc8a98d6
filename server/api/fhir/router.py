"""FHIR R4 REST API (FHIR R4 3.1.0 RESTful API) under ``/fhir``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server import __version__
from server.api.deps import dicomweb_root, gateway, principal
from server.core.fhir.capability import capability_statement
from server.core.mediatypes import parse_accept, parse_media_type
from server.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from server.security.enforce import require

router = APIRouter(tags=["FHIR R4"])
FHIR_JSON = "application/fhir+json"
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
STARTED = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fhir_base(request: Request) -> str:
    settings = gateway(request).settings
    base = settings.public_base_url or str(request.base_url)
    return base.rstrip("/") + "/fhir"


def _negotiate(request: Request) -> None:
    """FHIR R4 3.1.0.1.10: JSON only; anything else is 406 with an OperationOutcome."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt not in _JSON_FORMATS:
            raise NotAcceptable(f"_format {fmt!r} is not supported; this server speaks JSON")
        return
    for r in parse_accept(request.headers.get("accept")):
        if r.type in (
            "*/*",
            "application/*",
            "application/json",
            FHIR_JSON,
            "application/json+fhir",
        ):
            return
    raise NotAcceptable(
        f"Accept {request.headers.get('accept')!r}: this server answers {FHIR_JSON}"
    )


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=FHIR_JSON)


def _resource_response(resource: dict[str, Any] | None, status: int, base: str) -> Response:
    if resource is None:
        return Response(status_code=status)
    meta = resource.get("meta", {})
    headers = {}
    if "versionId" in meta:
        headers["ETag"] = f'W/"{meta["versionId"]}"'
        headers["Location"] = (
            f"{base}/{resource['resourceType']}/{resource['id']}/_history/{meta['versionId']}"
        )
    if "lastUpdated" in meta:
        headers["Last-Modified"] = meta["lastUpdated"]
    return _json(resource, status, headers)


async def fhir_body(request: Request) -> bytes:
    ctype = request.headers.get("content-type")
    if ctype and parse_media_type(ctype).type not in (
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
    ):
        raise UnsupportedMediaType(f"Content-Type {ctype!r}: send {FHIR_JSON}")
    body = await request.body()
    if not body:
        raise BadRequest("the request has no body")
    return body


def _strict(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return "handling=strict" in prefer.replace(" ", "")


@router.get("/metadata", summary="CapabilityStatement (FHIR R4 3.1.0.9)")
def capabilities(request: Request) -> Response:
    """FHIR R4 3.1.0.9 capabilities."""
    _negotiate(request)
    gw = gateway(request)
    token = f"{gw.tokens.issuer}/oauth/token" if gw.settings.auth.enabled else None
    return _json(capability_statement(fhir_base(request), __version__, STARTED, token))


@router.post("", summary="batch / transaction (FHIR R4 3.1.0.12)")
@router.post("/", include_in_schema=False)
async def batch(request: Request) -> Response:
    """FHIR R4 3.1.0.12 batch/transaction."""
    _negotiate(request)
    body = await fhir_body(request)
    fhir = gateway(request).fhir_write
    result = await run_in_threadpool(
        fhir.bundle, body, fhir_base(request), dicomweb_root(request), principal(request)
    )
    return _json(result)


@router.get("/{rtype}", summary="search-type (FHIR R4 3.1.0.10)")
def search_type(request: Request, rtype: str) -> Response:
    """FHIR R4 3.1.1 search."""
    _negotiate(request)
    pairs = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")
    ]
    return _search(request, rtype, pairs)


@router.post("/{rtype}/_search", summary="search-type via POST")
async def search_post(request: Request, rtype: str) -> Response:
    """FHIR R4 3.1.1.2: form-encoded parameters in the body, merged with the URL's."""
    _negotiate(request)
    form = await request.form()
    pairs = [(k, str(v)) for k, v in form.multi_items()] + list(request.query_params.multi_items())
    pairs = [(k, v) for k, v in pairs if k not in ("_format", "_pretty")]
    return await run_in_threadpool(_search, request, rtype, pairs)


def _search(request: Request, rtype: str, pairs: list[tuple[str, str]]) -> Response:
    read = gateway(request).fhir_read
    result = read.search(rtype, pairs, strict=_strict(request), base=fhir_base(request),
                         dicomweb_root=dicomweb_root(request), principal=principal(request))  # fmt: skip
    return _json(result)


# a page size: not negative (FHIR R4 3.1.1.5.7); above 1000 it is capped to 1000 below
HistoryCount = Annotated[int, Query(ge=0)]


@router.get("/{rtype}/_history", summary="history-type")
def history_type(
    request: Request, rtype: str, _count: HistoryCount = 100, _since: str | None = None
) -> Response:
    """FHIR R4 3.1.0.11 type history."""
    _negotiate(request)
    return _json(
        gateway(request).fhir_read.history(
            rtype, None, fhir_base(request), min(_count, 1000), _since, principal(request)
        )
    )


@router.get("/{rtype}/{rid}", summary="read (FHIR R4 3.1.0.1)")
def read(request: Request, rtype: str, rid: str) -> Response:
    """FHIR R4 3.1.0.1 read."""
    _negotiate(request)
    resource = gateway(request).fhir_read.read(
        rtype, rid, dicomweb_root(request), principal(request)
    )
    return _resource_response(resource, 200, fhir_base(request))


@router.get("/{rtype}/{rid}/_history", summary="history-instance")
def history_instance(
    request: Request, rtype: str, rid: str, _count: HistoryCount = 100, _since: str | None = None
) -> Response:
    """FHIR R4 3.1.0.11 instance history."""
    _negotiate(request)
    return _json(
        gateway(request).fhir_read.history(
            rtype, rid, fhir_base(request), min(_count, 1000), _since, principal(request)
        )
    )


@router.get("/{rtype}/{rid}/_history/{vid}", summary="vread (FHIR R4 3.1.0.2)")
def vread(request: Request, rtype: str, rid: str, vid: str) -> Response:
    """FHIR R4 3.1.0.2 vread."""
    _negotiate(request)
    return _resource_response(
        gateway(request).fhir_read.vread(rtype, rid, vid, principal(request)),
        200,
        fhir_base(request),
    )


@router.post("/{rtype}", summary="create (FHIR R4 3.1.0.8)")
async def create(request: Request, rtype: str) -> Response:
    """FHIR R4 3.1.0.8 create; If-None-Exist makes it conditional."""
    _negotiate(request)
    body = await fhir_body(request)
    fhir = gateway(request).fhir_write
    result = await run_in_threadpool(
        fhir.create, rtype, body, request.headers.get("if-none-exist"), principal(request)
    )
    return _resource_response(result.resource, result.status, fhir_base(request))


@router.put("/{rtype}/{rid}", summary="update (FHIR R4 3.1.0.4)")
async def update(request: Request, rtype: str, rid: str) -> Response:
    """FHIR R4 3.1.0.4 update; If-Match gives 412 on a version mismatch."""
    _negotiate(request)
    body = await fhir_body(request)
    fhir = gateway(request).fhir_write
    result = await run_in_threadpool(
        fhir.update, rtype, rid, body, request.headers.get("if-match"), principal(request)
    )
    return _resource_response(result.resource, result.status, fhir_base(request))


@router.delete("/{rtype}/{rid}", summary="delete (FHIR R4 3.1.0.7)")
async def delete(request: Request, rtype: str, rid: str) -> Response:
    """FHIR R4 3.1.0.7 delete."""
    result = await run_in_threadpool(
        gateway(request).fhir_write.delete, rtype, rid, principal(request)
    )
    return Response(status_code=result.status)


@router.post("/{rtype}/$validate", summary="$validate against the profile")
async def validate(request: Request, rtype: str) -> Response:
    """FHIR R4 Resource-validate: an OperationOutcome for the resource in the body."""
    _negotiate(request)
    body = await fhir_body(request)
    require(principal(request), rtype, "r")
    return _json(await run_in_threadpool(gateway(request).fhir_validate, rtype, body))
