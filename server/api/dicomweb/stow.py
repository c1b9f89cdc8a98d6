"""STOW-RS router (PS3.18 10.5): stream, spool, store, answer per instance.

Every part is de-identified by the dataset's policy before it is stored
(``services/ingest.py``). ``/studies/{study}`` compares the StudyInstanceUID the client
SENT; the answer names a failed part by what was sent and a stored part by what is
stored (pseudonymised UIDs, the RetrieveURL that works). Each stored instance's
de-identification record goes into the request's audit event.

Corrections: ``?replace=true`` lets an instance whose SOP Instance UID is already stored
in the dataset replace it (new content, same UID). It needs the dataset's curator
(``dataset:<id>:curate``) or an administrator; anyone else is refused before the body
is read. The old content is served until the new one is stored and indexed. Each
replaced instance is named in the audit event (``replaced:<SOP Instance UID>``).
"""

from __future__ import annotations

import re
import shutil

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.api.deps import audit_note, dicomweb_root, gateway, principal
from server.core.mediatypes import DICOM, DICOM_JSON, parse_media_type
from server.core.multipart import MultipartSpooler, check_boundary
from server.core.stow import PartOutcome, deidentified, stow_response, stow_status
from server.core.uids import check_uid
from server.errors import (
    BadRequest,
    Forbidden,
    MalformedMultipart,
    NoDataset,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from server.security.enforce import require
from server.security.model import Action
from server.services.ingest import IngestItem

router = APIRouter(tags=["STOW-RS"])
dataset_router = APIRouter(tags=["STOW-RS"])
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
REPLACE = Query(
    False,
    description="Corrections: an instance already stored in the dataset under the same SOP "
    "Instance UID is replaced by the one sent (needs dataset:<id>:curate or admin).",
)


@router.post("/studies", summary="Store instances (PS3.18 10.5)")
async def store_instances(request: Request, replace: bool = REPLACE) -> Response:
    """PS3.18 10.5.1: store instances in any study (of GATEWAY_DEFAULT_DATASET)."""
    return await _store(request, None, replace=replace)


@router.post("/studies/{study}", summary="Store instances into one study (PS3.18 10.5)")
async def store_study_instances(request: Request, study: str, replace: bool = REPLACE) -> Response:
    """PS3.18 10.5.1: store instances; those of another study fail with 0xA900."""
    return await _store(request, check_uid(study, "StudyInstanceUID"), replace=replace)


@dataset_router.post("/studies", summary="Store instances into a dataset")
async def store_dataset_instances(
    request: Request, dataset: str, replace: bool = REPLACE
) -> Response:
    """PS3.18 10.5.1 with the dataset (a FHIR ResearchStudy id) named in the URL."""
    return await _store(request, None, dataset, replace=replace)


@dataset_router.post("/studies/{study}", summary="Store instances into one study of a dataset")
async def store_dataset_study_instances(
    request: Request, dataset: str, study: str, replace: bool = REPLACE
) -> Response:
    """PS3.18 10.5.1 into one study of the dataset named in the URL."""
    return await _store(request, check_uid(study, "StudyInstanceUID"), dataset, replace=replace)


def _dataset(request: Request, dataset: str) -> str:
    if not _FHIR_ID.match(dataset):
        raise BadRequest(f"dataset id {dataset[:70]!r} is not a valid FHIR id")
    resource, _ = gateway(request).fhir_store.read("ResearchStudy", dataset)
    if resource is None:
        raise NotFound(f"dataset {dataset} is not known (create ResearchStudy/{dataset} first)")
    return dataset


def _boundary(content_type: str | None) -> str:
    if not content_type:
        raise UnsupportedMediaType(
            'Content-Type must be multipart/related; type="application/dicom"'
        )
    media = parse_media_type(content_type)
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            f'Content-Type {media.type} is not supported; use multipart/related; type="application/dicom"'
        )
    if media.related_type not in (None, DICOM):
        raise UnsupportedMediaType(
            f"multipart/related type {media.related_type} is not supported; only application/dicom"
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise MalformedMultipart("Content-Type has no boundary parameter")
    return check_boundary(boundary)


def _may_store(request: Request, dataset: str | None, replace: bool) -> str | None:
    """Authorise before reading the body: the token must push to this dataset (and, to
    replace stored instances, curate it).

    Permission is checked before existence, so a refused client learns nothing
    about which datasets exist. A store that names no dataset when there is no default
    one is refused: its studies would be in no dataset, visible to nobody.
    """
    gw = gateway(request)
    caller = principal(request)
    target = dataset or gw.settings.default_dataset
    if caller.anonymous:
        raise Unauthorized("storing needs a bearer token with a dataset:<id>:store scope")
    if target is None and gw.ingest.needs_dataset:
        raise NoDataset
    if not caller.unrestricted:
        require(caller, "ImagingStudy", "c")
        if not caller.allows(Action.STORE, target):
            raise Forbidden(f"the token may not store into dataset {target or '(none)'}")
        if replace and not caller.allows(Action.REPLACE, target):
            raise Forbidden(
                "replacing stored instances (replace=true) needs the dataset's curator"
                " (a dataset:<id>:curate scope) or an administrator"
            )
    if dataset is not None:
        _dataset(request, dataset)
    audit_note(request, datasets=(target,) if target else ())
    return target


async def _store(
    request: Request, study_uid: str | None, dataset: str | None = None, *, replace: bool = False
) -> Response:
    # in a worker thread: HTTP Basic's first secret check (scrypt) must not hold the loop
    dataset = await run_in_threadpool(_may_store, request, dataset, replace)
    gw = gateway(request)
    boundary = _boundary(request.headers.get("content-type"))
    limit = gw.settings.stow.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the request body ({declared} bytes) exceeds the limit of {limit} bytes"
        )
    digest = await run_in_threadpool(gw.ingest.keeps_sent_bytes, dataset)
    spool = gw.journal.spool_dir()
    spooler = MultipartSpooler(boundary, spool, limit, gw.settings.stow.max_parts, digest=digest)
    try:
        async for chunk in request.stream():
            spooler.feed(chunk)
        parts = spooler.finish()
        items = [IngestItem(p.path, p.sha256, p.content_type) for p in parts]
        outcomes = await run_in_threadpool(
            lambda: gw.ingest.store_instances(items, study_uid, dataset, replace=replace)
        )
    finally:
        spooler.close()
        shutil.rmtree(spool, ignore_errors=True)
    replaced = tuple(f"replaced:{o.sop_uid}" for o in outcomes if o.added == "replaced")
    audit_note(request, entities=replaced, deidentified=deidentified(outcomes))
    root = dicomweb_root(request)
    body = stow_response(outcomes, root, _stored_study(outcomes, study_uid))
    return Response(orjson.dumps(body), stow_status(outcomes), media_type=DICOM_JSON)


def _stored_study(outcomes: list[PartOutcome], sent: str | None) -> str | None:
    """The study RetrieveURL names the study as stored (pseudonymised), once one part is."""
    if sent is None:
        return None
    stored = {o.study_uid for o in outcomes if o.stored}
    return stored.pop() if len(stored) == 1 else sent
