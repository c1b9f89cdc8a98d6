"""WADO-RS router (PS3.18 10.4) and DELETE of studies/series/instances."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from server.api.deps import audit_note, dicomweb_root, gateway, principal
from server.api.filebody import file_body_response
from server.core import pixels, rendering
from server.core.mediatypes import (
    DICOM_JSON,
    OCTET,
    ZIP,
    ZipRequest,
    negotiate_bulkdata,
    negotiate_frames,
    negotiate_instances,
    negotiate_json,
    negotiate_rendered,
    negotiate_rendered_multipart,
    negotiate_zip,
)
from server.core.multipart import close_delimiter, coalesce, write_part_header
from server.core.uids import check_uid
from server.errors import BadRequest, NotFound
from server.index.base import Scope
from server.security.enforce import require_admin
from server.security.model import Action
from server.services.archive import stream_archive
from server.services.retrieve import BATCH, FramePart

router = APIRouter(tags=["WADO-RS"])


def _scope(study: str, series: str | None = None, sop: str | None = None) -> Scope:
    return Scope(
        check_uid(study, "StudyInstanceUID"),
        check_uid(series, "SeriesInstanceUID") if series else None,
        check_uid(sop, "SOPInstanceUID") if sop else None,
    )


def _allowed(request: Request, scope: Scope, action: Action) -> Scope:
    """Authorise before any read: the study's dataset must allow ``action`` (else 404)."""
    gateway(request).retrieve.authorize(principal(request), scope, action)
    audit_note(request, entities=(f"study:{scope.study_uid}",))
    return scope


def _retrieve(request: Request, scope: Scope) -> Response:
    gw = gateway(request)
    if scope.sop_uid is None:
        query = request.query_params
        wanted = negotiate_zip(
            request.headers.get("accept"), query.get("accept"), query.get("layout")
        )
        if wanted is not None:
            return _zip(request, scope, wanted)
    transfer_syntax = negotiate_instances(request.headers.get("accept"))
    found = gw.retrieve.instances(scope)
    gw.retrieve.check_syntax(found, transfer_syntax)
    planned = gw.retrieve.stored_body(found, transfer_syntax)
    if planned is not None:  # as stored, from local files: length known, zero-copy if offered
        boundary, pieces = planned
        return file_body_response(request.scope, pieces, _multipart_dicom(boundary))
    boundary = uuid.uuid4().hex
    body = gw.retrieve.stream_instances(found, boundary, transfer_syntax)
    return StreamingResponse(body, media_type=_multipart_dicom(boundary))


def _multipart_dicom(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def _zip(request: Request, scope: Scope, wanted: ZipRequest) -> Response:
    """The study or series as one ZIP (``Accept: application/zip``), streamed."""
    gw = gateway(request)
    found = gw.retrieve.instances(scope)
    body = stream_archive(gw.retrieve, found, wanted.layout, wanted.transfer_syntax)
    name = scope.series_uid or scope.study_uid
    disposition = f'attachment; filename="{name}.zip"'
    return StreamingResponse(body, media_type=ZIP, headers={"Content-Disposition": disposition})


_ZIP_DOC = (
    " With `Accept: application/zip` (or `?accept=application/zip`) the instances come as one"
    " streamed ZIP: `<SOPInstanceUID>.dcm` files, or a DICOMDIR with PS3.10 file IDs when"
    " `layout=dicomdir` (query or media-type parameter)."
)


@router.get(
    "/studies/{study}",
    summary="Retrieve a study (PS3.18 10.4.1.1.1)",
    description="PS3.18 10.4.1.1.1: all instances of a study." + _ZIP_DOC,
)
def retrieve_study(request: Request, study: str) -> Response:
    """PS3.18 10.4.1.1.1: all instances of a study."""
    return _retrieve(request, _allowed(request, _scope(study), Action.RETRIEVE))


@router.get(
    "/studies/{study}/series/{series}",
    summary="Retrieve a series",
    description="PS3.18 10.4.1.1.1: all instances of a series." + _ZIP_DOC,
)
def retrieve_series(request: Request, study: str, series: str) -> Response:
    """PS3.18 10.4.1.1.1: all instances of a series."""
    return _retrieve(request, _allowed(request, _scope(study, series), Action.RETRIEVE))


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="Retrieve an instance")
def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
    """PS3.18 10.4.1.1.1: one instance."""
    return _retrieve(request, _allowed(request, _scope(study, series, sop), Action.RETRIEVE))


def _metadata(request: Request, scope: Scope) -> Response:
    negotiate_json(request.headers.get("accept"))
    body = gateway(request).retrieve.metadata(scope, dicomweb_root(request))
    return StreamingResponse(body, media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="Retrieve study metadata (PS3.18 10.4.1.1.2)")
def retrieve_study_metadata(request: Request, study: str) -> Response:
    """PS3.18 10.4.1.1.2: metadata of every instance of a study."""
    return _metadata(request, _allowed(request, _scope(study), Action.METADATA))


@router.get("/studies/{study}/series/{series}/metadata", summary="Retrieve series metadata")
def retrieve_series_metadata(request: Request, study: str, series: str) -> Response:
    """PS3.18 10.4.1.1.2: metadata of every instance of a series (precomputed at ingest)."""
    return _metadata(request, _allowed(request, _scope(study, series), Action.METADATA))


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/metadata",
    summary="Retrieve instance metadata",
)
def retrieve_instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
    """PS3.18 10.4.1.1.2: metadata of one instance."""
    return _metadata(request, _allowed(request, _scope(study, series, sop), Action.METADATA))


def _multipart(parts: list[FramePart], related_type: str) -> Response:
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for part in parts:
            yield write_part_header(boundary, part.content_type, len(part.data))
            yield part.data
            yield b"\r\n"
        yield close_delimiter(boundary)

    media = f'multipart/related; type="{related_type}"; boundary={boundary}'
    if sum(len(part.data) for part in parts) <= BATCH:  # in memory already: one send, no thread
        return Response(b"".join(body()), media_type=media)
    return StreamingResponse(coalesce(body(), BATCH), media_type=media)


def _frame_numbers(text: str) -> list[int]:
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise BadRequest(f"frame list {text[:40]!r} has an empty item")
    try:
        numbers = [int(n) for n in items]
    except ValueError:
        raise BadRequest(
            f"frame list {text[:40]!r} must be comma-separated positive integers"
        ) from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest("frame numbers start at 1")
    return numbers


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
    summary="Retrieve frames (PS3.18 10.4.1.1.3)",
)
def retrieve_instance_frames(
    request: Request, study: str, series: str, sop: str, frames: str
) -> Response:
    """PS3.18 10.4.1.1.3: frames, stored bytes with transfer-syntax=* or decoded otherwise."""
    gw = gateway(request)
    scope = _allowed(request, _scope(study, series, sop), Action.RETRIEVE)
    numbers = _frame_numbers(frames)
    inst = gw.retrieve.one_instance(scope)
    stored_type = pixels.frame_media_type(inst.transfer_syntax)
    media_type, want_stored, target = negotiate_frames(
        request.headers.get("accept"), stored_type, inst.transfer_syntax
    )
    parts = gw.retrieve.frames(inst, numbers, want_stored, media_type, target)
    related = stored_type if want_stored else (media_type or OCTET)
    return _multipart(parts, related)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}",
    summary="Retrieve bulk data",
)
def retrieve_bulkdata(request: Request, study: str, series: str, sop: str, path: str) -> Response:
    """PS3.18 10.4.1.1.5: bulk data named by a BulkDataURI from the metadata."""
    negotiate_bulkdata(request.headers.get("accept"))
    gw = gateway(request)
    scope = _allowed(request, _scope(study, series, sop), Action.RETRIEVE)
    if path.upper() == "7FE00010":
        return _multipart(gw.retrieve.bulk_pixel_data(scope), OCTET)
    part = gw.retrieve.bulk_element(scope, path)
    return _multipart([part], OCTET)


def _rendered(request: Request, scope: Scope, frame: int) -> Response:
    media_type = negotiate_rendered(
        request.headers.get("accept"), request.query_params.get("accept")
    )
    params = rendering.parse_render_params(request.query_params, media_type)
    data = gateway(request).retrieve.render(scope, frame, params)
    return Response(data, media_type=media_type)


def _rendered_many(request: Request, scope: Scope) -> Response:
    query = request.query_params
    media_type = negotiate_rendered_multipart(request.headers.get("accept"), query.get("accept"))
    params = rendering.parse_render_params(query, media_type)
    gw = gateway(request)
    images = gw.retrieve.render_each(gw.retrieve.instances(scope), params)
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for data in images:
            yield write_part_header(boundary, media_type, len(data)) + data + b"\r\n"
        yield close_delimiter(boundary)

    media = f'multipart/related; type="{media_type}"; boundary={boundary}'
    return StreamingResponse(body(), media_type=media)


@router.get("/studies/{study}/rendered", summary="Rendered study (PS3.18 10.4.1.1.4)")
def retrieve_rendered_study(request: Request, study: str) -> Response:
    """PS3.18 10.4.1.1.4: every image instance of the study rendered (first frame), one part each."""
    return _rendered_many(request, _allowed(request, _scope(study), Action.RETRIEVE))


@router.get("/studies/{study}/series/{series}/rendered", summary="Rendered series")
def retrieve_rendered_series(request: Request, study: str, series: str) -> Response:
    """PS3.18 10.4.1.1.4: every image instance of the series rendered (first frame), one part each."""
    return _rendered_many(request, _allowed(request, _scope(study, series), Action.RETRIEVE))


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/rendered",
    summary="Rendered instance (PS3.18 10.4.1.1.4)",
)
def retrieve_rendered_instance(request: Request, study: str, series: str, sop: str) -> Response:
    """PS3.18 10.4.1.1.4: the first frame rendered as JPEG or PNG."""
    return _rendered(request, _allowed(request, _scope(study, series, sop), Action.RETRIEVE), 1)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered",
    summary="Rendered frame",
)
def retrieve_rendered_frame(
    request: Request, study: str, series: str, sop: str, frame: str
) -> Response:
    """PS3.18 10.4.1.1.4: one frame rendered as JPEG or PNG."""
    numbers = _frame_numbers(frame)
    if len(numbers) != 1:
        raise BadRequest("a rendered frame request names exactly one frame")
    return _rendered(
        request, _allowed(request, _scope(study, series, sop), Action.RETRIEVE), numbers[0]
    )


def _thumbnail(request: Request, scope: Scope) -> Response:
    media_type = negotiate_rendered(
        request.headers.get("accept"), request.query_params.get("accept")
    )
    size = 128
    viewport = request.query_params.get("viewport")
    if viewport:
        params = rendering.parse_render_params({"viewport": viewport}, media_type)
        size = max(params.viewport) if params.viewport else size
    data = gateway(request).retrieve.thumbnail(scope, size, media_type)
    return Response(data, media_type=media_type)


@router.get("/studies/{study}/thumbnail", summary="Study thumbnail (PS3.18 10.4.1.1.5)")
def retrieve_study_thumbnail(request: Request, study: str) -> Response:
    """PS3.18 10.4.1.1.5: a representative image of the study."""
    return _thumbnail(request, _allowed(request, _scope(study), Action.RETRIEVE))


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Series thumbnail")
def retrieve_series_thumbnail(request: Request, study: str, series: str) -> Response:
    """PS3.18 10.4.1.1.5: the middle image of the series."""
    return _thumbnail(request, _allowed(request, _scope(study, series), Action.RETRIEVE))


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="Instance thumbnail"
)
def retrieve_instance_thumbnail(request: Request, study: str, series: str, sop: str) -> Response:
    """PS3.18 10.4.1.1.5: the instance's first frame, small."""
    return _thumbnail(request, _allowed(request, _scope(study, series, sop), Action.RETRIEVE))


async def _delete(request: Request, scope: Scope) -> Response:
    require_admin(await run_in_threadpool(principal, request))  # scrypt off the loop
    audit_note(request, entities=(f"study:{scope.study_uid}",))
    removed = await run_in_threadpool(gateway(request).deleter.delete, scope)
    body = {"deleted": len(removed)}
    return Response(orjson.dumps(body), 200, media_type="application/json")


@router.delete("/studies/{study}", summary="Delete a study", tags=["DELETE"])
async def delete_study(request: Request, study: str) -> Response:
    """Delete every instance of a study from store and index."""
    return await _delete(request, _scope(study))


@router.delete("/studies/{study}/series/{series}", summary="Delete a series", tags=["DELETE"])
async def delete_series(request: Request, study: str, series: str) -> Response:
    """Delete every instance of a series."""
    return await _delete(request, _scope(study, series))


@router.delete(
    "/studies/{study}/series/{series}/instances/{sop}",
    summary="Delete an instance",
    tags=["DELETE"],
)
async def delete_instance(request: Request, study: str, series: str, sop: str) -> Response:
    """Delete one instance."""
    return await _delete(request, _scope(study, series, sop))


__all__ = ["NotFound", "router"]
