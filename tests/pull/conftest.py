"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as the archive ``pull`` reads from.

Orthanc runs on free ports with a temporary configuration: DICOMweb plugin on, HTTP
Basic on (the pull sends its credentials from an environment variable), a DICOM port,
and the gateway registered as a modality (``GATEWAY``) on the port ``pull --move``
listens on. Studies are loaded through Orthanc's REST API (POST /instances), and the
bytes sent are kept to compare with what the gateway stores. A missing Orthanc fails
the tests (run tests/pull/setup.sh); it never skips them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from server.synthetic import generate_cohort, to_part10_bytes
from tests.live import LiveServer, free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AE, GATEWAY_AE = "ORTHANC", "GATEWAY"
USER, PASSWORD = "puller", "orthanc-pull-secret-4711"
CREDENTIALS_ENV = "PULL_TEST_ORTHANC_BASIC"
# Three studies: two of patient PULL-P1 (2020, 2021), one of PULL-P2 (2023).
STUDIES = (("PULL-P1", "20200105"), ("PULL-P1", "20210610"), ("PULL-P2", "20230301"))
# Real files of pydicom in other transfer syntaxes, added to the 2023 study.
EXTRA_FILES = ("CT_small.dcm", "MR_small_jp2klossless.dcm", "JPEGLSNearLossless_08.dcm")


def require(path: Path) -> None:
    if not path.exists():
        pytest.fail(
            f"{path} is missing: run tests/pull/setup.sh (Debian orthanc, orthanc-dicomweb)"
        )


@dataclass
class Orthanc:
    folder: Path
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    move_port: int = field(default_factory=free_port)  # where GATEWAY receives C-MOVEs
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dicom://{ORTHANC_AE}@127.0.0.1:{self.dicom_port}"

    def config(self) -> dict[str, object]:
        return {
            "Name": "pull-test",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomModalities": {"gateway": [GATEWAY_AE, "127.0.0.1", self.move_port]},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "SaveJobs": False,
        }

    def start(self) -> Orthanc:
        require(ORTHANC)
        require(DICOMWEB_PLUGIN)
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen([str(ORTHANC), str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "orthanc.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/system", auth=(USER, PASSWORD), timeout=1).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)

    def upload(self, data: bytes) -> None:
        answer = httpx.post(f"{self.url}/instances", content=data, auth=(USER, PASSWORD),
                            headers={"Content-Type": "application/dicom"}, timeout=60)  # fmt: skip
        answer.raise_for_status()


@dataclass
class Archive:
    """Orthanc and what was loaded into it: SOP Instance UID -> the bytes sent."""

    orthanc: Orthanc
    sent: dict[str, bytes]
    studies: dict[str, tuple[str, str]]  # Study UID -> (Patient ID, StudyDate)

    def of_studies(self, *study_uids: str) -> dict[str, bytes]:
        return {sop: data for sop, data in self.sent.items() if _study(data) in study_uids}


def _study(data: bytes) -> str:
    return str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).StudyInstanceUID)


def _instances() -> Iterator[bytes]:
    cohort = list(generate_cohort(patients=3, series_per_study=2, instances_per_series=4,
                                  rows=32, columns=32, seed=411))  # fmt: skip
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for ds in cohort:
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    for (patient, day), instances in zip(STUDIES, by_study.values(), strict=True):
        for ds in instances:
            ds.PatientID, ds.StudyDate = patient, day
            yield to_part10_bytes(ds)
    last = instances[0]
    series = generate_uid()
    for name in EXTRA_FILES:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = last.StudyInstanceUID, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.StudyDate = last.PatientID, last.StudyDate
        ds.PatientName = "Pull^Test"
        _as_dcmtk_sends(ds)
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


def _as_dcmtk_sends(ds: pydicom.Dataset) -> None:
    """Orthanc sends over DIMSE with dcmtk, which drops Data Set Trailing Padding, writes
    sequences with explicit lengths and encapsulated Pixel Data as OB (PS3.5 A.4): the
    files are written that way already, so what DIMSE carries can be compared byte for byte."""
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]
    if ds.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in ds:
        ds["PixelData"].VR = "OB"
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = False
            for item in elem.value:
                item.is_undefined_length_sequence_item = False


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        sent: dict[str, bytes] = {}
        studies: dict[str, tuple[str, str]] = {}
        for data in _instances():
            ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
            sent[str(ds.SOPInstanceUID)] = data
            studies[str(ds.StudyInstanceUID)] = (str(ds.PatientID), str(ds.StudyDate))
            orthanc.upload(data)
        yield Archive(orthanc, sent, studies)
    finally:
        orthanc.stop()


# ------------------------------------------------------------------------ the gateway side


@dataclass
class Gateway:
    """A data dir with datasets ``raw`` (policy none) and ``deid`` (basic); pull runs on it."""

    live: LiveServer

    def pull(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server.cli.main", "pull", *args],
                              env={**self.live.env(), **(env or {})}, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    def start_pull(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "server.cli.main", "pull", *args],
                                env={**self.live.env(), **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    def stored(self) -> dict[str, bytes]:
        """SOP Instance UID -> bytes served over WADO-RS, for every instance stored (each
        test pulls into one dataset of its own data dir)."""
        self.live.start()
        try:
            client = DICOMwebClient(self.live.dicomweb)
            out: dict[str, bytes] = {}
            for match in client.search_for_instances():
                study, series, sop = (
                    match[t]["Value"][0] for t in ("0020000D", "0020000E", "00080018")
                )
                answer = httpx.get(
                    f"{self.live.dicomweb}/studies/{study}/series/{series}/instances/{sop}",
                    headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                boundary = (
                    answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
                )
                part = answer.content.split(f"--{boundary}".encode())[1]
                out[sop] = part.split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
            return out
        finally:
            self.live.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    live = LiveServer(tmp_path / "data", extra_env={"GATEWAY_DIMSE__AE_TITLE": GATEWAY_AE})
    for name, profile in (("raw", "none"), ("deid", "basic")):
        done = live.cli("dataset", "create", name, "--title", name, "--cancer-type", "lung",
                        "--deidentify", profile)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return Gateway(live)


def basic_env() -> dict[str, str]:
    return {CREDENTIALS_ENV: f"{USER}:{PASSWORD}"}


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def dataset_bytes(part10: bytes) -> bytes:
    """The data set after preamble and File Meta (what DIMSE carries; the meta is rewritten)."""
    ds = pydicom.dcmread(BytesIO(part10), stop_before_pixels=True)
    del ds
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]
