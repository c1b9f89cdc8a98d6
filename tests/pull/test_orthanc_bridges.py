"""Bridges from a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) into the gateway.

The README recipes, run as written: Orthanc forwarding over STOW-RS to
``/datasets/<id>/dicom-web/`` with HTTP Basic (its ``DicomWeb.Servers`` entry holding a
client id and secret), Orthanc pushing with C-STORE (the gateway in its
``DicomModalities``), and the gateway's C-MOVE with Orthanc as the destination. The
gateway runs with authorisation on; every check reads back over the gateway's own API.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import orjson
import pydicom
import pytest

from server.synthetic import generate_cohort, to_part10_bytes
from tests.dimse.conftest import start_dimse_gateway, wait_for_audit
from tests.live import LiveServer, free_port
from tests.pull.conftest import GATEWAY_AE, ORTHANC_AE, PASSWORD, USER, Orthanc, dataset_bytes
from tests.security.conftest import Registered, add_client, cli_ok

AUTH = (USER, PASSWORD)


@dataclass
class BridgedOrthanc(Orthanc):
    """Orthanc configured as the README recipe says: the gateway as DICOMweb server and modality."""

    servers: dict[str, dict[str, str]] = field(default_factory=dict)
    gateway_dimse_port: int = 0

    def config(self) -> dict[str, object]:
        config = super().config()
        config["DicomModalities"] = {"gateway": [GATEWAY_AE, "127.0.0.1", self.gateway_dimse_port]}
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "Servers": self.servers}
        return config

    def upload_study(self, instances: list[pydicom.Dataset]) -> tuple[str, dict[str, bytes]]:
        """Orthanc's id of the study, and SOP Instance UID -> the bytes sent."""
        sent, study = {}, ""
        for ds in instances:
            data = to_part10_bytes(ds)
            answer = httpx.post(f"{self.url}/instances", content=data, auth=AUTH, timeout=60)
            answer.raise_for_status()
            study = answer.json()["ParentStudy"]
            sent[str(ds.SOPInstanceUID)] = data
        return study, sent

    def job(self, answer: httpx.Response) -> dict[str, Any]:
        """The final state of the job an asynchronous REST call started."""
        answer.raise_for_status()
        job_id = answer.json()["ID"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = httpx.get(f"{self.url}/jobs/{job_id}", auth=AUTH).json()
            if state["State"] in ("Success", "Failure"):
                return dict(state)
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish")

    def instances_of(self, study_uid: str) -> dict[str, bytes]:
        found = httpx.post(f"{self.url}/tools/find", auth=AUTH, json={
            "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}).json()  # fmt: skip
        out = {}
        for oid in found:
            data = httpx.get(f"{self.url}/instances/{oid}/file", auth=AUTH).content
            out[str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
        return out


@dataclass
class Bridge:
    orthanc: BridgedOrthanc
    live: LiveServer
    dimse_port: int
    raw: Registered  # --http-basic --store raw
    deid: Registered  # --http-basic --store deid


def _study(seed: int) -> list[pydicom.Dataset]:
    return list(generate_cohort(patients=1, series_per_study=2, instances_per_series=2,
                                rows=16, columns=16, seed=seed))  # fmt: skip


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    root = tmp_path_factory.mktemp("bridges")
    gw = start_dimse_gateway(root / "data")
    live = gw.live
    live.port = free_port()
    for name, profile in (("raw", "none"), ("deid", "basic")):
        cli_ok(live, "dataset", "create", name, "--title", name, "--cancer-type", "lung",
               "--deidentify", profile)  # fmt: skip
    raw = add_client(live, "orthanc-raw", "--http-basic", "--store", "raw")
    deid = add_client(live, "orthanc-deid", "--http-basic", "--store", "deid")
    orthanc = BridgedOrthanc(root / "orthanc", gateway_dimse_port=gw.port)
    # the C-STORE pusher and the C-MOVE destination: Orthanc's AE title, host and port
    add_client(live, "orthanc-dimse", "--ae-title", ORTHANC_AE, "--host", "127.0.0.1",
               "--port", str(orthanc.dicom_port), "--store", "raw")  # fmt: skip
    base = f"{live.url}/datasets/%s/dicom-web/"
    orthanc.servers = {
        "gateway-raw": {"Url": base % "raw", "Username": raw.client_id, "Password": str(raw.secret)},
        "gateway-deid": {"Url": base % "deid", "Username": deid.client_id, "Password": str(deid.secret)},
        "gateway-wrong": {"Url": base % "raw", "Username": raw.client_id, "Password": "wrong-secret-0123"},
    }  # fmt: skip
    live.start()
    orthanc.start()
    try:
        yield Bridge(orthanc, live, gw.port, raw, deid)
    finally:
        orthanc.stop()
        live.stop()


def _served(bridge: Bridge, client: Registered) -> dict[str, bytes]:
    """SOP UID -> the Part-10 bytes the gateway serves, read as the storing client (data-holder view)."""
    auth = (client.client_id, str(client.secret))
    root = f"{bridge.live.url}/dicom-web"  # QIDO/WADO: the caller's datasets (here: its own)
    matches = httpx.get(f"{root}/instances", auth=auth, timeout=60)
    assert matches.status_code in (200, 204), matches.text
    out = {}
    for match in matches.json() if matches.status_code == 200 else []:
        study, series, sop = (match[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018"))
        answer = httpx.get(f"{root}/studies/{study}/series/{series}/instances/{sop}", auth=auth,
                           headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})  # fmt: skip
        assert answer.status_code == 200, answer.text
        boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
        part = answer.content.split(f"--{boundary}".encode())[1]
        out[sop] = part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
    return out


def _stow(bridge: Bridge, server: str, study: str) -> dict[str, Any]:
    return bridge.orthanc.job(httpx.post(
        f"{bridge.orthanc.url}/dicom-web/servers/{server}/stow", auth=AUTH, timeout=60,
        json={"Resources": [study], "Synchronous": False}))  # fmt: skip


def test_orthanc_stow_with_http_basic_arrives_byte_identical_in_a_none_dataset(bridge: Bridge) -> None:  # fmt: skip
    study, sent = bridge.orthanc.upload_study(_study(901))
    before = _served(bridge, bridge.raw)
    assert _stow(bridge, "gateway-raw", study)["State"] == "Success"
    after = _served(bridge, bridge.raw)
    assert {sop: after[sop] for sop in set(after) - set(before)} == sent


def test_orthanc_stow_into_a_basic_dataset_is_deidentified(bridge: Bridge) -> None:
    instances = _study(902)
    study, _ = bridge.orthanc.upload_study(instances)
    assert _stow(bridge, "gateway-deid", study)["State"] == "Success"
    stored = [pydicom.dcmread(BytesIO(b)) for b in _served(bridge, bridge.deid).values()]
    assert len(stored) == len(instances)
    originals = {str(ds.SOPInstanceUID) for ds in instances}
    assert not originals & {str(ds.SOPInstanceUID) for ds in stored}  # UIDs replaced
    assert all(ds.PatientID != instances[0].PatientID for ds in stored)
    assert all(ds.get("PatientName", "") != instances[0].PatientName for ds in stored)
    assert all(ds.PatientIdentityRemoved == "YES" for ds in stored)


def test_orthanc_stow_with_a_wrong_secret_fails_the_job_and_stores_nothing(bridge: Bridge) -> None:
    study, sent = bridge.orthanc.upload_study(_study(903))
    before = _served(bridge, bridge.raw)
    assert _stow(bridge, "gateway-wrong", study)["State"] == "Failure"
    assert set(_served(bridge, bridge.raw)) == set(before)
    assert not set(sent) & set(before)
    # the failed Basic check is audited with the client id tried
    wait_for_audit(bridge.live, lambda e: e.get("outcome") == "4"
                   and bridge.raw.client_id in orjson.dumps(e).decode())  # fmt: skip


def test_orthanc_pushes_with_c_store_into_the_ae_clients_dataset(bridge: Bridge) -> None:
    study, sent = bridge.orthanc.upload_study(_study(904))
    before = _served(bridge, bridge.raw)
    answer = httpx.post(f"{bridge.orthanc.url}/modalities/gateway/store", auth=AUTH, timeout=120,
                        json={"Resources": [study], "Synchronous": True})  # fmt: skip
    assert answer.status_code == 200, answer.text
    arrived = {s: b for s, b in _served(bridge, bridge.raw).items() if s not in before}
    assert set(arrived) == set(sent)
    assert all(dataset_bytes(arrived[s]) == dataset_bytes(sent[s]) for s in sent)


def test_gateway_c_move_sends_a_study_to_orthanc(bridge: Bridge, tmp_path: Path) -> None:
    instances = _study(905)
    folder = tmp_path / "import"
    folder.mkdir()
    for n, ds in enumerate(instances):
        (folder / f"{n}.dcm").write_bytes(to_part10_bytes(ds))
    cli_ok(bridge.live, "import", "--quiet", "--dataset", "raw", str(folder))
    reader = add_client(bridge.live, "mover", "--ae-title", "MOVER")
    cli_ok(bridge.live, "daa", "create", "daa-mover", "--dataset", "raw",
           "--condition", "download", "--client", reader.client_id)  # fmt: skip
    uid = str(instances[0].StudyInstanceUID)
    assert bridge.orthanc.instances_of(uid) == {}
    done = subprocess.run(
        ["movescu", "-v", "-aet", "MOVER", "-aec", GATEWAY_AE, "-aem", ORTHANC_AE, "-S",
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
         "127.0.0.1", str(bridge.dimse_port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    received = bridge.orthanc.instances_of(uid)
    sent = {str(ds.SOPInstanceUID): to_part10_bytes(ds) for ds in instances}
    assert set(received) == set(sent), done.stderr
    assert all(dataset_bytes(received[s]) == dataset_bytes(sent[s]) for s in sent)
