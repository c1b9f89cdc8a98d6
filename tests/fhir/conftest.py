"""Helpers for the FHIR API tests: live gateways, FHIR R4 parsing of every answer, datasets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydicom
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.resource import Resource

from tests.live import LiveServer

FHIR_JSON = "application/fhir+json"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
BREAST_CANCER = "254837009"
LUNG_CANCER = "363358000"
BREAST_SITE = "76752008"

M = TypeVar("M", bound=Resource)


@contextmanager
def running(data_dir: Path, **env: str) -> Iterator[LiveServer]:
    """A gateway on ``data_dir`` for the duration of the block."""
    live = LiveServer(data_dir, extra_env=dict(env)).start()
    try:
        yield live
    finally:
        live.stop()


def fhir_client(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=f"{live.url}/fhir", headers={"Accept": FHIR_JSON}, timeout=60)


def parse(response: httpx.Response, model: type[M], status: int = 200) -> M:
    """The response body as a FHIR R4 resource of ``model``, after checking status and media type."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
    return model.model_validate(response.json())


def bundle(response: httpx.Response, status: int = 200) -> Bundle:
    return parse(response, Bundle, status)


def outcome(response: httpx.Response, status: int) -> OperationOutcome:
    """An error answer: the status and a parsed OperationOutcome with at least one issue."""
    found = parse(response, OperationOutcome, status)
    assert found.issue, found
    return found


def error_issues(found: OperationOutcome) -> list[Any]:
    return [i for i in found.issue if i.severity in ("error", "fatal")]


def matches(found: Bundle) -> list[Any]:
    """Resources of the ``match`` entries, in order."""
    return [e.resource for e in found.entry or [] if e.search and e.search.mode == "match"]


def match_ids(found: Bundle) -> list[str]:
    return [r.id for r in matches(found)]


def entries_of_mode(found: Bundle, mode: str) -> list[Any]:
    return [e.resource for e in found.entry or [] if e.search and e.search.mode == mode]


def link(found: Bundle, relation: str) -> str | None:
    return next((x.url for x in found.link or [] if x.relation == relation), None)


def walk(client: httpx.Client, first: str, params: Any = None) -> list[Bundle]:
    """Every page of a search, following ``next`` links until there is none."""
    pages = [bundle(client.get(first, params=params))]
    while (url := link(pages[-1], "next")) is not None:
        pages.append(bundle(client.get(url)))
        assert len(pages) < 200, "paging does not end"
    return pages


def research_study(
    title: str,
    cancer: str = BREAST_CANCER,
    status: str = "active",
    period: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "title": title,
        "status": status,
        "condition": [{"coding": [{"system": SNOMED, "code": cancer}]}],
    }
    if period:
        out["period"] = period
    return out


# --- independent answers from the DICOM data --------------------------------------------


def study_range(ds: pydicom.Dataset) -> tuple[datetime, datetime] | None:
    """The instant range StudyDate (+ StudyTime to the second) covers, or None without a date."""
    date = str(ds.get("StudyDate", "") or "")
    if not date:
        return None
    day = datetime.strptime(date, "%Y%m%d")
    time = str(ds.get("StudyTime", "") or "")
    if len(time) >= 6:
        start = day.replace(hour=int(time[:2]), minute=int(time[2:4]), second=int(time[4:6]))
        return start, start + timedelta(microseconds=999_999)
    return day, day + timedelta(days=1, microseconds=-1)


def search_range(text: str) -> tuple[datetime, datetime]:
    """The inclusive range a FHIR date of year, month or day precision stands for."""
    parts = [int(p) for p in text.split("-")]
    start = datetime(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    if len(parts) == 1:
        last_day = datetime(parts[0], 12, 31)
    elif len(parts) == 2:
        nxt = datetime(parts[0] + (parts[1] == 12), parts[1] % 12 + 1, 1)
        last_day = nxt - timedelta(days=1)
    else:
        last_day = start
    return start, last_day.replace(hour=23, minute=59, second=59, microsecond=999_999)


def date_matches(prefix: str, value: tuple[datetime, datetime] | None, search: str) -> bool:
    """FHIR R4 3.1.1.5.1 prefix semantics of a value range against a search range."""
    if value is None:
        return False
    lo, hi = value
    s_lo, s_hi = search_range(search)
    contained = lo >= s_lo and hi <= s_hi
    return {
        "eq": contained,
        "ne": not contained,
        "gt": hi > s_hi,
        "lt": lo < s_lo,
        "ge": hi > s_hi or contained,
        "le": lo < s_lo or contained,
        "sa": lo > s_hi,
        "eb": hi < s_lo,
    }[prefix]
