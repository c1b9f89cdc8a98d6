"""Age at diagnosis over HTTP: the age at each patient's first study, for all the patient's
studies, on a live gateway with de-identified data (dates shifted per patient, birth date
removed, PatientAge kept), following a DICOMweb DELETE of the first study.

Runs on SQLite, and on Elasticsearch with ``--index-backend elasticsearch``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import instance
from tests.live import LiveServer
from tests.security.conftest import cli_ok

SECRET = "first-study-" + uuid.uuid4().hex
AGE, MOD = "SNOMEDCT423493009", "RID10311"
# (patient, study date, PatientAge, modality): P1 at 60 (CT) and 65 (MR), P2 at 40
STUDIES = [
    ("P1", "20150301", "065Y", "MR"),
    ("P1", "20100301", "060Y", "CT"),
    ("P2", "20200301", "040Y", "MR"),
]


def _write(folder: Path) -> None:
    folder.mkdir(parents=True)
    for n, (patient, date, age, modality) in enumerate(STUDIES):
        ds = instance(PatientID=patient, PatientAge=age, Modality=modality, PatientSex="F",
                      StudyDate=date, PatientBirthDate="19500101")  # fmt: skip
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("first-study")
    server = LiveServer(root / "data", extra_env={
        "GATEWAY_FEDERATION__EUCAIM_SEARCH_TOKEN": SECRET, "GATEWAY_FEDERATION__MIN_COUNT": "1"})  # fmt: skip
    cli_ok(server, "dataset", "create", "d-history", "--title", "History", "--cancer-type", "lung",
           "--access-rights", "RESTRICTED", "--deidentify", "basic",
           "--deid-option", "retain-longitudinal-modified-dates",
           "--deid-option", "retain-patient-characteristics")  # fmt: skip
    _write(root / "in")
    cli_ok(server, "import", "--dataset", "d-history", str(root / "in"))
    server.start()
    yield server
    server.stop()


def counts(live: LiveServer, *conditions: dict[str, Any]) -> tuple[int, int] | None:
    ast = {"operand": "AND", "children": list(conditions)}
    answer = httpx.post(
        live.url + "/api/datasets/eucaimSearch", content=json.dumps({"ast": ast}),
        headers={"Authorization": f"Secret {SECRET}", "Content-Type": "application/json"},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    found = {c["id"]: c for c in answer.json()["collections"]}
    c = found.get("d-history")
    return None if c is None else (c["studies_count"], c["subjects_count"])


def age(low: float, high: float) -> dict[str, Any]:
    return {"key": AGE, "type": "BETWEEN", "value": {"min": low, "max": high}}


def test_stored_data_is_de_identified(live: LiveServer) -> None:
    rows = httpx.get(f"{live.dicomweb}/studies", params={"includefield": "all"}, timeout=30).json()
    assert len(rows) == 3
    assert all("Value" not in r.get("00100030", {}) for r in rows)  # no birth date
    assert sorted(r["00101010"]["Value"][0] for r in rows) == ["040Y", "060Y", "065Y"]
    assert {r["00080020"]["Value"][0] for r in rows}.isdisjoint({s[1] for s in STUDIES})


def test_age_at_the_first_study_for_every_study_of_the_patient(live: LiveServer) -> None:
    assert counts(live, age(64, 66)) is None  # P1 was 65 at the later study only
    assert counts(live, age(59, 61)) == (2, 1)  # both of P1's studies
    mr = {"key": MOD, "type": "EQUALS", "value": "RID10312"}
    assert counts(live, age(59, 61), mr) == (1, 1)  # the later MR study, by P1's first age
    assert counts(live, age(30, 70)) == (3, 2)


def test_deleting_the_first_study_makes_the_next_one_first(live: LiveServer) -> None:
    rows = httpx.get(f"{live.dicomweb}/studies", params={"ModalitiesInStudy": "CT"}, timeout=30)
    (first,) = rows.json()
    uid = first["0020000D"]["Value"][0]
    assert httpx.delete(f"{live.dicomweb}/studies/{uid}", timeout=30).status_code == 200
    assert counts(live, age(59, 61)) is None
    assert counts(live, age(64, 66)) == (1, 1)
