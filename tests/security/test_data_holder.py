"""The data holder sees its own data; corrections; HTTP Basic for machine clients (live, auth on).

Who pushes into a dataset (its store clients, its curators) and administrators read that
dataset back without an agreement to themselves; researchers still see only what
agreements allow; every access records its basis (agreement / data-holder / admin).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.helpers import multipart_body, part10
from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    Registered,
    Study,
    add_client,
    auth_env,
    bearer,
    cli_ok,
    expect,
    make_study,
    store_study,
    stow_into,
    token,
)

A, B = "holder-a", "holder-b"
BASIS = "https://cancer-imaging-gateway.eu/fhir/access-basis#"


@dataclass
class World:
    live: LiveServer
    store_a: Registered  # pushes into A (organisation org-hospital)
    curator_b: Registered  # curates B
    colleague: Registered  # same organisation as store_a, no store right
    researcher: Registered  # agreement on B (download)
    admin: Registered
    basic: Registered  # pushes into A, HTTP Basic on
    a: Study
    b: Study

    def qido(self, access_token: str, study: Study) -> set[str]:
        answer = httpx.get(f"{self.live.url}/dicom-web/studies", headers=bearer(access_token),
                           params={"StudyInstanceUID": study.study_uid}, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        return {s["0020000D"]["Value"][0] for s in answer.json()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = LiveServer(tmp_path_factory.mktemp("holder") / "data", extra_env=auth_env())
    for dataset in (A, B):
        cli_ok(live, "dataset", "create", dataset, "--title", dataset, *AS_SENT)
    org = ("--organization", "org-hospital")
    store_a = add_client(live, "router-a", *org, "--store", A)
    curator_b = add_client(live, "curator-b", "--curate", B)
    colleague = add_client(live, "colleague", *org)
    researcher = add_client(live, "researcher", "--organization", "org-r")
    admin = add_client(live, "operator", "--admin")
    basic = add_client(live, "orthanc-bridge", "--store", A, "--http-basic")
    cli_ok(live, "daa", "create", "daa-r-b", "--dataset", B, "--condition", "download",
           "--organization", "org-r")  # fmt: skip
    live.start()
    try:
        a = store_study(live, A, token(live, store_a))
        b = store_study(live, B, token(live, curator_b))
        yield World(live, store_a, curator_b, colleague, researcher, admin, basic, a, b)
    finally:
        live.stop()


def _audit_policies(w: World, client_id: str) -> list[list[str]]:
    """agent.policy of the client's recent events (read as an administrator over FHIR)."""
    time.sleep(0.5)  # the audit log writes in the background
    found = httpx.get(f"{w.live.url}/fhir/AuditEvent", params={"agent": client_id, "_count": "50"},
                      headers=bearer(token(w.live, w.admin)), timeout=30)  # fmt: skip
    assert found.status_code == 200, found.text
    out = []
    for entry in found.json().get("entry", []):
        for agent in entry["resource"]["agent"]:
            if agent.get("policy"):
                out.append(agent["policy"])
    return out


def test_store_client_reads_back_what_it_pushed_and_nothing_else(world: World) -> None:
    w = world
    pusher = token(w.live, w.store_a)
    assert w.qido(pusher, w.a) == {w.a.study_uid}
    assert w.qido(pusher, w.b) == set()
    url = f"{w.live.url}/dicom-web/studies"
    assert httpx.get(f"{url}/{w.a.study_uid}/metadata", headers=bearer(pusher)).status_code == 200
    own = f"{url}/{w.a.study_uid}/series/{w.a.series_uid}/instances/{w.a.sop_uid}"
    assert httpx.get(own, headers=bearer(pusher)).status_code == 200
    # another dataset: answered as if it did not exist, nothing of it revealed
    other = httpx.get(f"{url}/{w.b.study_uid}/metadata", headers=bearer(pusher))
    expect(other, 404, w.b.secrets)
    studies = httpx.get(f"{w.live.url}/fhir/ImagingStudy", headers=bearer(pusher)).json()
    ids = {e["resource"]["id"] for e in studies.get("entry", [])}
    assert len(ids) == 1 and w.b.study_uid not in str(studies)
    assert [BASIS + "data-holder"] in _audit_policies(w, w.store_a.client_id)


def test_curator_and_admin_see_their_datasets_researcher_only_the_agreed_one(world: World) -> None:
    w = world
    curator = token(w.live, w.curator_b)
    assert w.qido(curator, w.b) == {w.b.study_uid} and w.qido(curator, w.a) == set()
    admin = token(w.live, w.admin)
    assert w.qido(admin, w.a) == {w.a.study_uid} and w.qido(admin, w.b) == {w.b.study_uid}
    researcher = token(w.live, w.researcher)
    assert w.qido(researcher, w.b) == {w.b.study_uid} and w.qido(researcher, w.a) == set()
    # the organisation of a store client is not a data holder: only its store clients are
    assert w.qido(token(w.live, w.colleague), w.a) == set()
    assert any(BASIS + "admin" in p for p in _audit_policies(w, w.admin.client_id))
    assert ["Contract/daa-r-b"] in _audit_policies(w, w.researcher.client_id)


def test_removing_the_store_right_ends_the_view_of_issued_tokens(world: World) -> None:
    w = world
    extra = add_client(w.live, "short-lived", "--store", A)
    issued = token(w.live, extra)
    assert w.qido(issued, w.a) == {w.a.study_uid}
    cli_ok(w.live, "clients", "update", extra.client_id, "--no-store", A)
    time.sleep(0.5)  # agreement cache (0.2 s in these tests)
    assert w.qido(issued, w.a) == set()
    refused = stow_into(w.live, A, issued, make_study(A)[1])
    assert refused.status_code == 403


def test_stow_without_a_dataset_is_refused_naming_the_route_and_setting(world: World) -> None:
    w = world
    study, instances = make_study(A)
    boundary = uuid.uuid4().hex
    for caller in (w.admin, w.store_a):
        refused = httpx.post(f"{w.live.url}/dicom-web/studies",
            content=multipart_body([part10(ds) for ds in instances], boundary),
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                     **bearer(token(w.live, caller))}, timeout=30)  # fmt: skip
        assert refused.status_code == 400, refused.text
        assert "/datasets/{id}/dicom-web/studies" in refused.text
        assert "GATEWAY_DEFAULT_DATASET" in refused.text
    assert w.qido(token(w.live, w.admin), study) == set()  # nothing stored


def _replacement(study: Study, instances: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    first = instances[0].copy()
    first.SeriesDescription = "corrected"
    return [first]


def _description(w: World, study: Study, access_token: str) -> dict[str, list[str] | None]:
    meta = httpx.get(f"{w.live.url}/dicom-web/studies/{study.study_uid}/metadata",
                     headers=bearer(access_token), timeout=30).json()  # fmt: skip
    return {m["00080018"]["Value"][0]: m.get("0008103E", {}).get("Value") for m in meta}


def test_curator_replaces_an_instance_with_replace_true_store_client_cannot(world: World) -> None:
    w = world
    curator = token(w.live, w.curator_b)
    study, instances = make_study(B)
    assert stow_into(w.live, B, curator, instances).status_code == 200
    fixed = _replacement(study, instances)
    sop = str(fixed[0].SOPInstanceUID)
    # without replace=true: the stored instance stays (conflict), whoever sends
    assert stow_into(w.live, B, curator, fixed).status_code == 409
    # a store client (no curate right) may not ask for replacement: refused before the body
    boundary = uuid.uuid4().hex
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    body = multipart_body([part10(ds) for ds in fixed], boundary)
    url = f"{w.live.url}/datasets/{A}/dicom-web/studies?replace=true"
    refused = httpx.post(url, content=body, headers={**headers, **bearer(token(w.live, w.store_a))})
    assert refused.status_code == 403 and "curate" in refused.text
    assert _description(w, study, curator)[sop] != ["corrected"]
    url = f"{w.live.url}/datasets/{B}/dicom-web/studies?replace=true"
    done = httpx.post(url, content=body, headers={**headers, **bearer(curator)}, timeout=30)
    assert done.status_code == 200, done.text
    described = _description(w, study, curator)
    assert described[sop] == ["corrected"] and len(described) == len(instances)
    time.sleep(0.5)
    events = httpx.get(f"{w.live.url}/fhir/AuditEvent",
                       params={"agent": w.curator_b.client_id, "_count": "50"},
                       headers=bearer(token(w.live, w.admin))).json()  # fmt: skip
    assert f"replaced:{sop}" in str(events)


# ---------------------------------------------------------------------- HTTP Basic


def _basic(client: Registered, secret: str | None = None) -> dict[str, str]:
    raw = f"{client.client_id}:{secret or client.secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_http_basic_with_dicomweb_client_stores_and_reads(world: World) -> None:
    w = world
    session = requests.Session()
    assert w.basic.secret is not None
    session.auth = (w.basic.client_id, w.basic.secret)
    client = DICOMwebClient(f"{w.live.url}/datasets/{A}/dicom-web", session=session)
    study, instances = make_study(A)
    client.store_instances(instances)
    reader = DICOMwebClient(f"{w.live.url}/dicom-web", session=session)
    found = reader.search_for_studies(search_filters={"StudyInstanceUID": study.study_uid})
    assert [s["0020000D"]["Value"][0] for s in found] == [study.study_uid]
    assert len(reader.retrieve_study_metadata(study.study_uid)) == len(instances)
    # httpx sends Basic too: the same rights (nothing of B)
    other = httpx.get(f"{w.live.url}/dicom-web/studies/{w.b.study_uid}/metadata",
                      auth=(w.basic.client_id, w.basic.secret))  # fmt: skip
    expect(other, 404, w.b.secrets)


def test_http_basic_is_off_by_default_and_only_on_dicomweb(world: World) -> None:
    w = world
    qido = f"{w.live.url}/dicom-web/studies"
    off = httpx.get(qido, headers=_basic(w.store_a))
    assert off.status_code == 401
    assert "Basic" in off.headers["www-authenticate"]  # a Basic attempt gets a Basic challenge
    assert "Basic" not in httpx.get(qido).headers["www-authenticate"]  # others: Bearer only
    assert httpx.get(f"{w.live.url}/fhir/ImagingStudy", headers=_basic(w.basic)).status_code == 401
    assert httpx.get(qido, headers=_basic(w.basic)).status_code == 200
    cli_ok(w.live, "clients", "update", w.basic.client_id, "--no-http-basic")
    try:
        assert httpx.get(qido, headers=_basic(w.basic)).status_code == 401
    finally:
        cli_ok(w.live, "clients", "update", w.basic.client_id, "--http-basic")
    assert httpx.get(qido, headers=_basic(w.basic)).status_code == 200


def test_http_basic_wrong_secrets_lock_out_like_the_token_endpoint(world: World) -> None:
    w = world
    victim = add_client(w.live, "locked", "--store", A, "--http-basic")
    qido = f"{w.live.url}/dicom-web/studies"
    codes = [httpx.get(qido, headers=_basic(victim, "wrong")).status_code for _ in range(10)]
    assert codes == [401] * 10
    locked = httpx.get(qido, headers=_basic(victim))  # even the right secret, while locked
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert httpx.get(qido, headers=_basic(w.basic)).status_code == 200  # others unaffected
