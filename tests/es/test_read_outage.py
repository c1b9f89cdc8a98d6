"""Elasticsearch unreachable: every route that reads or changes the index answers 503 with
Retry-After and no-store (never a 500, never a cached outage), and recovers with the cluster.

One real gateway on a real Elasticsearch behind a TCP proxy the test cuts (tests/es/test_outage).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.es.test_outage import Proxy
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

TOKEN = "outage-search-token"


@pytest.fixture(scope="module")
def cut_gateway(
    elasticsearch_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Proxy, dict[str, str]]]:
    proxy = Proxy(elasticsearch_url)
    proxy.start()
    env = {
        "GATEWAY_INDEX": "elasticsearch",
        "GATEWAY_ELASTICSEARCH__HOSTS": f'["http://127.0.0.1:{proxy.port}"]',
        "GATEWAY_ELASTICSEARCH__INDEX_PREFIX": f"readoutage{proxy.port}",
        "GATEWAY_ELASTICSEARCH__REQUEST_TIMEOUT": "3",
        "GATEWAY_FEDERATION__EUCAIM_SEARCH_TOKEN": TOKEN,
    }
    live = LiveServer(tmp_path_factory.mktemp("outage") / "data", extra_env=env)
    assert live.cli("dataset", "create", "d1", "--title", "D1", "--cancer-type", "lung",
                    "--access-rights", "PUBLIC").returncode == 0  # fmt: skip
    live.start()
    sets = cohort(instances_per_series=2)
    assert stow(live, [part10(ds) for ds in sets]).status_code == 200
    ds = sets[0]
    ids = {
        "study": ds.StudyInstanceUID,
        "series": ds.SeriesInstanceUID,
        "sop": ds.SOPInstanceUID,
    }
    studies = httpx.get(f"{live.url}/fhir/ImagingStudy", timeout=30).json()
    ids["fhir_study"] = studies["entry"][0]["resource"]["id"]
    proxy.cut()
    try:
        yield live, proxy, ids
    finally:
        live.stop()
        proxy.cut()
        httpx.delete(f"{elasticsearch_url}/readoutage{proxy.port}-*", timeout=120)


ROUTES = [
    ("GET", "/dicom-web/studies"),
    ("GET", "/dicom-web/series"),
    ("GET", "/dicom-web/instances"),
    ("GET", "/dicom-web/studies/{study}/series"),
    ("GET", "/dicom-web/studies/{study}/instances"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances"),
    ("GET", "/dicom-web/studies/{study}/metadata"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/metadata"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/metadata"),
    ("GET", "/dicom-web/studies/{study}"),
    ("GET", "/dicom-web/studies/{study}/series/{series}"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{sop}"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered"),
    ("GET", "/dicom-web/studies/{study}/series/{series}/instances/{sop}/thumbnail"),
    ("GET", "/fhir/ImagingStudy"),
    ("GET", "/fhir/ImagingStudy/{fhir_study}"),
    ("GET", "/fhir/ImagingStudy?_summary=count"),
    ("GET", "/fhir/Patient"),
    ("DELETE", "/dicom-web/studies/{study}"),
    ("POST", "/api/datasets/eucaimSearch"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_index_route_during_an_outage_is_503_not_500(
    cut_gateway: tuple[LiveServer, Proxy, dict[str, str]], method: str, path: str
) -> None:
    live, _, ids = cut_gateway
    url = live.url + path.format(**ids)
    kw: dict[str, object] = {}
    if path.endswith("eucaimSearch"):
        kw = {
            "headers": {"Authorization": f"Secret {TOKEN}"},
            "json": {"ast": {"operand": "AND", "children": []}},
        }
    r = httpx.request(method, url, timeout=60, **kw)  # type: ignore[arg-type]
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert int(r.headers["retry-after"]) > 0
    assert r.headers.get("cache-control") == "no-store"
    assert "elasticsearch" in r.text.lower()


def test_liveness_holds_and_readiness_names_the_index_during_an_outage(
    cut_gateway: tuple[LiveServer, Proxy, dict[str, str]],
) -> None:
    live, _, _ = cut_gateway
    assert httpx.get(f"{live.url}/healthz", timeout=60).status_code == 200
    ready = httpx.get(f"{live.url}/readyz", timeout=60)
    assert ready.status_code == 503 and ready.json()["failing"] == ["index"]


def test_reads_recover_with_the_cluster(
    cut_gateway: tuple[LiveServer, Proxy, dict[str, str]],
) -> None:
    live, proxy, ids = cut_gateway
    proxy.start()
    try:
        r = httpx.get(f"{live.dicomweb}/studies/{ids['study']}/metadata", timeout=60)
        assert r.status_code == 200, r.text[:300]
    finally:
        proxy.cut()
