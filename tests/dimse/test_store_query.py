"""dcmtk against the gateway's DIMSE port: echo, C-STORE in many transfer syntaxes through the
ingest pipeline (found by QIDO, byte-equal over WADO), C-FIND at every level with QIDO's
matching, and the presentation contexts the SCP accepts (every storage SOP class)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts

from server.dimse.service import STORAGE_TRANSFER_SYNTAXES
from tests.dimse.conftest import (
    GATEWAY_AE,
    Peers,
    audit_events,
    dataset_bytes,
    dimse_event,
    read_responses,
    wait_for_audit,
    with_new_uids,
    write_files,
)
from tests.helpers import cohort
from tests.security.conftest import bearer, token

# pydicom's test files, one per transfer syntax it ships, and the storescu option proposing it
FILES = {
    "explicit-le": ("CT_small.dcm", "-xe"),
    "implicit-le": ("MR_small_implicit.dcm", "-xi"),
    "deflated": ("image_dfl.dcm", "-xd"),
    "jpeg-baseline": ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),
    "jpeg-extended": ("JPGExtended.dcm", "-xx"),
    "jpeg-ls": ("MR_small_jpeg_ls_lossless.dcm", "-xt"),
    "jpeg-2000": ("MR_small_jp2klossless.dcm", "-xv"),
    "rle": ("MR_small_RLE.dcm", "-xr"),
}


@pytest.fixture(scope="module")
def stored(peers: Peers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pydicom.Dataset]:
    """Every FILES entry sent by storescu as AE MODALITY into pacs-a, in its own syntax."""
    folder = tmp_path_factory.mktemp("send")
    study, series = generate_uid(), generate_uid()
    sent = {}
    for name, (file, option) in FILES.items():
        source = get_testdata_file(file, download=False)
        assert source, file
        target = folder / f"{name}.dcm"
        sent[name] = with_new_uids(source, target, study, series)
        sent[name].filename = str(target)
        # -R with one -x option: propose only the file's own transfer syntax (no conversion)
        done = peers.gateway.run("storescu", "-v", "-R", option, calling="MODALITY",
                                 files=(str(target),))  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Received Store Response (Success)" in done.stderr, done.stderr
    return sent


def test_echo_answers_registered_aes(peers: Peers) -> None:
    for ae in ("MODALITY", "READER", "OTHERSITE"):
        done = peers.gateway.run("echoscu", calling=ae)
        assert done.returncode == 0, done.stderr


def _wado(peers: Peers, ds: pydicom.Dataset) -> bytes:
    live = peers.gateway.live
    url = (f"{live.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    answer = httpx.get(url, headers={"Accept": accept, **bearer(token(live, peers.modality))})
    assert answer.status_code == 200, answer.text
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = answer.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]


@pytest.mark.parametrize("name", list(FILES))
def test_stored_instance_is_found_by_qido_and_byte_equal_over_wado(
    peers: Peers, stored: dict[str, pydicom.Dataset], name: str
) -> None:
    ds = stored[name]
    live = peers.gateway.live
    found = httpx.get(
        f"{live.dicomweb}/instances",
        params={"SOPInstanceUID": ds.SOPInstanceUID},
        headers=bearer(token(live, peers.modality)),
    )
    assert found.status_code == 200, found.text
    assert [r["00080018"]["Value"][0] for r in found.json()] == [ds.SOPInstanceUID]
    served = _wado(peers, ds)
    sent = dataset_bytes(Path(ds.filename).read_bytes())
    assert dataset_bytes(served) == sent
    assert pydicom.dcmread(__import__("io").BytesIO(served)).file_meta.TransferSyntaxUID == (
        ds.file_meta.TransferSyntaxUID
    )


def test_store_is_audited_with_dataset_and_study(
    peers: Peers, stored: dict[str, pydicom.Dataset]
) -> None:
    event = wait_for_audit(peers.gateway.live, dimse_event("C-STORE", "MODALITY"))
    assert event["outcome"] == "0"
    entities = [e.get("what", {}).get("reference") for e in event["entity"]]
    assert "ResearchStudy/pacs-a" in entities
    names = [e.get("name", "") for e in event["entity"]]
    assert f"study:{stored['rle'].StudyInstanceUID}" in names


def test_instances_stored_in_one_association_are_audited_per_study_the_first_at_once(
    peers: Peers, tmp_path: Path
) -> None:
    """PS3.15 A.5.3.7: the instances an association stored into a study are audited
    together: the first in an event of its own, written at once (a crash cannot lose the
    access), the rest in one event (or a few: a batch is written after 5 s at the latest)."""
    first, second = cohort(instances_per_series=5), cohort(instances_per_series=4)
    files = write_files(first + second, tmp_path / "files")
    done = peers.gateway.run("storescu", calling="MODALITY", files=files)
    assert done.returncode == 0, done.stdout + done.stderr
    for study, other in ((first, second), (second, first)):
        uid = study[0].StudyInstanceUID

        def about(event: dict[str, Any], uid: str = uid) -> bool:
            names = [e.get("name", "") for e in event.get("entity", [])]
            return dimse_event("C-STORE", "MODALITY")(event) and f"study:{uid}" in names

        wait_for_audit(peers.gateway.live, about)
        deadline = time.monotonic() + 15
        while True:
            events = [e for e in audit_events(peers.gateway.live) if about(e)]
            listed = [
                e["name"] for ev in events for e in ev["entity"]
                if e.get("name", "").startswith("instance:")
            ]  # fmt: skip
            if len(listed) >= len(study) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(listed) == sorted(f"instance:{ds.SOPInstanceUID}" for ds in study)
        assert not set(listed) & {f"instance:{ds.SOPInstanceUID}" for ds in other}
        assert len(events) < len(study) - 1, "one audit event per instance, not per study"
        alone = [
            ev for ev in events
            if [e["name"] for e in ev["entity"] if e.get("name", "").startswith("instance:")]
            == [f"instance:{study[0].SOPInstanceUID}"]
        ]  # fmt: skip
        assert alone, "the study's first instance is audited in an event of its own"


def _find(
    peers: Peers, tmp_path: Path, model: str, *keys: str, calling: str = "MODALITY"
) -> list[pydicom.Dataset]:
    out = tmp_path / f"find-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = [model, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = peers.gateway.run("findscu", *args, calling=calling)
    assert done.returncode == 0, done.stdout + done.stderr
    return read_responses(out)


def test_find_study_level_matches_like_qido(
    peers: Peers, stored: dict[str, pydicom.Dataset], tmp_path: Path
) -> None:
    ds = stored["explicit-le"]
    answers = _find(peers, tmp_path, "-S", "QueryRetrieveLevel=STUDY",
                    f"StudyInstanceUID={ds.StudyInstanceUID}", "PatientID", "StudyDate",
                    "NumberOfStudyRelatedInstances", "ModalitiesInStudy")  # fmt: skip
    assert len(answers) == 1
    answer = answers[0]
    assert answer.StudyInstanceUID == ds.StudyInstanceUID
    assert int(answer.NumberOfStudyRelatedInstances) == len(FILES)
    assert answer.RetrieveAETitle == GATEWAY_AE
    assert "PatientID" in answer
    qido = httpx.get(
        f"{peers.gateway.live.dicomweb}/studies",
        params={"StudyInstanceUID": ds.StudyInstanceUID, "includefield": "00201208"},
        headers=bearer(token(peers.gateway.live, peers.modality)),
    ).json()
    assert qido[0]["00201208"]["Value"][0] == int(answer.NumberOfStudyRelatedInstances)


def test_find_series_and_image_levels(
    peers: Peers, stored: dict[str, pydicom.Dataset], tmp_path: Path
) -> None:
    ds = stored["rle"]
    series = _find(peers, tmp_path, "-S", "QueryRetrieveLevel=SERIES",
                   f"StudyInstanceUID={ds.StudyInstanceUID}", "SeriesInstanceUID", "Modality")  # fmt: skip
    assert [s.SeriesInstanceUID for s in series] == [ds.SeriesInstanceUID]
    images = _find(peers, tmp_path, "-S", "QueryRetrieveLevel=IMAGE",
                   f"StudyInstanceUID={ds.StudyInstanceUID}",
                   f"SeriesInstanceUID={ds.SeriesInstanceUID}", "SOPInstanceUID", "SOPClassUID")  # fmt: skip
    assert {i.SOPInstanceUID for i in images} == {d.SOPInstanceUID for d in stored.values()}
    # list of UID matching (PS3.4 C.2.2.2.2): backslash-separated
    two = [stored["rle"].SOPInstanceUID, stored["deflated"].SOPInstanceUID]
    listed = _find(peers, tmp_path, "-S", "QueryRetrieveLevel=IMAGE",
                   f"SOPInstanceUID={chr(92).join(two)}")  # fmt: skip
    assert {i.SOPInstanceUID for i in listed} == set(two)


def test_find_patient_level_with_wildcard_and_range(
    peers: Peers, stored: dict[str, pydicom.Dataset], tmp_path: Path
) -> None:
    ds = stored["explicit-le"]
    pid = str(ds.PatientID)
    patients = _find(peers, tmp_path, "-P", "QueryRetrieveLevel=PATIENT",
                     f"PatientID={pid[:3]}*", "PatientName", "NumberOfPatientRelatedStudies")  # fmt: skip
    assert pid in {str(p.PatientID) for p in patients}
    studies = _find(peers, tmp_path, "-P", "QueryRetrieveLevel=STUDY", f"PatientID={pid}",
                    "StudyDate=19000101-20991231", "StudyInstanceUID")  # fmt: skip
    assert ds.StudyInstanceUID in {s.StudyInstanceUID for s in studies}
    none = _find(peers, tmp_path, "-S", "QueryRetrieveLevel=STUDY", f"PatientID={pid}",
                 "StudyDate=18000101-18001231", "StudyInstanceUID")  # fmt: skip
    assert none == []


def test_find_refuses_matching_it_cannot_do(peers: Peers, tmp_path: Path) -> None:
    """A key QIDO cannot match on is refused (0xA900 + ErrorComment), never matched universally."""
    out = tmp_path / "refused"
    out.mkdir()
    done = peers.gateway.run(
        "findscu", "-v", "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
        "-k", "PatientWeight=70", calling="MODALITY",
    )  # fmt: skip
    final = done.stderr.split("Received Final Find Response")[-1]
    assert "DataSetDoesNotMatchSOPClass" in final, done.stderr
    assert read_responses(out) == []
    done = peers.gateway.run(
        "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=FRAME", calling="MODALITY"
    )
    final = done.stderr.split("Received Final Find Response")[-1]
    assert "DataSetDoesNotMatchSOPClass" in final, done.stderr


def test_every_storage_sop_class_and_transfer_syntax_is_accepted(peers: Peers) -> None:
    """Walk the contexts: every storage SOP class (explicit LE) and every syntax (CT)."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = 30
    contexts = [cx.abstract_syntax for cx in AllStoragePresentationContexts]
    for start in range(0, len(contexts), 120):
        ae.requested_contexts = []
        for uid in contexts[start : start + 120]:
            ae.add_requested_context(uid, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", peers.gateway.port, ae_title=GATEWAY_AE)
        assert assoc.is_established
        refused = [cx.abstract_syntax for cx in assoc.rejected_contexts]
        assoc.release()
        assert refused == []
    ae.requested_contexts = []
    for ts in STORAGE_TRANSFER_SYNTAXES:
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ts)
    assoc = ae.associate("127.0.0.1", peers.gateway.port, ae_title=GATEWAY_AE)
    assert assoc.is_established
    accepted = {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == set(STORAGE_TRANSFER_SYNTAXES)
    for required in ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.5"):
        assert required in accepted
