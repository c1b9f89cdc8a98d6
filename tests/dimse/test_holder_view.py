"""The data-holder view over DIMSE: a store AE (``clients add --ae-title X --store D``)
finds with findscu and retrieves with getscu the studies it pushed into D, with no
data-access agreement, and finds nothing of another dataset."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from tests.dimse.conftest import Peers, dimse_event, read_responses, wait_for_audit, write_files
from tests.helpers import cohort


@pytest.fixture(scope="module")
def pushed(peers: Peers, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[pydicom.Dataset]]:  # fmt: skip
    """A study each: OTHERSITE (store into pacs-b, no agreement at all) and MODALITY (pacs-a)."""
    out: dict[str, list[pydicom.Dataset]] = {}
    for calling in ("OTHERSITE", "MODALITY"):
        instances = cohort(instances_per_series=3)
        files = write_files(instances, tmp_path_factory.mktemp(f"holder-{calling}"))
        done = peers.gateway.run("storescu", calling=calling, files=files)
        assert done.returncode == 0, done.stderr
        out[calling] = instances
    return out


def _find_studies(peers: Peers, calling: str, folder: Path) -> set[str]:
    folder.mkdir()
    done = peers.gateway.run(
        "findscu", "-S", "-X", "-od", str(folder), "-k", "QueryRetrieveLevel=STUDY",
        "-k", "StudyInstanceUID", "-k", "PatientID", calling=calling,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {str(ds.StudyInstanceUID) for ds in read_responses(folder)}


def test_store_ae_finds_its_own_studies_and_nothing_of_another_dataset(
    peers: Peers, pushed: dict[str, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    own = str(pushed["OTHERSITE"][0].StudyInstanceUID)
    foreign = str(pushed["MODALITY"][0].StudyInstanceUID)
    found = _find_studies(peers, "OTHERSITE", tmp_path / "find")
    assert own in found
    assert foreign not in found
    wait_for_audit(peers.gateway.live, dimse_event("C-FIND", "OTHERSITE", outcome="0"))


def test_store_ae_retrieves_its_own_study_with_getscu_but_not_another_datasets(
    peers: Peers, pushed: dict[str, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    for calling, study, folder in (("OTHERSITE", pushed["OTHERSITE"], "own"),
                                   ("OTHERSITE", pushed["MODALITY"], "foreign")):  # fmt: skip
        (tmp_path / folder).mkdir()
        peers.gateway.run(
            "getscu", "-S", "-od", str(tmp_path / folder), "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={study[0].StudyInstanceUID}", calling=calling,
        )  # fmt: skip
    got = read_responses(tmp_path / "own")
    assert {str(ds.SOPInstanceUID) for ds in got} == {
        str(ds.SOPInstanceUID) for ds in pushed["OTHERSITE"]
    }
    assert read_responses(tmp_path / "foreign") == []
    wait_for_audit(peers.gateway.live, dimse_event("C-GET", "OTHERSITE", outcome="0"))
