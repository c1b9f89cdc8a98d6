"""The authorisation matrix over HTTP: every endpoint family, every kind of token.

Four datasets: ``A`` (organisation X has a download agreement), ``B`` (X may process it in
situ: search and metadata, no pixels), ``C`` (another organisation's; X has nothing) and
``P`` (PUBLIC). Every response is searched, body and headers, for identifiers of data the
caller may not see: data outside the grant must be indistinguishable from data that does
not exist.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from server.storage.bodies import body_files
from tests.live import LiveServer
from tests.security.conftest import (
    AS_SENT,
    FHIR_JSON,
    Registered,
    Study,
    add_client,
    auth_env,
    bearer,
    challenge,
    cli_ok,
    expect,
    forgeries,
    make_study,
    store_study,
    stow_into,
    token,
    token_response,
)

A, B, C, P = "lung-download-a", "lung-insitu-b", "lung-hidden-c", "lung-public-p"


@dataclass
class World:
    live: LiveServer
    a: list[Study]  # two studies in A
    b: Study
    c: Study
    p: Study
    spare: Study  # in A, deleted by a test
    pusher: Registered
    x: Registered
    z: Registered
    admin: Registered
    x_token: str

    @property
    def hidden(self) -> set[str]:
        """What X must never see: C's and P's identifiers (P is public only for anonymous
        reads on a gateway with public reads on)."""
        return self.c.secrets | self.p.secrets

    def get(self, path: str, access_token: str | None, **params: str) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.live.url}{path}"
        return httpx.get(url, params=params or None, headers=bearer(access_token), timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = LiveServer(tmp_path_factory.mktemp("matrix") / "data", extra_env=auth_env())
    for dataset in (A, B, C):
        cli_ok(
            live,
            "dataset",
            "create",
            dataset,
            "--title",
            dataset,
            "--cancer-type",
            "lung",
            *AS_SENT,
        )
    cli_ok(live, "dataset", "create", P, "--title", P, "--cancer-type", "lung",
           "--access-rights", "PUBLIC", *AS_SENT)  # fmt: skip
    pusher = add_client(live, "modality-router", "--organization", "org-hospital",
                        "--store", A, "--store", B, "--store", C, "--store", P)  # fmt: skip
    x = add_client(live, "researcher-x", "--organization", "org-x")
    z = add_client(live, "researcher-z")
    admin = add_client(live, "operator", "--admin")
    for agreement, dataset, condition, party in (
        ("daa-x-a", A, "download", ("--organization", "org-x")),
        ("daa-x-b", B, "in-situ-processing", ("--organization", "org-x")),
        ("daa-y-c", C, "download", ("--organization", "org-y")),
        ("daa-z-a", A, "download", ("--client", z.client_id)),
    ):
        cli_ok(live, "daa", "create", agreement, "--dataset", dataset,
               "--condition", condition, *party)  # fmt: skip
    live.start()
    try:
        push = token(live, pusher)
        a = [store_study(live, A, push), store_study(live, A, push)]
        world = World(
            live=live, a=a, b=store_study(live, B, push), c=store_study(live, C, push),
            p=store_study(live, P, push), spare=store_study(live, A, push), pusher=pusher,
            x=x, z=z, admin=admin, x_token=token(live, x),
        )  # fmt: skip
        yield world
    finally:
        live.stop()


def _instance(s: Study) -> str:
    return f"/dicom-web/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_uid}"


def _qido_uids(response: httpx.Response) -> set[str]:
    return {row["0020000D"]["Value"][0] for row in response.json()}


def _fhir_ids(response: httpx.Response, rtype: str | None = None) -> set[str]:
    return {
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if rtype is None or e["resource"]["resourceType"] == rtype
    }


def _retrieve_paths(s: Study) -> dict[str, str]:
    return {
        "study": f"/dicom-web/studies/{s.study_uid}",
        "study zip": f"/dicom-web/studies/{s.study_uid}?accept=application/zip",
        "instance": _instance(s),
        "frames": f"{_instance(s)}/frames/1",
        "rendered": f"{_instance(s)}/rendered",
        "thumbnail": f"/dicom-web/studies/{s.study_uid}/thumbnail",
        "wado-uri": f"/wado?requestType=WADO&studyUID={s.study_uid}&seriesUID={s.series_uid}"
        f"&objectUID={s.sop_uid}&contentType=application/dicom",
    }


# ---------------------------------------------------------------------- DICOMweb


def test_token_scope_names_only_the_agreed_datasets(world: World) -> None:
    answer = token_response(world.live, world.x, f"system/*.rs dataset:{A} dataset:{C}")
    assert answer.status_code == 200
    assert answer.json()["scope"] == f"system/*.rs dataset:{A}"
    assert token_response(world.live, world.x).json()["scope"] == (
        f"system/*.rs dataset:{A} dataset:{B}"
    )


def test_qido_shows_the_granted_datasets_only(world: World) -> None:
    w = world
    studies = expect(w.get("/dicom-web/studies", w.x_token), 200, w.hidden)
    assert _qido_uids(studies) == {s.study_uid for s in (*w.a, w.b, w.spare)}
    for level in ("series", "instances"):
        rows = expect(w.get(f"/dicom-web/{level}", w.x_token), 200, w.hidden).json()
        assert {r["0020000D"]["Value"][0] for r in rows} == _qido_uids(studies)
    own = expect(w.get(f"/dicom-web/studies/{w.a[0].study_uid}/series", w.x_token), 200, w.hidden)
    assert [r["0020000E"]["Value"][0] for r in own.json()] == [w.a[0].series_uid]
    for other in (w.c, w.p):
        for path in (f"/dicom-web/studies/{other.study_uid}/series",
                     f"/dicom-web/studies/{other.study_uid}/instances"):  # fmt: skip
            assert expect(w.get(path, w.x_token), 200, w.hidden).json() == []
        found = w.get("/dicom-web/studies", w.x_token, PatientID=other.patient)
        assert expect(found, 200, w.hidden).json() == []
        found = w.get("/dicom-web/studies", w.x_token, StudyInstanceUID=other.study_uid)
        assert expect(found, 200, w.hidden).json() == []


def test_qido_paging_stays_inside_the_grant(world: World) -> None:
    w = world
    seen: set[str] = set()
    for offset in range(6):
        page = expect(w.get("/dicom-web/studies", w.x_token, limit="1", offset=str(offset)),
                      200, w.hidden)  # fmt: skip
        seen |= _qido_uids(page)
    assert seen == {s.study_uid for s in (*w.a, w.b, w.spare)}


@pytest.mark.parametrize(
    "kind", ["study", "study zip", "instance", "frames", "rendered", "thumbnail", "wado-uri"]
)
def test_retrieval_needs_download(world: World, kind: str) -> None:
    w = world
    answer = expect(w.get(_retrieve_paths(w.a[0])[kind], w.x_token), 200, w.hidden)
    assert answer.content
    # in situ: the study is visible but no pixels go out (403); C and P: not granted (404)
    refused = expect(w.get(_retrieve_paths(w.b)[kind], w.x_token), 403, w.hidden)
    assert "in-situ processing only" in refused.json()["message"]
    for hidden in (w.c, w.p):
        expect(w.get(_retrieve_paths(hidden)[kind], w.x_token), 404, w.hidden)


def _kept_bodies(folder: Path, uid: str) -> list[Path]:
    """Whole kept bodies holding ``uid`` (not files still being written)."""
    found = []
    for path in body_files(folder):
        with contextlib.suppress(FileNotFoundError):
            if uid.encode() in path.read_bytes():
                found.append(path)
    return found


def test_a_body_kept_for_one_caller_goes_to_no_caller_without_the_grant(world: World) -> None:
    """The hidden dataset's series, fetched twice by an administrator, is kept as one file
    (server/storage/bodies.py); X, Z and the in-situ grant still get 404/403, leaking
    nothing, and the administrator's next answer is that file."""
    w = world
    admin = token(w.live, w.admin)
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    for hidden in (w.c, w.b):
        series = f"/dicom-web/studies/{hidden.study_uid}/series/{hidden.series_uid}"
        bodies: list[bytes] = []
        for _ in range(2):
            got = httpx.get(f"{w.live.url}{series}", headers={**bearer(admin), **accept})
            assert got.status_code == 200, got.text
            bodies.append(got.content)
        folder = w.live.data_dir / "bodies"

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _kept_bodies(folder, hidden.sop_uid):
            time.sleep(0.05)
        kept = _kept_bodies(folder, hidden.sop_uid)
        assert len(kept) == 1, "the series body was not kept"
        for caller in (w.x_token, token(w.live, w.z), None):
            answer = httpx.get(f"{w.live.url}{series}", headers={**bearer(caller), **accept})
            assert answer.status_code in (401, 403, 404), answer.status_code
            assert hidden.sop_uid.encode() not in answer.content
            if caller == w.x_token:  # X: C is not granted (404), B is in situ only (403)
                expect(answer, 404 if hidden is w.c else 403, w.hidden)
        again = httpx.get(f"{w.live.url}{series}", headers={**bearer(admin), **accept})
        assert again.content == kept[0].read_bytes()


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_metadata_with_download_or_in_situ(world: World, level: str) -> None:
    w = world

    def path(s: Study) -> str:
        return {
            "study": f"/dicom-web/studies/{s.study_uid}/metadata",
            "series": f"/dicom-web/studies/{s.study_uid}/series/{s.series_uid}/metadata",
            "instance": f"{_instance(s)}/metadata",
        }[level]

    for allowed in (w.a[0], w.b):
        body = expect(w.get(path(allowed), w.x_token), 200, w.hidden).json()
        assert body and body[0]["0020000D"]["Value"] == [allowed.study_uid]
    for refused in (w.c, w.p):
        expect(w.get(path(refused), w.x_token), 404, w.hidden)


def test_stow_needs_a_store_scope(world: World) -> None:
    w = world
    study, instances = make_study(A)
    for dataset in (A, C):
        refused = stow_into(w.live, dataset, w.x_token, instances)
        expect(refused, 403, w.hidden - {dataset})
        challenge(refused, 403)
    assert stow_into(w.live, A, None, instances).status_code == 401
    plain = httpx.post(f"{w.live.url}/dicom-web/studies", headers={
        **bearer(w.x_token), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'
    }, content=b"--b--\r\n")  # fmt: skip
    # no dataset in the URL and no GATEWAY_DEFAULT_DATASET: refused, saying where to store
    assert "/datasets/{id}/dicom-web/studies" in expect(plain, 400, w.hidden).text
    assert "GATEWAY_DEFAULT_DATASET" in plain.text
    # the pusher may store into A; X then sees it (agreements cover the dataset, not the study)
    pusher = token(w.live, w.pusher)
    assert stow_into(w.live, A, pusher, instances).status_code == 200
    listed = w.get("/dicom-web/studies", w.x_token, StudyInstanceUID=study.study_uid)
    assert _qido_uids(expect(listed, 200, w.hidden)) == {study.study_uid}
    # a pusher's token reads what it pushes into (the data-holder view), nothing else
    held = w.get("/dicom-web/studies", pusher, StudyInstanceUID=study.study_uid)
    assert _qido_uids(held) == {study.study_uid}
    narrowed = token(w.live, w.pusher, f"system/*.rs system/ImagingStudy.c dataset:{B}:store")
    assert w.get("/dicom-web/studies", narrowed, StudyInstanceUID=study.study_uid).json() == []


def test_delete_is_for_administrators(world: World) -> None:
    w = world
    path = f"/dicom-web/studies/{w.spare.study_uid}"
    anonymous = httpx.delete(f"{w.live.url}{path}")
    assert anonymous.status_code == 401
    challenge(anonymous)
    for caller in (w.x_token, token(w.live, w.pusher)):
        refused = expect(httpx.delete(f"{w.live.url}{path}", headers=bearer(caller)), 403)
        challenge(refused, 403)
    hidden_delete = httpx.delete(f"{w.live.url}/dicom-web/studies/{w.c.study_uid}",
                                 headers=bearer(w.x_token))  # fmt: skip
    expect(hidden_delete, 403, w.hidden)
    assert w.get(f"/dicom-web/studies/{w.spare.study_uid}/metadata", w.x_token).status_code == 200
    done = httpx.delete(f"{w.live.url}{path}", headers=bearer(token(w.live, w.admin)))
    assert done.status_code == 200 and done.json()["deleted"] == 2
    assert w.get(f"/dicom-web/studies/{w.spare.study_uid}/metadata", w.x_token).status_code == 404


# ---------------------------------------------------------------------- FHIR


def test_fhir_imaging_study_search_and_read(world: World) -> None:
    w = world
    found = expect(w.get("/fhir/ImagingStudy", w.x_token), 200, w.hidden)
    assert {s.study_uid for s in (*w.a, w.b)} <= _fhir_ids(found)
    assert not _fhir_ids(found) & {w.c.study_uid, w.p.study_uid}
    for allowed in (w.a[0], w.b):
        resource = expect(w.get(f"/fhir/ImagingStudy/{allowed.study_uid}", w.x_token), 200,
                          w.hidden).json()  # fmt: skip
        assert resource["id"] == allowed.study_uid
    for refused in (w.c, w.p):
        expect(w.get(f"/fhir/ImagingStudy/{refused.study_uid}", w.x_token), 404, w.hidden)
        in_dataset = w.get(
            "/fhir/ImagingStudy", w.x_token, dataset=f"ResearchStudy/{refused.dataset}"
        )
        assert _fhir_ids(expect(in_dataset, 200, w.hidden)) == set()


def test_fhir_patient_read_and_search(world: World) -> None:
    w = world
    mine = expect(w.get(f"/fhir/Patient/{w.a[0].patient_ref}", w.x_token), 200, w.hidden)
    assert mine.json()["identifier"][0]["value"] == w.a[0].patient
    for refused in (w.c, w.p):
        expect(w.get(f"/fhir/Patient/{refused.patient_ref}", w.x_token), 404, w.hidden)
        search = w.get("/fhir/Patient", w.x_token, identifier=refused.patient)
        assert expect(search, 200, w.hidden).json()["total"] == 0
    everyone = expect(w.get("/fhir/Patient", w.x_token), 200, w.hidden)
    assert {s.patient_ref for s in (*w.a, w.b)} <= _fhir_ids(everyone)


def test_fhir_research_study_catalogue(world: World) -> None:
    w = world
    found = expect(w.get("/fhir/ResearchStudy", w.x_token), 200, w.hidden)
    assert _fhir_ids(found) == {A, B}
    expect(w.get(f"/fhir/ResearchStudy/{A}", w.x_token), 200, w.hidden)
    for refused in (C, P):
        expect(w.get(f"/fhir/ResearchStudy/{refused}", w.x_token), 404, w.hidden)
        expect(w.get(f"/fhir/ResearchStudy/{refused}/_history/1", w.x_token), 404, w.hidden)
        search = w.get("/fhir/ResearchStudy", w.x_token, _id=refused)
        assert expect(search, 200, w.hidden).json()["total"] == 0


def test_fhir_history_stays_inside_the_grant(world: World) -> None:
    """History is a read: what read and search hide, history must hide too."""
    w = world
    expect(w.get("/fhir/ResearchStudy/_history", w.x_token), 200, w.hidden)
    expect(w.get(f"/fhir/ResearchStudy/{C}/_history", w.x_token), 404, w.hidden)


def test_fhir_agreements_are_for_administrators(world: World) -> None:
    w = world
    for path in ("/fhir/Contract", "/fhir/Contract/daa-y-c", "/fhir/Contract/_history",
                 "/fhir/Contract/daa-y-c/_history", "/fhir/Contract/daa-y-c/_history/1"):  # fmt: skip
        refused = expect(w.get(path, w.x_token), 403, w.hidden | {"org-y"})
        challenge(refused, 403)
    admin = token(w.live, w.admin)
    assert _fhir_ids(expect(w.get("/fhir/Contract", admin), 200)) >= {"daa-x-a", "daa-y-c"}


def test_fhir_summary_count(world: World) -> None:
    w = world
    counted = expect(w.get("/fhir/ImagingStudy", w.x_token, _summary="count"), 200, w.hidden)
    visible = expect(w.get("/fhir/ImagingStudy", w.x_token), 200, w.hidden).json()["total"]
    assert counted.json()["total"] == visible
    assert "entry" not in counted.json()
    studies = expect(w.get("/fhir/ResearchStudy", w.x_token, _summary="count"), 200, w.hidden)
    assert studies.json()["total"] == 2


def test_fhir_include_subject(world: World) -> None:
    w = world
    found = expect(w.get("/fhir/ImagingStudy", w.x_token, _include="ImagingStudy:subject"),
                   200, w.hidden)  # fmt: skip
    assert {s.patient_ref for s in (*w.a, w.b)} <= _fhir_ids(found, "Patient")
    revinclude = w.get("/fhir/Patient", w.x_token, _revinclude="ImagingStudy:subject")
    assert w.c.study_uid not in _fhir_ids(expect(revinclude, 200, w.hidden), "ImagingStudy")


def test_fhir_paging_links_stay_inside_the_grant(world: World) -> None:
    w = world
    page = expect(w.get("/fhir/ImagingStudy", w.x_token, _count="1"), 200, w.hidden)
    seen = _fhir_ids(page)
    pages = 1
    while True:
        links = {link["relation"]: link["url"] for link in page.json().get("link", [])}
        if "next" not in links:
            break
        assert urlsplit(links["next"]).netloc == urlsplit(w.live.url).netloc
        page = expect(w.get(links["next"], w.x_token), 200, w.hidden)
        seen |= _fhir_ids(page)
        pages += 1
        assert pages < 10
    assert pages >= 3
    assert {s.study_uid for s in (*w.a, w.b)} <= seen
    assert w.c.study_uid not in seen and w.p.study_uid not in seen
    # a next link of X's is no key to anything for someone else
    first = w.get("/fhir/ImagingStudy", w.x_token, _count="1").json()
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert w.get(next_url, None).status_code == 401


def test_fhir_chained_patient_identifier(world: World) -> None:
    w = world
    mine = w.get("/fhir/ImagingStudy", w.x_token, **{"subject:Patient.identifier": w.a[0].patient})
    assert _fhir_ids(expect(mine, 200, w.hidden)) == {w.a[0].study_uid}
    for refused in (w.c, w.p):
        theirs = w.get("/fhir/ImagingStudy", w.x_token,
                       **{"subject:Patient.identifier": refused.patient})  # fmt: skip
        assert expect(theirs, 200, w.hidden).json()["total"] == 0


def test_fhir_validate(world: World) -> None:
    w = world
    resource = {"resourceType": "Patient", "gender": "female"}
    answer = httpx.post(f"{w.live.url}/fhir/Patient/$validate", json=resource,
                        headers={**bearer(w.x_token), "Content-Type": FHIR_JSON})  # fmt: skip
    assert expect(answer, 200, w.hidden).json()["resourceType"] == "OperationOutcome"


def test_audit_events_are_for_administrators(world: World) -> None:
    w = world
    refused = expect(w.get("/fhir/AuditEvent", w.x_token), 403, w.hidden)
    challenge(refused, 403)
    expect(w.get("/fhir/AuditEvent", token(w.live, w.admin)), 200)


# ---------------------------------------------------------------------- without a valid token


def _families(w: World) -> dict[str, tuple[str, str, dict[str, str]]]:
    """(method, path, query) of one request of every endpoint family."""
    a = w.a[0]
    return {
        "qido studies": ("GET", "/dicom-web/studies", {}),
        "qido series": ("GET", f"/dicom-web/studies/{a.study_uid}/series", {}),
        "wado instance": ("GET", _instance(a), {}),
        "metadata": ("GET", f"/dicom-web/studies/{a.study_uid}/metadata", {}),
        "frames": ("GET", f"{_instance(a)}/frames/1", {}),
        "rendered": ("GET", f"{_instance(a)}/rendered", {}),
        "stow": ("POST", f"/datasets/{A}/dicom-web/studies", {}),
        "delete": ("DELETE", f"/dicom-web/studies/{a.study_uid}", {}),
        "imaging study search": ("GET", "/fhir/ImagingStudy", {}),
        "imaging study read": ("GET", f"/fhir/ImagingStudy/{a.study_uid}", {}),
        "patient read": ("GET", f"/fhir/Patient/{a.patient_ref}", {}),
        "research study search": ("GET", "/fhir/ResearchStudy", {}),
        "summary count": ("GET", "/fhir/ImagingStudy", {"_summary": "count"}),
        "include": ("GET", "/fhir/ImagingStudy", {"_include": "ImagingStudy:subject"}),
        "paging": ("GET", "/fhir/ImagingStudy", {"_count": "1"}),
        "chain": ("GET", "/fhir/ImagingStudy", {"subject:Patient.identifier": a.patient}),
        "history": ("GET", "/fhir/ResearchStudy/_history", {}),
        "validate": ("POST", "/fhir/Patient/$validate", {}),
        "audit": ("GET", "/fhir/AuditEvent", {}),
    }


FAMILIES = [
    "qido studies", "qido series", "wado instance", "metadata", "frames", "rendered", "stow",
    "delete", "imaging study search", "imaging study read", "patient read",
    "research study search", "summary count", "include", "paging", "chain", "history",
    "validate", "audit",
]  # fmt: skip


def _send(w: World, family: str, access_token: str | None) -> httpx.Response:
    method, path, query = _families(w)[family]
    headers = bearer(access_token)
    content = b""
    if family == "stow":
        headers["Content-Type"] = 'multipart/related; type="application/dicom"; boundary=b'
        content = b"--b--\r\n"
    elif method == "POST":
        headers["Content-Type"] = FHIR_JSON
        content = b'{"resourceType": "Patient"}'
    return httpx.request(method, f"{w.live.url}{path}", params=query, headers=headers,
                         content=content or None, timeout=30)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_no_token_is_401(world: World, family: str) -> None:
    answer = expect(
        _send(world, family, None), 401, world.hidden | {a.study_uid for a in world.a[1:]}
    )
    challenge(answer)
    assert "Bearer" in answer.headers["www-authenticate"]


@pytest.mark.parametrize(
    "forgery",
    ["expired", "not yet valid", "wrong issuer", "wrong audience", "alg none",
     "HS256 with the public key", "tampered payload", "truncated signature", "unknown key"],
)  # fmt: skip
@pytest.mark.parametrize(
    "family", ["qido studies", "metadata", "wado instance", "imaging study search",
               "patient read", "stow", "delete", "audit"],
)  # fmt: skip
def test_forged_tokens_are_401(world: World, forgery: str, family: str) -> None:
    forged = _forged(world)[forgery]
    answer = expect(_send(world, family, forged), 401, world.hidden)
    challenge(answer)
    assert "Bearer" in answer.headers["www-authenticate"]


_FORGED: dict[str, dict[str, str]] = {}


def _forged(w: World) -> dict[str, str]:
    key = w.live.url
    if key not in _FORGED:
        from joserfc import jwt
        from joserfc.jwk import ECKey

        from tests.security.conftest import claims_of

        made = forgeries(w.live, w.x_token)
        own = ECKey.generate_key("P-256", private=True)
        own.ensure_kid()
        made["unknown key"] = jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": own.kid}, claims_of(w.x_token), own
        )
        _FORGED[key] = made
    return _FORGED[key]


def test_malformed_authorization_headers_are_401(world: World) -> None:
    w = world
    for header in ("Basic eDp5", "Bearer", f"Token {w.x_token}", "Bearer a.b",
                   f"Bearer {w.x_token}x", "Bearer " + "a" * 20000):  # fmt: skip
        answer = httpx.get(f"{w.live.url}/dicom-web/studies", headers={"Authorization": header})
        assert answer.status_code == 401, (header[:30], answer.text)
        challenge(answer)


# ---------------------------------------------------------------------- scope and revocation


def test_token_without_a_resource_scope_is_403(world: World) -> None:
    w = world
    narrow = token(w.live, w.x, f"dataset:{A}")
    for family in ("qido studies", "wado instance", "metadata", "imaging study search",
                   "imaging study read", "patient read", "research study search"):  # fmt: skip
        answer = expect(_send(w, family, narrow), 403, w.hidden)
        challenge(answer, 403)
    # the refusal comes before any lookup: the same answer for data that is not granted
    hidden = w.get(f"/dicom-web/studies/{w.c.study_uid}/metadata", narrow)
    expect(hidden, 403, w.hidden)


def test_imaging_study_scope_does_not_reach_patients(world: World) -> None:
    w = world
    studies_only = token(w.live, w.x, f"system/ImagingStudy.rs dataset:{A}")
    expect(w.get("/fhir/ImagingStudy", studies_only), 200, w.hidden | w.b.secrets)
    expect(w.get(f"/dicom-web/studies/{w.a[0].study_uid}/metadata", studies_only), 200)
    challenge(expect(w.get(f"/fhir/Patient/{w.a[0].patient_ref}", studies_only), 403), 403)
    # dataset:A only: B is not in this token even though X's agreements cover it
    expect(w.get(f"/dicom-web/studies/{w.b.study_uid}/metadata", studies_only), 404)


def test_revoked_agreement_ends_access_for_issued_tokens(world: World) -> None:
    w = world
    z_token = token(w.live, w.z)
    a = w.a[0]
    assert _qido_uids(w.get("/dicom-web/studies", z_token)) >= {a.study_uid}
    assert w.get(_instance(a), z_token).status_code == 200
    cli_ok(w.live, "daa", "revoke", "daa-z-a")
    revoked = time.monotonic()
    while time.monotonic() < revoked + 5 and w.get("/dicom-web/studies", z_token).json():
        time.sleep(0.02)
    # the agreement cache lives 0.2 s here; a generous margin for a busy machine
    assert time.monotonic() - revoked < 2.0
    hidden = w.hidden | {s for x in (*w.a, w.b, w.spare) for s in x.secrets}
    assert expect(w.get("/dicom-web/studies", z_token), 200, hidden).json() == []
    expect(w.get(_instance(a), z_token), 404, hidden)
    expect(w.get(f"/fhir/ImagingStudy/{a.study_uid}", z_token), 404, hidden)
    assert _fhir_ids(expect(w.get("/fhir/ResearchStudy", z_token), 200, hidden)) == set()
    # a new token names no dataset any more; X (another agreement) is unaffected
    assert token_response(w.live, w.z).json()["scope"] == "system/*.rs"
    assert w.get(_instance(a), w.x_token).status_code == 200


def test_agreement_written_over_fhir_takes_effect(world: World) -> None:
    """An administrator grants X the hidden dataset C for a while, then revokes it."""
    w = world
    admin = token(w.live, w.admin)
    contract = httpx.get(f"{w.live.url}/fhir/Contract/daa-x-a", headers=bearer(admin)).json()
    contract = {**contract, "id": "daa-x-c", "subject": [{"reference": f"ResearchStudy/{C}"}],
                "identifier": [{**contract["identifier"][0], "value": "daa-x-c"}]}  # fmt: skip
    contract.pop("meta", None)
    put = httpx.put(f"{w.live.url}/fhir/Contract/daa-x-c", json=contract,
                    headers={**bearer(admin), "Content-Type": FHIR_JSON})  # fmt: skip
    assert put.status_code == 201, put.text
    try:
        # the token was issued before the agreement: it does not name C
        expect(w.get(_instance(w.c), w.x_token), 404)
        wide = token(w.live, w.x)
        assert f"dataset:{C}" in claims_scope(wide)
        assert w.get(_instance(w.c), wide).status_code == 200
    finally:
        revoked = {**put.json(), "status": "revoked"}
        again = httpx.put(f"{w.live.url}/fhir/Contract/daa-x-c", json=revoked,
                          headers={**bearer(admin), "Content-Type": FHIR_JSON})  # fmt: skip
        assert again.status_code == 200, again.text
    assert w.get(_instance(w.c), wide).status_code == 404
    # X may not write agreements
    refused = httpx.put(f"{w.live.url}/fhir/Contract/daa-x-c", json=contract,
                        headers={**bearer(w.x_token), "Content-Type": FHIR_JSON})  # fmt: skip
    challenge(expect(refused, 403), 403)


def claims_scope(access_token: str) -> str:
    from tests.security.conftest import claims_of

    return str(claims_of(access_token)["scope"])


# ---------------------------------------------------------------------- public reads


@pytest.fixture(scope="module")
def public_gateway(world: World) -> Iterator[LiveServer]:
    """A second gateway process on the same data, with anonymous reads of PUBLIC datasets."""
    live = LiveServer(world.live.data_dir, extra_env=auth_env(public_read=True))
    live.start()
    yield live
    live.stop()


def test_public_read_shows_public_datasets_only(world: World, public_gateway: LiveServer) -> None:
    w = world
    hidden = {s for x in (*w.a, w.b, w.c) for s in x.secrets}
    url = public_gateway.url
    studies = expect(httpx.get(f"{url}/dicom-web/studies"), 200, hidden)
    assert _qido_uids(studies) == {w.p.study_uid}
    expect(httpx.get(f"{url}{_instance(w.p)}"), 200, hidden)
    for refused in (w.a[0], w.b, w.c):
        expect(httpx.get(f"{url}{_instance(refused)}"), 404, hidden)
    found = expect(httpx.get(f"{url}/fhir/ImagingStudy"), 200, hidden)
    assert _fhir_ids(found) == {w.p.study_uid}
    assert _fhir_ids(expect(httpx.get(f"{url}/fhir/ResearchStudy"), 200, hidden)) == {P}
    # anonymous callers still write nothing and see no agreements or audit
    assert httpx.get(f"{url}/fhir/Contract").status_code == 401
    assert httpx.get(f"{url}/fhir/AuditEvent").status_code == 401
    assert stow_into(public_gateway, P, None, make_study(P)[1]).status_code == 401
