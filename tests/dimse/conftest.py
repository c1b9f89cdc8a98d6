"""A live gateway with its DIMSE port open, registered AEs, and the dcmtk tools around it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from server.security.audit import tail
from server.synthetic import to_part10_bytes
from tests.live import LiveServer, free_port
from tests.security.conftest import Registered, add_client, cli_ok, token

GATEWAY_AE = "GATEWAY"
TOOLS = ("echoscu", "storescu", "storescp", "findscu", "movescu", "getscu")


def _dcmtk() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"dcmtk tools missing ({', '.join(missing)}): run tests/dimse/setup.sh")


@dataclass
class DimseGateway:
    live: LiveServer
    port: int

    def run(
        self, tool: str, *options: str, calling: str, files: tuple[str, ...] = (),
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """A dcmtk tool against the gateway, calling as ``calling``."""
        cmd = [tool, "-aet", calling, "-aec", GATEWAY_AE, *options, "127.0.0.1", str(self.port)]
        return subprocess.run([*cmd, *files], capture_output=True, text=True, timeout=timeout)


def start_dimse_gateway(data_dir: Path, **extra: str) -> DimseGateway:
    _dcmtk()
    port = free_port()
    live = LiveServer(
        data_dir,
        extra_env={
            "GATEWAY_AUTH__ENABLED": "true",
            "GATEWAY_AUTH__PUBLIC_READ": "false",
            "GATEWAY_AUTH__AGREEMENT_CACHE_SECONDS": "0.2",
            "GATEWAY_DIMSE__PORT": str(port),
            "GATEWAY_DIMSE__AE_TITLE": GATEWAY_AE,
            "GATEWAY_LOG_LEVEL": "info",
            **extra,
        },
    )
    return DimseGateway(live, port)


@contextmanager
def site_gateway(data_dir: Path, **extra: str) -> Iterator[tuple[DimseGateway, str]]:
    """A started DIMSE gateway with dataset "site", the AE MODALITY storing into it, and
    an administrator's token; stopped afterwards."""
    gw = start_dimse_gateway(data_dir, **extra)
    cli_ok(gw.live, "dataset", "create", "site", "--title", "site", "--cancer-type", "lung")
    add_client(gw.live, "modality", "--ae-title", "MODALITY", "--store", "site")
    admin = add_client(gw.live, "admin", "--admin")
    gw.live.start()
    try:
        yield gw, token(gw.live, admin)
    finally:
        gw.live.stop()


@dataclass
class Peers:
    """The AEs registered on the shared gateway of this module."""

    gateway: DimseGateway
    modality: Registered  # stores into dataset "pacs-a"; agreement (download) on "pacs-a"
    other: Registered  # stores into "pacs-b"; no agreement on "pacs-a"
    reader: Registered  # no store right; download on "pacs-a"
    insitu: Registered  # in-situ-processing on "pacs-a"
    dest_port: int  # the storescp the tests start, registered as C-MOVE destination DEST


@pytest.fixture(scope="session")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    gw = start_dimse_gateway(tmp_path_factory.mktemp("dimse") / "data")
    live = gw.live
    for dataset in ("pacs-a", "pacs-b"):
        cli_ok(live, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung")
    modality = add_client(live, "modality", "--ae-title", "MODALITY", "--store", "pacs-a")
    other = add_client(live, "other-site", "--ae-title", "OTHERSITE", "--store", "pacs-b")
    reader = add_client(live, "workstation", "--ae-title", "READER")
    insitu = add_client(live, "insitu", "--ae-title", "INSITU")
    dest_port = free_port()
    add_client(live, "destination", "--ae-title", "DEST", "--host", "127.0.0.1",
               "--port", str(dest_port))  # fmt: skip
    for n, (client, condition) in enumerate(
        [(modality, "download"), (reader, "download"), (insitu, "in-situ-processing")]
    ):
        cli_ok(live, "daa", "create", f"daa-{n}", "--dataset", "pacs-a",
               "--condition", condition, "--client", client.client_id)  # fmt: skip
    live.start()
    try:
        yield Peers(gw, modality, other, reader, insitu, dest_port)
    finally:
        live.stop()


# ---------------------------------------------------------------------- files and answers


def with_new_uids(source: Path | str, target: Path, study: str, series: str) -> pydicom.Dataset:
    """A copy of a (pydicom test) file with UIDs of its own, in its original transfer syntax."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = ds.get("PatientID") or "DIMSE-TEST"
    if 0xFFFCFFFC in ds:  # dcmtk drops Data Set Trailing Padding when it sends
        del ds[0xFFFCFFFC]
    _explicit_lengths(ds)  # and sends sequences with explicit lengths: so does the file
    if ds.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in ds:
        ds["PixelData"].VR = "OB"  # PS3.5 A.4: encapsulated Pixel Data is OB (dcmtk sends OB)
    ds.save_as(target, enforce_file_format=True)
    return ds


def _explicit_lengths(ds: pydicom.Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = False
            for item in elem.value:
                item.is_undefined_length_sequence_item = False
                _explicit_lengths(item)


def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part-10 file without preamble and File Meta (what DIMSE carries)."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]


def audit_events(live: LiveServer, limit: int = 500) -> list[dict[str, Any]]:
    return [event for _, event in tail(live.data_dir / "audit.sqlite", limit)]


def wait_for_audit(
    live: LiveServer, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    """The newest audit event matching ``predicate`` (the log writes in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in audit_events(live) if predicate(e)]
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError("no matching audit event")


def dimse_event(
    method: str, ae: str, outcome: str | None = None
) -> Callable[[dict[str, Any]], bool]:
    """Audit events of ``method`` called by ``ae`` (with that outcome: "0", "4", "8")."""

    def matches(event: dict[str, Any]) -> bool:
        described = [e.get("description", "") for e in event.get("entity", [])]
        return (
            any(d.startswith(f"{method} /dimse/") for d in described)
            and f"calling AE {ae!r}" in event.get("outcomeDesc", "")
            and (outcome is None or event.get("outcome") == outcome)
        )

    return matches


def read_responses(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*")) if p.is_file()]


class StoreScp:
    """dcmtk's storescp as a C-MOVE destination: writes what it receives, bit-preserving."""

    def __init__(self, port: int, folder: Path, ae_title: str = "DEST") -> None:
        self.port, self.folder = port, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", ae_title, "+xa", "+B", "-od", str(folder), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("storescp did not start")

    def received(self) -> list[pydicom.Dataset]:
        return read_responses(self.folder)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def destination(peers: Peers, tmp_path: Path) -> Iterator[StoreScp]:
    scp = StoreScp(peers.dest_port, tmp_path / "received")
    yield scp
    scp.stop()


def write_files(instances: list[pydicom.Dataset], folder: Path) -> tuple[str, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(instances):
        path = folder / f"{n:04d}.dcm"
        path.write_bytes(to_part10_bytes(ds))
        paths.append(str(path))
    return tuple(paths)
