"""The one ingest pipeline de-identifies before anything is stored (STOW on both routes, import).

A live gateway with datasets carrying policies; real clients (dicomweb-client, httpx,
the CLI, fhir.resources). After a store, every response (STOW answer, QIDO with
includefield=all, metadata, WADO bytes, FHIR ImagingStudy and Patient) and every file
under the data directory is free of the planted PatientName/PatientID/UIDs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient

from tests.deid.ingest_helpers import (
    Planted,
    create_dataset,
    eucaim_patient_id,
    files_holding,
    get,
    part10,
    planted,
    secret,
    spool_files,
)
from tests.helpers import multipart_body, seq, stow, value
from tests.live import LiveServer

REFERENCED, FAILED = "00081199", "00081198"
SOP_UID, RETRIEVE_URL, REASON, COMMENT = "00081155", "00081190", "00081197", "00001902"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("deid-ingest") / "data").start()
    create_dataset(server, "basic", "--deidentify", "basic")
    create_dataset(server, "eucaim", "--deidentify", "eucaim", "--provider-id", "SITE-1")
    create_dataset(server, "held", "--deidentify", "basic", "--burned-in", "quarantine")
    create_dataset(server, "plain", "--deidentify", "none")
    create_dataset(server, "traits", "--deidentify", "basic",
                   "--deid-option", "retain-patient-characteristics")  # fmt: skip
    yield server
    server.stop()


def _client(live: LiveServer, dataset: str) -> DICOMwebClient:
    return DICOMwebClient(f"{live.url}/datasets/{dataset}/dicom-web")


def _stored(response: pydicom.Dataset) -> list[tuple[str, str]]:
    """(SOP Instance UID, RetrieveURL) of each stored part of a STOW answer."""
    items = response.get("ReferencedSOPSequence", [])
    return [(str(i.ReferencedSOPInstanceUID), str(i.RetrieveURL)) for i in items]


def _retrieve(url: str) -> bytes:
    """The instance at a RetrieveURL, as stored (one part, any transfer syntax)."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = httpx.get(url, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text[:200]
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = response.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]


def _everything(live: LiveServer, study: str) -> list[bytes]:
    """Every answer a researcher could get about one stored study."""
    out = [
        get(live, "/dicom-web/studies", StudyInstanceUID=study, includefield="all").content,
        get(live, f"/dicom-web/studies/{study}/series", includefield="all").content,
        get(live, f"/dicom-web/studies/{study}/instances", includefield="all").content,
        get(live, f"/dicom-web/studies/{study}/metadata").content,
        get(live, f"/dicom-web/studies/{study}", accept='multipart/related; type="application/dicom"').content,
    ]  # fmt: skip
    imaging = get(live, "/fhir/ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{study}")
    bundle = Bundle.model_validate_json(imaging.content)
    assert bundle.entry, "the ImagingStudy of the stored study is found"
    subject = bundle.entry[0].resource.subject.reference
    out += [imaging.content, get(live, f"/fhir/{subject}").content]
    return out


def _assert_clean(live: LiveServer, subject: Planted, answers: list[bytes]) -> None:
    for needle in subject.needles:
        for answer in answers:
            assert needle.encode() not in answer, f"{needle} came back"
    assert files_holding(live.data_dir, subject.needles) == {}
    assert spool_files(live) == []


def test_stow_basic_dataset_stores_only_pseudonymised_data(live: LiveServer) -> None:
    subject = planted(PatientBirthDate="19710912", PatientSex="F")
    answer = _client(live, "basic").store_instances(subject.datasets)
    stored = _stored(answer)
    assert len(stored) == 2 and "FailedSOPSequence" not in answer
    assert {sop for sop, _ in stored}.isdisjoint(subject.uids)  # the stored, pseudonymised UIDs
    study = stored[0][1].split("/studies/")[1].split("/")[0]
    for sop, url in stored:  # what the answer references is what a client can retrieve
        got = pydicom.dcmread(io.BytesIO(_retrieve(url)))
        assert got.SOPInstanceUID == sop and got.PatientIdentityRemoved == "YES"
        assert got.PatientName != subject.name and got.PatientID != subject.patient_id
        assert "PatientBirthDate" not in got or not got.PatientBirthDate
    answers = _everything(live, study)
    _assert_clean(live, subject, [answer.to_json().encode(), *answers])
    patient = Patient.model_validate_json(answers[-1])
    assert patient.birthDate is None and patient.gender == "unknown"  # Patient Characteristics off


def test_stow_eucaim_dataset_uses_the_lethe_pseudonym(live: LiveServer) -> None:
    subject = planted()
    answer = _client(live, "eucaim").store_instances(subject.datasets)
    stored = _stored(answer)
    assert len(stored) == 2
    study = stored[0][1].split("/studies/")[1].split("/")[0]
    assert study.startswith("1.3.6.1.4.1.58108.2023")
    answers = _everything(live, study)
    _assert_clean(live, subject, [answer.to_json().encode(), *answers])
    expected = eucaim_patient_id(secret(live, "eucaim"), subject.patient_id)
    patient = Patient.model_validate_json(answers[-1])
    assert [i.value for i in patient.identifier or []] == [expected]
    qido = get(live, "/dicom-web/studies", StudyInstanceUID=study).json()
    assert qido[0]["00100020"]["Value"] == [expected]


def test_resending_is_the_same_instance(live: LiveServer) -> None:
    subject = planted()
    client = _client(live, "basic")
    first = _stored(client.store_instances(subject.datasets))
    before = get(live, "/healthz").json()["instance"]
    again = client.store_instances(subject.datasets)  # deterministic output: a duplicate
    assert _stored(again) == first and "FailedSOPSequence" not in again
    assert get(live, "/healthz").json()["instance"] == before


def test_study_url_compares_the_sent_study_uid(live: LiveServer) -> None:
    subject = planted(instances=1)
    sent_study = subject.datasets[0].StudyInstanceUID
    path = f"/datasets/basic/dicom-web/studies/{sent_study}"
    response = _post(live, path, subject.parts())
    assert response.status_code == 200, response.text
    (item,) = seq(response.json(), REFERENCED)
    assert sent_study not in value(item, RETRIEVE_URL)
    stored_study = value(item, RETRIEVE_URL).split("/studies/")[1].split("/")[0]
    assert value(response.json(), RETRIEVE_URL).endswith(f"/studies/{stored_study}")
    other = planted(instances=1)
    refused = _post(live, path, other.parts())
    assert refused.status_code == 409
    (failed,) = seq(refused.json(), FAILED)
    assert value(failed, REASON) == 0xA900
    assert value(failed, SOP_UID) == other.datasets[0].SOPInstanceUID  # names what was sent
    assert spool_files(live) == []


def _post(live: LiveServer, path: str, parts: list[bytes]) -> httpx.Response:
    body = multipart_body(parts, "b0undary")
    ctype = 'multipart/related; type="application/dicom"; boundary=b0undary'
    return httpx.post(
        f"{live.url}{path}", content=body, headers={"Content-Type": ctype}, timeout=60
    )


def test_default_route_applies_the_default_policy(live: LiveServer) -> None:
    """/dicom-web/studies stores into the default dataset with the settings' default profile."""
    subject = planted(instances=1)
    response = stow(live, subject.parts())
    assert response.status_code == 200, response.text
    # tests/live.py runs development servers with GATEWAY_DEID__DEFAULT_PROFILE=none
    (item,) = seq(response.json(), REFERENCED)
    assert value(item, SOP_UID) == subject.datasets[0].SOPInstanceUID


def test_burned_in_refused(live: LiveServer) -> None:
    subject = planted(instances=1, BurnedInAnnotation="YES")
    before = get(live, "/healthz").json()["instance"]
    response = _post(live, "/datasets/basic/dicom-web/studies", subject.parts())
    assert response.status_code == 409
    (failed,) = seq(response.json(), FAILED)
    assert value(failed, REASON) == 0xC000
    assert "burned-in" in value(failed, COMMENT)
    assert get(live, "/healthz").json()["instance"] == before
    assert files_holding(live.data_dir, subject.needles) == {}
    assert spool_files(live) == []


def test_burned_in_quarantined_then_released_or_deleted(live: LiveServer) -> None:
    first, second = (
        planted(instances=1, BurnedInAnnotation="YES"),
        planted(instances=1, BurnedInAnnotation="YES"),
    )
    before = get(live, "/healthz").json()["instance"]
    for subject in (first, second):
        response = _post(live, "/datasets/held/dicom-web/studies", subject.parts())
        assert response.status_code == 409
        (failed,) = seq(response.json(), FAILED)
        assert "held for an administrator" in value(failed, COMMENT)
    assert get(live, "/healthz").json()["instance"] == before  # held out of the index
    listed = live.cli("quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    held = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(held) == 2 and all(h["dataset"] == "held" for h in held)
    root = live.data_dir / "deid-quarantine"
    for h in held:
        folder = root / h["id"]
        assert folder.stat().st_mode & 0o777 == 0o700
        for f in folder.iterdir():
            assert f.stat().st_mode & 0o777 == 0o600
    for subject in (first, second):  # the held copies are de-identified: no original anywhere
        assert files_holding(live.data_dir, subject.needles) == {}
    assert spool_files(live) == []

    released = live.cli("quarantine", "release", held[0]["id"])
    assert released.returncode == 0, released.stderr
    sop = held[0]["sopInstanceUID"]
    rows = get(live, "/dicom-web/instances", SOPInstanceUID=sop).json()
    assert len(rows) == 1
    assert get(live, "/healthz").json()["instance"] == before + 1
    deleted = live.cli("quarantine", "delete", held[1]["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert live.cli("quarantine", "list", "--json").stdout.strip() == ""
    assert not any(root.iterdir())
    again = live.cli("quarantine", "release", held[1]["id"])
    assert again.returncode != 0 and "no quarantined instance" in again.stderr
    events = _audit_paths(live)
    assert f"imaging-gateway quarantine release {held[0]['id']}" in events
    assert f"imaging-gateway quarantine delete {held[1]['id']}" in events


def _audit_paths(live: LiveServer) -> str:
    """Every stored audit event, from the SQLite file or the shared database."""
    from server.security.audit import tail, tail_shared

    url = live.env().get("GATEWAY_DATABASE_URL")
    events = tail_shared(url, 10**6) if url else tail(live.data_dir / "audit.sqlite", 10**6)
    return "\n".join(orjson.dumps(event).decode() for _, event in events)


def test_deid_record_is_kept_audited_and_admin_only(live: LiveServer) -> None:
    subject = planted(instances=1)
    ((sop, url),) = _stored(_client(live, "basic").store_instances(subject.datasets))
    shown = live.cli("instance", "deid-record", sop)
    assert shown.returncode == 0, shown.stderr
    record = orjson.loads(shown.stdout)
    assert record["dataset"] == "basic"
    deid = record["deidentification"]
    assert deid["profile"] == "basic" and deid["edition"]
    assert "PatientName" in deid["changed"] + deid["removed"]
    assert subject.name.encode() not in shown.stdout.encode()  # names, never values
    missing = live.cli("instance", "deid-record", "1.2.3.4.5")
    assert missing.returncode != 0
    audit = _audit_paths(live)
    assert '"type":"deidentification"' in audit.replace(" ", "") and sop in audit
    assert "imaging-gateway instance deid-record" in audit
    # no HTTP answer about the instance carries the record
    for answer in _everything(live, url.split("/studies/")[1].split("/")[0]):
        assert b"deidentification" not in answer and b'"removed"' not in answer


def test_import_deidentifies(live: LiveServer, tmp_path: Path) -> None:
    subject = planted()
    for n, data in enumerate(subject.parts()):
        (tmp_path / f"f{n}.dcm").write_bytes(data)
    done = live.cli("import", "--quiet", "--dataset", "basic", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "stored 2 new" in done.stdout and "failed 0" in done.stdout
    rows = get(live, "/dicom-web/studies", PatientName=subject.name).json()
    assert rows == []
    assert files_holding(live.data_dir, subject.needles) == {}
    assert spool_files(live) == []
    assert all(
        p.read_bytes() == d
        for p, d in zip(sorted(tmp_path.iterdir()), subject.parts(), strict=True)
    )


def test_plain_dataset_stores_as_sent(live: LiveServer) -> None:
    """``none`` (chosen explicitly): the bytes are stored as sent."""
    subject = planted(instances=1)
    sent = part10(subject.datasets[0])
    response = _post(live, "/datasets/plain/dicom-web/studies", [sent])
    assert response.status_code == 200, response.text
    (item,) = seq(response.json(), REFERENCED)
    assert value(item, SOP_UID) == subject.datasets[0].SOPInstanceUID
    assert _retrieve(value(item, RETRIEVE_URL)) == sent


def test_unreadable_and_hostile_parts_fail_and_leave_no_spool(live: LiveServer) -> None:
    subject = planted(instances=1)
    good = subject.parts()[0]
    parts = [b"not dicom at all", good[: len(good) // 2], b"\0" * 132 + b"DICM" + b"\xff" * 64]
    response = _post(live, "/datasets/basic/dicom-web/studies", parts)
    assert response.status_code == 409, response.text
    failed = seq(response.json(), FAILED)
    assert len(failed) == 3 and {value(i, REASON) for i in failed} == {0xC000}
    assert all(value(i, COMMENT) for i in failed)
    assert files_holding(live.data_dir, subject.needles) == {}
    assert spool_files(live) == []


def test_index_failure_leaves_no_original_bytes(tmp_path: Path) -> None:
    """An exception after de-identification (the index write fails): nothing stored, no spool."""
    server = LiveServer(tmp_path / "data", extra_env={"GATEWAY_FAILPOINT": "index_write_fails"})
    create_dataset(server, "basic", "--deidentify", "basic")
    server.start()
    try:
        subject = planted()
        response = _post(server, "/datasets/basic/dicom-web/studies", subject.parts())
        assert response.status_code == 409, response.text
        assert {value(i, REASON) for i in seq(response.json(), FAILED)} == {0x0110}
        assert get(server, "/healthz").json()["instance"] == 0
        assert files_holding(server.data_dir, subject.needles) == {}
        assert spool_files(server) == []
    finally:
        server.stop()


def test_fhir_patient_follows_retain_patient_characteristics(live: LiveServer) -> None:
    subject = planted(instances=1, PatientBirthDate="19710912", PatientSex="F", PatientAge="054Y")
    ((_, url),) = _stored(_client(live, "traits").store_instances(subject.datasets))
    study = url.split("/studies/")[1].split("/")[0]
    answers = _everything(live, study)
    _assert_clean(live, subject, answers)
    stored = pydicom.dcmread(io.BytesIO(_retrieve(url)))
    assert stored.PatientSex == "F" and stored.PatientAge == "054Y"  # kept by the option
    patient = Patient.model_validate_json(answers[-1])
    assert patient.gender == "female"
    kept_birth = bool(stored.get("PatientBirthDate"))
    assert (patient.birthDate is not None) == kept_birth  # the Patient shows what is stored
    qido = get(live, "/dicom-web/studies", StudyInstanceUID=study, includefield="all").json()
    assert qido[0]["00100040"]["Value"] == ["F"]
