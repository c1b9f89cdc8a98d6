"""WADO-URI (PS3.18 9): one instance as a DICOM file or a rendered image, for legacy viewers."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from server.api.deps import audit_note, gateway, principal
from server.core import pixels, wado_uri
from server.core.multipart import iter_file
from server.errors import NotAcceptable, NotFound
from server.index.base import Scope, StoredInstance
from server.security.model import Action
from server.services.retrieve import RetrieveService

router = APIRouter(tags=["WADO-URI"])


@router.get(
    "/wado",
    summary="WADO-URI (PS3.18 9)",
    description=(
        "`requestType=WADO&studyUID=&seriesUID=&objectUID=` with `contentType` "
        "application/dicom (+ `transferSyntax`: as stored, Explicit VR LE, or one of the transcoding targets of WADO-RS) or image/jpeg, image/png, image/gif (+ `frameNumber`, "
        "`rows`, `columns`, `region`, `windowCenter`/`windowWidth`, `imageQuality`). "
        "Same access rules and audit as WADO-RS."
    ),
)
def retrieve_wado_uri(request: Request) -> Response:
    """PS3.18 9.1: the object named by the query, in the content type asked for."""
    req = wado_uri.parse_wado_uri(request.query_params)
    gw = gateway(request)
    scope = Scope(req.study, req.series, req.sop)
    gw.retrieve.authorize(principal(request), scope, Action.RETRIEVE)
    audit_note(request, entities=(f"study:{scope.study_uid}",))
    inst = gw.retrieve.one_instance(scope)
    content_type = req.content_type
    if content_type is None:  # PS3.18 9.1.2.1.5: image/jpeg for images, else the DICOM file
        content_type = "image/jpeg" if inst.pixel_index is not None else wado_uri.DICOM
    if content_type == wado_uri.DICOM:
        return _dicom_file(gw.retrieve, inst, req.transfer_syntax)
    if inst.pixel_index is None:
        raise NotAcceptable(f"the object has no pixel data to render as {content_type}")
    index = pixels.PixelIndex.from_bytes(inst.pixel_index)
    params = wado_uri.render_params(req, content_type, index.rows, index.columns)
    return Response(gw.retrieve.render(scope, req.frame, params), media_type=content_type)


def _dicom_file(retrieve: RetrieveService, inst: StoredInstance, wanted: str | None) -> Response:
    """PS3.18 9.1.2.2.3: the Part-10 file, as stored or in Explicit VR Little Endian."""
    retrieve.check_syntax([inst], wanted)  # 406 naming what is offered
    data, syntax = retrieve.converted(inst, wanted)
    if wanted not in (None, "*") and syntax != wanted:
        raise NotAcceptable(
            f"the object cannot be converted to {wanted}; offered: {inst.transfer_syntax}"
        )
    headers = {"Content-Disposition": f'attachment; filename="{inst.sop_uid}.dcm"'}
    media = f"{wado_uri.DICOM}; transfer-syntax={syntax}"
    if data is not None:
        return Response(data, media_type=media, headers=headers)
    try:
        f = retrieve.store.open(inst.blob_key)
    except NotFound:
        raise NotFound(f"instance {inst.sop_uid} not found") from None

    def body() -> Iterator[bytes]:
        with f:
            yield from iter_file(f, 1 << 20)

    headers["Content-Length"] = str(inst.size)
    return StreamingResponse(body(), media_type=media, headers=headers)
