"""FAIR Data Point (``/fdp``): the EUCAIM Tier 1 catalogue of this node, in RDF.

FDP root -> catalogue -> one dataset per listed ResearchStudy -> its distribution, each a
record with the LDP container of its children. Public (no token: a catalogue, the same for
everyone), not audited (read-only metadata, like ``/fhir/metadata``), cacheable for
``catalogue.cache_seconds``. Errors are answered here too, with the same caching, so an
absent dataset and a NON_PUBLIC one give byte-identical answers.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from server.api.deps import gateway
from server.core.dcat.formats import negotiate_rdf
from server.errors import GatewayError, ServiceUnavailable, status_for

router = APIRouter(tags=["FAIR Data Point"])
RDF_TYPES = "text/turtle, application/ld+json, application/rdf+xml, text/n3"
_DOC = {"description": f"RDF record ({RDF_TYPES}; Turtle by default); 406 for other types.",
        "content": {t.strip(): {} for t in RDF_TYPES.split(",")}}  # fmt: skip


def _base(request: Request) -> str:
    settings = gateway(request).settings
    return (settings.public_base_url or str(request.base_url)).rstrip("/") + "/fdp"


async def _answer(request: Request, kind: str, key: str = "") -> Response:
    seconds = gateway(request).settings.catalogue.cache_seconds
    headers = {"Cache-Control": f"public, max-age={seconds}", "Vary": "Accept"}
    try:
        media, fmt = negotiate_rdf(request.headers.get("accept"))
        body = await run_in_threadpool(
            gateway(request).catalogue.render, kind, key, _base(request), fmt
        )
    except GatewayError as exc:
        status = status_for(exc)
        if status >= 500:  # an outage is not a fact about the catalogue: never cached
            headers = {"Cache-Control": "no-store"}
            if isinstance(exc, ServiceUnavailable):
                headers["Retry-After"] = str(exc.retry_after)
        error = {"status": status, "message": exc.message}
        return Response(orjson.dumps(error), status, headers=headers,
                        media_type="application/json")  # fmt: skip
    return Response(body, 200, headers=headers, media_type=media)


@router.get("", responses={200: _DOC})
async def fdp_root(request: Request) -> Response:
    """The FAIR Data Point (fdp-o:FAIRDataPoint) and the container of its catalogue."""
    return await _answer(request, "fdp")


@router.get("/catalog/{catalog_id}", responses={200: _DOC})
async def fdp_catalog(request: Request, catalog_id: str) -> Response:
    """The catalogue (dcat:Catalog) and the container of its datasets."""
    return await _answer(request, "catalog", catalog_id)


@router.get("/dataset/{dataset_id}", responses={200: _DOC})
async def fdp_dataset(request: Request, dataset_id: str) -> Response:
    """A dataset (EUCAIM DCAT-AP v2.0 dcat:Dataset) and the container of its distribution."""
    return await _answer(request, "dataset", dataset_id)


@router.get("/distribution/{dataset_id}/dicomweb", responses={200: _DOC})
async def fdp_distribution(request: Request, dataset_id: str) -> Response:
    """A dataset's DICOMweb distribution (dcat:Distribution)."""
    return await _answer(request, "distribution", dataset_id)
