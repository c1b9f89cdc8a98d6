"""C-MOVE to a registered storescp and C-GET into getscu; the DIMSE authorisation matrix:
unknown AE, storing into a foreign dataset or without store rights, C-FIND / C-MOVE / C-GET
outside the agreements: refused, audited, nothing revealed."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from tests.dimse.conftest import (
    Peers,
    StoreScp,
    dimse_event,
    read_responses,
    wait_for_audit,
    write_files,
)
from tests.helpers import cohort


@pytest.fixture(scope="module")
def study(peers: Peers, tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """A 3-instance study stored by MODALITY (into pacs-a) over C-STORE."""
    instances = cohort(instances_per_series=3)
    files = write_files(instances, tmp_path_factory.mktemp("study"))
    done = peers.gateway.run("storescu", calling="MODALITY", files=files)
    assert done.returncode == 0, done.stderr
    return instances


def _uids(instances: list[pydicom.Dataset]) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in instances}


def _move(peers: Peers, calling: str, study_uid: str, dest: str = "DEST") -> str:
    done = peers.gateway.run(
        "movescu", "-v", "-S", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study_uid}", calling=calling,
    )  # fmt: skip
    return done.stderr


def _get(peers: Peers, calling: str, study_uid: str, folder: Path) -> list[pydicom.Dataset]:
    folder.mkdir()
    peers.gateway.run(
        "getscu", "-S", "-od", str(folder), "-k", "QueryRetrieveLevel=STUDY",
        "-k", f"StudyInstanceUID={study_uid}", calling=calling,
    )  # fmt: skip
    return read_responses(folder)


def _find(peers: Peers, calling: str, study_uid: str, folder: Path) -> list[pydicom.Dataset]:
    folder.mkdir()
    peers.gateway.run(
        "findscu", "-S", "-X", "-od", str(folder), "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={study_uid}", "-k", "SeriesInstanceUID", calling=calling,
    )  # fmt: skip
    return read_responses(folder)


def test_move_sends_the_study_to_a_registered_destination(
    peers: Peers, study: list[pydicom.Dataset], destination: StoreScp
) -> None:
    log = _move(peers, "READER", str(study[0].StudyInstanceUID))
    assert "Received Final Move Response (Success)" in log, log
    received = {str(ds.SOPInstanceUID): ds for ds in destination.received()}
    assert set(received) == _uids(study)
    for ds in study:
        assert received[str(ds.SOPInstanceUID)].PixelData == ds.PixelData
    wait_for_audit(peers.gateway.live, dimse_event("C-MOVE", "READER", outcome="0"))


def test_get_returns_the_study_on_the_same_association(
    peers: Peers, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    got = _get(peers, "READER", str(study[0].StudyInstanceUID), tmp_path / "get")
    assert _uids(got) == _uids(study)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in got}
    for ds in study:
        assert by_uid[str(ds.SOPInstanceUID)].PixelData == ds.PixelData


@pytest.mark.parametrize("tool", ["echoscu", "storescu", "findscu", "movescu", "getscu"])
def test_unknown_ae_is_rejected_at_association_and_audited(
    peers: Peers, study: list[pydicom.Dataset], tool: str, tmp_path: Path
) -> None:
    extra: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    if tool == "storescu":
        files = write_files(cohort(instances_per_series=1), tmp_path)
    elif tool != "echoscu":
        extra = ("-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].StudyInstanceUID}")  # fmt: skip
        extra += ("-aem", "DEST") if tool == "movescu" else ()
    done = peers.gateway.run(tool, *extra, calling="INTRUDER", files=files)
    assert done.returncode != 0
    # getscu names no reason; the others print the A-ASSOCIATE-RJ reason
    reason = "Association Rejected" if tool == "getscu" else "Calling AE Title Not Recognized"
    assert reason in done.stderr, done.stderr
    assert str(study[0].StudyInstanceUID) not in done.stdout + done.stderr.split("Request")[-1]
    wait_for_audit(peers.gateway.live, dimse_event("A-ASSOCIATE", "INTRUDER", outcome="4"))


def test_store_without_store_rights_is_refused_and_nothing_stored(
    peers: Peers, tmp_path: Path
) -> None:
    instances = cohort(instances_per_series=1)
    done = peers.gateway.run(
        "storescu", "-v", calling="READER", files=write_files(instances, tmp_path)
    )
    # PS3.7 Annex C general status 0124H Refused: Not Authorized (dcmtk prints it as an unknown status)
    assert "Store Response (Unknown Status: 0x124)" in done.stderr, done.stderr
    assert _find(peers, "MODALITY", str(instances[0].StudyInstanceUID), tmp_path / "f") == []
    wait_for_audit(peers.gateway.live, dimse_event("C-STORE", "READER", outcome="4"))


def test_store_into_a_study_of_a_foreign_dataset_is_refused(
    peers: Peers, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    """OTHERSITE stores into pacs-b; an instance of pacs-a's study changes nothing there."""
    intruder = cohort(instances_per_series=1)[0]
    intruder.StudyInstanceUID = study[0].StudyInstanceUID
    done = peers.gateway.run(
        "storescu", "-v", calling="OTHERSITE", files=write_files([intruder], tmp_path)
    )
    assert "Received Store Response (Success)" not in done.stderr, done.stderr
    series = _find(peers, "MODALITY", str(study[0].StudyInstanceUID), tmp_path / "f")
    assert {str(s.SeriesInstanceUID) for s in series} == {str(study[0].SeriesInstanceUID)}
    wait_for_audit(peers.gateway.live, dimse_event("C-STORE", "OTHERSITE", outcome="4"))


def test_find_outside_agreements_reveals_nothing(
    peers: Peers, study: list[pydicom.Dataset], tmp_path: Path
) -> None:
    assert _find(peers, "OTHERSITE", str(study[0].StudyInstanceUID), tmp_path / "a") == []
    # in-situ processing allows search (as QIDO does)
    assert len(_find(peers, "INSITU", str(study[0].StudyInstanceUID), tmp_path / "b")) == 1
    wait_for_audit(peers.gateway.live, dimse_event("C-FIND", "OTHERSITE"))


@pytest.mark.parametrize("calling", ["OTHERSITE", "INSITU"])
def test_move_and_get_outside_download_agreements_send_nothing(
    peers: Peers, study: list[pydicom.Dataset], destination: StoreScp, calling: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    log = _move(peers, calling, str(study[0].StudyInstanceUID))
    assert "Received Final Move Response" in log, log
    assert destination.received() == []
    assert _get(peers, calling, str(study[0].StudyInstanceUID), tmp_path / "get") == []
    wait_for_audit(peers.gateway.live, dimse_event("C-GET", calling, outcome="4"))


def test_move_to_an_unregistered_destination_is_refused(
    peers: Peers, study: list[pydicom.Dataset], destination: StoreScp
) -> None:
    log = _move(peers, "READER", str(study[0].StudyInstanceUID), dest="NOWHERE")
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in log, log
    assert destination.received() == []
    wait_for_audit(peers.gateway.live, dimse_event("C-MOVE", "READER", outcome="4"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--ae-title", "MODALITY"), "already registered"),
        (("--ae-title", "NEW", "--host", "127.0.0.1"), "--host and --port go together"),
        (("--host", "127.0.0.1", "--port", "104"), "need --ae-title"),
        (("--ae-title", "A" * 17), "1 to 16"),
        (("--ae-title", "BACK\\SLASH"), "1 to 16"),
    ],
)
def test_the_ae_registry_refuses_ambiguous_or_invalid_entries(
    peers: Peers, options: tuple[str, ...], message: str
) -> None:
    before = peers.gateway.live.cli("clients", "list").stdout
    done = peers.gateway.live.cli("clients", "add", "--name", "bad", *options)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert peers.gateway.live.cli("clients", "list").stdout == before
