"""DELETE of studies/series/instances and CORS for browser viewers, against a live gateway."""

from __future__ import annotations

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.helpers import cohort, part10, store_state, stow, value
from tests.live import LiveServer

ORIGIN = "http://localhost:3000"
STUDY_SERIES, STUDY_INSTANCES = "00201206", "00201208"


def _stored_study(server: LiveServer) -> list[pydicom.Dataset]:
    """One study of two series with two instances each."""
    datasets = cohort(series_per_study=2, instances_per_series=2)
    response = stow(server, [part10(ds) for ds in datasets])
    assert response.status_code == 200, response.text
    return datasets


def _url(server: LiveServer, *uids: str) -> str:
    names = ("studies", "series", "instances")
    return server.dicomweb + "".join(
        f"/{name}/{uid}" for name, uid in zip(names, uids, strict=False)
    )


def _uids(ds: pydicom.Dataset) -> tuple[str, str, str]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    message = response.json()["message"]
    assert message
    return str(message)


# -- DELETE --------------------------------------------------------------------------------------


def test_delete_instance_removes_it_from_qido_wado_and_the_blob_store(
    fresh_server: LiveServer,
) -> None:
    datasets = _stored_study(fresh_server)
    client = DICOMwebClient(fresh_server.dicomweb)
    before = store_state(fresh_server)
    assert len(before["blobs"]) == 4
    gone, kept = datasets[0], datasets[1]
    study, series, sop = _uids(gone)

    response = httpx.delete(_url(fresh_server, study, series, sop))
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 1}

    found = client.search_for_instances(study, series)
    assert [value(item, "00080018") for item in found] == [kept.SOPInstanceUID]
    assert httpx.get(_url(fresh_server, study, series, sop)).status_code == 404
    assert httpx.get(_url(fresh_server, study, series, sop) + "/metadata").status_code == 404
    assert client.retrieve_instance(*_uids(kept)).SOPInstanceUID == kept.SOPInstanceUID

    after = store_state(fresh_server)
    assert len(after["blobs"]) == 3 and set(after["blobs"]) < set(before["blobs"])
    assert after["counts"] == {"study": 1, "series": 2, "instance": 3}
    assert after["spool"] == []


def test_delete_series_updates_the_study_counts(fresh_server: LiveServer) -> None:
    datasets = _stored_study(fresh_server)
    client = DICOMwebClient(fresh_server.dicomweb)
    study, series, _ = _uids(datasets[0])
    other_series = datasets[2].SeriesInstanceUID
    assert other_series != series
    (row,) = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert (value(row, STUDY_SERIES), value(row, STUDY_INSTANCES)) == (2, 4)

    client.delete_series(study, series)

    (row,) = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert (value(row, STUDY_SERIES), value(row, STUDY_INSTANCES)) == (1, 2)
    assert [value(s, "0020000E") for s in client.search_for_series(study)] == [other_series]
    assert client.search_for_instances(study, series) == []
    assert httpx.get(_url(fresh_server, study, series)).status_code == 404
    assert httpx.get(_url(fresh_server, study, series) + "/metadata").status_code == 404
    assert len(client.retrieve_series(study, other_series)) == 2
    state = store_state(fresh_server)
    assert len(state["blobs"]) == 2
    assert state["counts"] == {"study": 1, "series": 1, "instance": 2}


def test_delete_study_leaves_nothing_behind(fresh_server: LiveServer) -> None:
    datasets = _stored_study(fresh_server)
    client = DICOMwebClient(fresh_server.dicomweb)
    study = datasets[0].StudyInstanceUID

    response = httpx.delete(_url(fresh_server, study))
    assert response.status_code == 200
    assert response.json() == {"deleted": 4}

    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert client.search_for_instances(study) == []
    for suffix in ("", "/metadata", "/thumbnail"):
        _json_error(httpx.get(_url(fresh_server, study) + suffix), 404)
    assert store_state(fresh_server) == {
        "blobs": [],
        "spool": [],
        "counts": {"study": 0, "series": 0, "instance": 0},
    }
    # the same data can be stored again afterwards
    assert stow(fresh_server, [part10(ds) for ds in datasets]).status_code == 200
    assert len(client.retrieve_study(study)) == 4


def test_delete_twice_is_404_the_second_time(fresh_server: LiveServer) -> None:
    datasets = _stored_study(fresh_server)
    url = _url(fresh_server, *_uids(datasets[3]))
    assert httpx.delete(url).status_code == 200
    _json_error(httpx.delete(url), 404)
    assert store_state(fresh_server)["counts"]["instance"] == 3


def test_deleting_unknown_or_invalid_uids_is_refused_and_changes_nothing(
    fresh_server: LiveServer,
) -> None:
    ds = _stored_study(fresh_server)[0]
    before = store_state(fresh_server)
    cases = [
        ("/studies/1.2.3.999", 404),
        ("/studies/{s}/series/1.2.3.999", 404),
        ("/studies/{s}/series/{se}/instances/1.2.3.999", 404),
        ("/studies/1.2.3.999/series/{se}/instances/{i}", 404),
        ("/studies/{s}/series/{other}/instances/{i}", 404),
        ("/studies/1.2.abc", 400),
        ("/studies/{s}/series/%2E%2E", 400),
        ("/studies/{s}/series/{se}/instances/1.2.3%3Brm", 400),
    ]
    for path, status in cases:
        url = fresh_server.dicomweb + path.format(
            s=ds.StudyInstanceUID, se=ds.SeriesInstanceUID, i=ds.SOPInstanceUID, other="1.2.3.4"
        )
        response = httpx.delete(url)
        assert response.status_code == status, (path, response.text)
        assert response.json()["message"]
    assert store_state(fresh_server) == before


# -- CORS ----------------------------------------------------------------------------------------


def _allowed_origin(response: httpx.Response) -> bool:
    return response.headers.get("access-control-allow-origin") in ("*", ORIGIN)


def _exposed(response: httpx.Response) -> set[str]:
    header = response.headers.get("access-control-expose-headers", "")
    return {h.strip().lower() for h in header.split(",") if h.strip()}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/studies"),
        ("GET", "/studies/1.2.3/series/4.5/instances/6.7/frames/1"),
        ("DELETE", "/studies/1.2.3"),
        ("POST", "/studies"),
    ],
)
def test_preflight_from_a_viewer_origin_is_allowed(
    server: LiveServer, method: str, path: str
) -> None:
    response = httpx.options(
        server.dicomweb + path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "Accept, Content-Type",
        },
    )
    assert response.status_code in (200, 204), response.text
    assert _allowed_origin(response)
    allowed_methods = {
        m.strip() for m in response.headers["access-control-allow-methods"].split(",")
    }
    assert method in allowed_methods
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "accept" in allowed_headers or "*" in allowed_headers


def test_get_with_origin_carries_cors_and_cross_origin_resource_policy(
    server: LiveServer, client: DICOMwebClient
) -> None:
    ds = cohort(instances_per_series=1)[0]
    client.store_instances([ds])
    study, series, sop = _uids(ds)
    for url in (
        f"{server.dicomweb}/studies?StudyInstanceUID={study}",
        _url(server, study, series, sop),
        _url(server, study, series, sop) + "/metadata",
        _url(server, study, series, sop) + "/frames/1",
        _url(server, study, series, sop) + "/rendered",
    ):
        response = httpx.get(url, headers={"Origin": ORIGIN})
        assert response.status_code == 200, url
        assert _allowed_origin(response), url
        assert response.headers.get("cross-origin-resource-policy") == "cross-origin", url
        assert "warning" in _exposed(response), url


def test_error_responses_are_readable_cross_origin_with_their_warning(server: LiveServer) -> None:
    response = httpx.get(f"{server.dicomweb}/studies/1.2.3.999", headers={"Origin": ORIGIN})
    assert "not found" in _json_error(response, 404)
    assert _allowed_origin(response)
    assert response.headers.get("cross-origin-resource-policy") == "cross-origin"
    assert {"warning", "content-type"} <= _exposed(response)
    assert response.headers["warning"].startswith("299 ")


def test_cross_origin_resource_policy_is_sent_without_origin_too(server: LiveServer) -> None:
    response = httpx.get(f"{server.dicomweb}/studies", params={"limit": 1})
    assert response.status_code in (200, 204)
    assert response.headers.get("cross-origin-resource-policy") == "cross-origin"
    assert "access-control-allow-origin" not in response.headers
