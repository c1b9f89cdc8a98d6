"""QIDO-RS router (PS3.18 10.6): six search resources, one parser, one service call."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from server.api.deps import dicomweb_root, gateway, principal
from server.core.attributes import Level
from server.core.mediatypes import DICOM_JSON, negotiate_json
from server.core.qido import parse_query

router = APIRouter(tags=["QIDO-RS"])


def _search(
    request: Request, level: Level, study: str | None = None, series: str | None = None
) -> Response:
    negotiate_json(request.headers.get("accept"))
    gw = gateway(request)
    query = parse_query(
        level,
        request.query_params.multi_items(),
        study_uid=study,
        series_uid=series,
        default_limit=gw.settings.qido.default_limit,
        max_limit=gw.settings.qido.max_limit,
    )
    rows, has_more = gw.retrieve.search(query, dicomweb_root(request), principal(request))
    headers = {}
    warnings = []
    if has_more:
        warnings.append('299 gateway "There are additional results that can be requested"')
    if query.limit_clamped:
        warnings.append(f'299 gateway "The limit was reduced to the maximum of {query.limit}"')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    return Response(orjson.dumps(rows), 200, headers=headers, media_type=DICOM_JSON)


@router.get("/studies", summary="Search for studies (PS3.18 10.6.1)")
def search_for_studies(request: Request) -> Response:
    """PS3.18 10.6.1: study-level search."""
    return _search(request, Level.STUDY)


@router.get("/series", summary="Search for series (PS3.18 10.6.1)")
def search_for_series(request: Request) -> Response:
    """PS3.18 10.6.1: series-level search across all studies."""
    return _search(request, Level.SERIES)


@router.get("/instances", summary="Search for instances (PS3.18 10.6.1)")
def search_for_instances(request: Request) -> Response:
    """PS3.18 10.6.1: instance-level search across all studies."""
    return _search(request, Level.INSTANCE)


@router.get("/studies/{study}/series", summary="Search for series of a study")
def search_for_study_series(request: Request, study: str) -> Response:
    """PS3.18 10.6.1: series of one study."""
    return _search(request, Level.SERIES, study)


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
def search_for_study_instances(request: Request, study: str) -> Response:
    """PS3.18 10.6.1: instances of one study."""
    return _search(request, Level.INSTANCE, study)


@router.get(
    "/studies/{study}/series/{series}/instances", summary="Search for instances of a series"
)
def search_for_series_instances(request: Request, study: str, series: str) -> Response:
    """PS3.18 10.6.1: instances of one series."""
    return _search(request, Level.INSTANCE, study, series)
