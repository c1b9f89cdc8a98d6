"""``imaging-gateway pull`` from Orthanc over DICOMweb (QIDO-RS + WADO-RS, HTTP Basic)."""

from __future__ import annotations

import re
from io import BytesIO

import pydicom

from tests.pull.conftest import CREDENTIALS_ENV, PASSWORD, Archive, Gateway, basic_env


def _source(archive: Archive) -> tuple[str, ...]:
    return ("--from", archive.orthanc.dicomweb, "--basic", f"env:{CREDENTIALS_ENV}")


def _summary(stdout: str) -> dict[str, int]:
    found = re.search(r"found (\d+), new (\d+), already present (\d+), failed (\d+)", stdout)
    assert found, stdout
    return dict(zip(("found", "new", "present", "failed"), map(int, found.groups()), strict=True))


def test_pull_by_study_stores_each_instance_byte_identical_and_a_rerun_fetches_nothing(
    archive: Archive, gateway: Gateway
) -> None:
    study = next(uid for uid, (_, day) in archive.studies.items() if day == "20230301")
    args = ("--dataset", "raw", *_source(archive), "--study", study)
    done = gateway.pull(*args, env=basic_env())
    assert done.returncode == 0, done.stdout + done.stderr
    expected = archive.of_studies(study)
    assert _summary(done.stdout) == {
        "found": len(expected),
        "new": len(expected),
        "present": 0,
        "failed": 0,
    }
    again = gateway.pull(*args, env=basic_env())
    assert again.returncode == 0, again.stdout + again.stderr
    assert _summary(again.stdout) == {
        "found": len(expected),
        "new": 0,
        "present": len(expected),
        "failed": 0,
    }
    assert PASSWORD not in done.stdout + done.stderr + again.stdout + again.stderr
    assert gateway.stored() == expected


def test_pull_by_patient_takes_all_and_only_that_patients_studies(
    archive: Archive, gateway: Gateway
) -> None:
    done = gateway.pull(
        "--dataset", "raw", *_source(archive), "--patient", "PULL-P1", env=basic_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr
    studies = [uid for uid, (patient, _) in archive.studies.items() if patient == "PULL-P1"]
    assert len(studies) == 2
    assert gateway.stored() == archive.of_studies(*studies)


def test_pull_by_date_range_takes_the_studies_of_those_days(
    archive: Archive, gateway: Gateway
) -> None:
    done = gateway.pull("--dataset", "raw", *_source(archive), "--since", "2021-01-01",
                        "--until", "2023-12-31", env=basic_env())  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    studies = [uid for uid, (_, day) in archive.studies.items() if "20210101" <= day <= "20231231"]
    assert len(studies) == 2
    assert gateway.stored() == archive.of_studies(*studies)


def test_pull_into_a_basic_dataset_de_identifies_every_instance_and_lists_refusals(
    archive: Archive, gateway: Gateway
) -> None:
    done = gateway.pull(
        "--dataset", "deid", *_source(archive), "--patient", "PULL-P2", env=basic_env()
    )
    sent = archive.of_studies(*[u for u, (p, _) in archive.studies.items() if p == "PULL-P2"])
    # one of pydicom's files has no BurnedInAnnotation and a modality that may carry text:
    # the basic policy refuses it, and the pull names it and exits 1
    assert done.returncode == 1, done.stdout + done.stderr
    assert _summary(done.stdout) == {
        "found": len(sent),
        "new": len(sent) - 1,
        "present": 0,
        "failed": 1,
    }
    assert "burned-in text suspected" in done.stdout
    stored = gateway.stored()
    assert len(stored) == len(sent) - 1
    assert not set(stored) & set(sent)  # every UID replaced
    names = {
        str(pydicom.dcmread(BytesIO(d), stop_before_pixels=True).PatientName) for d in sent.values()
    }
    for data in stored.values():
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        assert ds.PatientID != "PULL-P2"
        assert str(ds.get("PatientName", "")) not in names
        assert ds.PatientIdentityRemoved == "YES"


def test_wrong_credentials_fail_clearly_and_store_nothing(
    archive: Archive, gateway: Gateway
) -> None:
    done = gateway.pull("--dataset", "raw", "--from", archive.orthanc.dicomweb, "--basic",
                        f"env:{CREDENTIALS_ENV}", "--patient", "PULL-P1",
                        env={CREDENTIALS_ENV: "puller:wrong-password"})  # fmt: skip
    assert done.returncode != 0
    assert "HTTP 401" in done.stderr
    assert "wrong-password" not in done.stdout + done.stderr
    assert gateway.stored() == {}


def test_a_literal_secret_is_refused_before_anything_runs(
    archive: Archive, gateway: Gateway
) -> None:
    done = gateway.pull("--dataset", "raw", "--from", archive.orthanc.dicomweb, "--basic",
                        f"puller:{PASSWORD}", "--patient", "PULL-P1")  # fmt: skip
    assert done.returncode == 2
    assert "env:NAME or file:PATH" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
