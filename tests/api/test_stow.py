"""STOW-RS (PS3.18 10.5) against a live gateway: real clients, real files, bad input."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_files

from tests.helpers import cohort, multipart_body, part10, seq, store_state, stow, value
from tests.live import LiveServer

FAILED, REFERENCED = "00081198", "00081199"
REASON, SOP_UID, RETRIEVE_URL = "00081197", "00081155", "00081190"


def test_store_instances_with_dicomweb_client_answers_retrieve_urls(client: DICOMwebClient) -> None:
    datasets = cohort(instances_per_series=3)
    response = client.store_instances(datasets)
    stored = {
        item.ReferencedSOPInstanceUID: item.RetrieveURL for item in response.ReferencedSOPSequence
    }
    assert set(stored) == {ds.SOPInstanceUID for ds in datasets}
    for ds in datasets:
        assert stored[ds.SOPInstanceUID].endswith(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )
    assert "FailedSOPSequence" not in response


def _identify(path: str) -> tuple[str, str] | None:
    """Independently of the gateway: (SOP UID, study UID) if pydicom reads a Part-10 header."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids = [
            str(ds.get(k, "")).strip()
            for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
        ]
        if not all(uids) or "TransferSyntaxUID" not in ds.file_meta:
            return None
        return uids[0], uids[1]
    except Exception:
        return None


def _pixels_decode(path: str) -> bool:
    try:
        ds = pydicom.dcmread(path)
        if "PixelData" in ds:
            ds.pixel_array  # noqa: B018
        return True
    except Exception:
        return False


def test_every_pydicom_test_file_in_one_request(fresh_server: LiveServer) -> None:
    files = sorted(f for f in get_testdata_files() if os.path.isfile(f))
    contents = [Path(f).read_bytes() for f in files]
    response = stow(fresh_server, contents)
    assert response.status_code == 202, response.text
    body = response.json()
    failed, stored = seq(body, FAILED), seq(body, REFERENCED)
    assert len(failed) + len(stored) == len(files)

    identified = {f: _identify(f) for f in files}
    by_sop: dict[str, list[int]] = defaultdict(list)
    for n, f in enumerate(files):
        if identified[f]:
            by_sop[identified[f][0]].append(n)  # type: ignore[index]
    anonymous_failures = [i for i in failed if not value(i, SOP_UID)]
    assert len(anonymous_failures) == sum(1 for f in files if identified[f] is None)
    assert all(value(i, REASON) == 0xC000 for i in anonymous_failures)

    client = DICOMwebClient(fresh_server.dicomweb)
    stored_sops = {value(i, SOP_UID): value(i, RETRIEVE_URL) for i in stored}
    for sop, url in stored_sops.items():
        study, series = (
            url.split("/studies/")[1].split("/")[0],
            url.split("/series/")[1].split("/")[0],
        )
        got = client.retrieve_instance(
            study, series, sop, media_types=(("application/dicom", "*"),)
        )
        raw = _raw_instance(fresh_server, study, series, sop)
        candidates = [contents[n] for n in by_sop[sop]]
        assert raw in candidates, f"{sop} did not come back byte-for-byte"
        assert got.SOPInstanceUID == sop
        # the duplicate policy (reject): the first decodable file with this UID wins
        first_ok = next(
            contents[n] for n in by_sop[sop] if _pixels_decode(files[n]) or len(by_sop[sop]) == 1
        )
        if len(set(candidates)) > 1:
            assert raw == first_ok or raw == candidates[0]

    for item in failed:
        sop = value(item, SOP_UID)
        if not sop:
            continue
        reason = value(item, REASON)
        if reason == 0xA900:
            assert sop in stored_sops, (
                "a duplicate was refused but no instance with its UID is stored"
            )
        else:
            assert reason == 0xC000
            broken = [files[n] for n in by_sop[sop] if not _pixels_decode(files[n])]
            assert broken, f"{sop} refused as unreadable although pydicom decodes it"
    assert len(stored_sops) == len(by_sop) - sum(
        1
        for sop, ns in by_sop.items()
        if all(not _pixels_decode(files[n]) for n in ns) and sop not in stored_sops
    )


def _raw_instance(server: LiveServer, study: str, series: str, sop: str) -> bytes:
    url = f"{server.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    r = httpx.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert r.status_code == 200
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = r.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]


def test_identical_resend_is_idempotent(fresh_server: LiveServer) -> None:
    data = [part10(ds) for ds in cohort(instances_per_series=2)]
    assert stow(fresh_server, data).status_code == 200
    before = store_state(fresh_server)
    again = stow(fresh_server, data)
    assert again.status_code == 200
    assert len(seq(again.json(), REFERENCED)) == 2
    assert store_state(fresh_server) == before


def test_same_sop_uid_other_content_is_refused_and_original_kept(fresh_server: LiveServer) -> None:
    ds = cohort(instances_per_series=1)[0]
    original = part10(ds)
    assert stow(fresh_server, [original]).status_code == 200
    ds.PatientName = "Changed^Content"
    response = stow(fresh_server, [part10(ds)])
    assert response.status_code == 409
    assert value(seq(response.json(), FAILED)[0], REASON) == 0xA900
    raw = _raw_instance(fresh_server, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert raw == original
    assert store_state(fresh_server)["counts"]["instance"] == 1
    assert len(store_state(fresh_server)["blobs"]) == 1


def test_quoted_unquoted_and_absent_type_parameter_are_accepted(server: LiveServer) -> None:
    for template in (
        'multipart/related; type="application/dicom"; boundary={b}',
        "multipart/related; type=application/dicom; boundary={b}",
        'multipart/related; boundary="{b}"',
        "Multipart/Related; Type=Application/DICOM; Boundary={b}",
    ):
        b = uuid.uuid4().hex[:20]
        data = [part10(ds) for ds in cohort(instances_per_series=1)]
        r = stow(server, data, content_type=template.format(b=b), boundary=b)
        assert r.status_code == 200, (template, r.text)


def orthanc_boundary() -> str:
    """The boundary Orthanc's DICOMweb plugin sends with STOW: two UUIDs joined by '-' (73)."""
    return f"{uuid.uuid4()}-{uuid.uuid4()}"


@pytest.mark.parametrize("quoted", [False, True], ids=["bare", "quoted"])
def test_orthanc_73_character_boundary_is_accepted(fresh_server: LiveServer, quoted: bool) -> None:
    b = orthanc_boundary()
    assert len(b) == 73
    data = [part10(ds) for ds in cohort(instances_per_series=2)]
    shown = f'"{b}"' if quoted else b
    ctype = f"multipart/related; type=application/dicom; boundary={shown}"
    r = stow(fresh_server, data, content_type=ctype, boundary=b)
    assert r.status_code == 200, r.text
    assert store_state(fresh_server)["counts"]["instance"] == 2


@pytest.mark.parametrize("path", ["/dicom-web/studies", "/dicom-web/studies/1.2.3.4"])
def test_absurd_boundary_is_refused_with_400_on_every_stow_route(
    fresh_server: LiveServer, path: str
) -> None:
    from server.core.multipart import MAX_BOUNDARY

    b = "x" * (MAX_BOUNDARY + 1)
    data = [part10(ds) for ds in cohort(instances_per_series=1)]
    before = store_state(fresh_server)
    r = httpx.post(
        fresh_server.url + path,
        content=multipart_body(data, b),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={b}'},
    )
    assert r.status_code == 400, r.text
    assert f"at most {MAX_BOUNDARY}" in r.json()["message"]
    assert store_state(fresh_server) == before


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (
            b"this is not multipart at all",
            'multipart/related; type="application/dicom"; boundary=abc',
            400,
        ),
        (
            b"--abc\r\nContent-Type: application/dicom\r\n\r\nDICM",
            'multipart/related; type="application/dicom"',
            400,
        ),
        (b"--abc--\r\n", 'multipart/related; type="application/dicom"; boundary=abc', 400),
        (b"{}", "application/json", 415),
        (b"--abc--\r\n", 'multipart/related; type="application/dicom+json"; boundary=abc', 415),
        (b"", "", 415),
    ],
    ids=["garbage", "missing-boundary", "no-parts", "json", "dicom+json-type", "no-content-type"],
)
def test_malformed_requests_get_clear_errors_and_store_nothing(
    fresh_server: LiveServer, body: bytes, ctype: str, status: int
) -> None:
    before = store_state(fresh_server)
    r = httpx.post(
        f"{fresh_server.dicomweb}/studies",
        content=body,
        headers={"Content-Type": ctype} if ctype else {},
    )
    assert r.status_code == status, r.text
    assert r.json()["message"]
    assert store_state(fresh_server) == before


def test_body_cut_short_stores_none_of_its_complete_parts(fresh_server: LiveServer) -> None:
    data = [part10(ds) for ds in cohort(instances_per_series=3)]
    body = multipart_body(data, "cutcut")
    truncated = body[: len(body) - len(data[-1]) // 2]
    before = store_state(fresh_server)
    r = stow(fresh_server, [], body=truncated, boundary="cutcut")
    assert r.status_code == 400
    assert "truncated" in r.json()["message"] or "close delimiter" in r.json()["message"]
    assert store_state(fresh_server) == before


def test_non_dicom_and_truncated_parts_fail_alone(fresh_server: LiveServer) -> None:
    good = [part10(ds) for ds in cohort(instances_per_series=2)]
    bad_ds = cohort(instances_per_series=1, rows=64, columns=64)[0]
    truncated = part10(bad_ds)[:-3000]
    r = stow(fresh_server, [good[0], b"%PDF-1.4 not dicom", truncated, good[1]])
    assert r.status_code == 202
    body = r.json()
    assert {value(i, SOP_UID) for i in seq(body, REFERENCED)} == {
        pydicom.dcmread(__import__("io").BytesIO(g)).SOPInstanceUID for g in good
    }
    reasons = sorted(value(i, REASON) for i in seq(body, FAILED))
    assert reasons == [0xC000, 0xC000]
    assert store_state(fresh_server)["counts"]["instance"] == 2
    assert len(store_state(fresh_server)["blobs"]) == 2


def test_part_with_another_media_type_is_refused(server: LiveServer) -> None:
    b = uuid.uuid4().hex
    body = multipart_body([part10(cohort()[0])], b, part_type="application/octet-stream")
    r = stow(server, [], body=body, boundary=b)
    assert r.status_code == 409
    assert value(seq(r.json(), FAILED)[0], REASON) == 0xC000


def test_wrong_study_uid_in_url_fails_with_a900(fresh_server: LiveServer) -> None:
    data = [part10(ds) for ds in cohort(instances_per_series=2)]
    r = stow(fresh_server, data, study="1.2.3.4.5.6.7")
    assert r.status_code == 409
    assert [value(i, REASON) for i in seq(r.json(), FAILED)] == [0xA900, 0xA900]
    assert store_state(fresh_server)["counts"]["instance"] == 0
    assert store_state(fresh_server)["blobs"] == []


def test_study_url_stores_matching_instances_and_names_the_study(server: LiveServer) -> None:
    datasets = cohort(instances_per_series=2)
    study = datasets[0].StudyInstanceUID
    r = stow(server, [part10(ds) for ds in datasets], study=study)
    assert r.status_code == 200
    assert value(r.json(), RETRIEVE_URL).endswith(f"/studies/{study}")


def test_invalid_study_uid_in_url_is_400(server: LiveServer) -> None:
    r = stow(server, [part10(cohort()[0])], study="1.2.abc")
    assert r.status_code == 400
    assert "not a valid DICOM UID" in r.json()["message"]


def test_oversize_body_is_413_declared_or_streamed(
    live_server_factory: type[LiveServer], tmp_path: Path
) -> None:
    small = live_server_factory(
        tmp_path / "small", extra_env={"GATEWAY_STOW__MAX_BODY_BYTES": "20000"}
    ).start()
    data = [part10(ds) for ds in cohort(instances_per_series=4, rows=64, columns=64)]
    before = store_state(small)
    r = stow(small, data)
    assert r.status_code == 413
    assert "limit" in r.json()["message"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        yield multipart_body(data, "streamed")

    r = httpx.post(
        f"{small.dicomweb}/studies",
        content=chunks(),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=streamed'},
    )
    assert r.status_code == 413
    assert store_state(small) == before
