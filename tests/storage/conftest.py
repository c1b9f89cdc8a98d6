"""Live gateways with two datasets, and ways to read back exactly what is stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.helpers import multipart_body, part10
from tests.live import LiveServer

A, B = "store-a", "store-b"
RAW = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def with_datasets(live: LiveServer) -> LiveServer:
    for dataset in (A, B):
        done = live.cli("dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung")
        assert done.returncode == 0, done.stderr
    return live


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = with_datasets(LiveServer(tmp_path_factory.mktemp("storage") / "data")).start()
    yield live
    live.stop()


def stow_into(live: LiveServer, dataset: str, parts: list[bytes]) -> httpx.Response:
    boundary = uuid.uuid4().hex
    return httpx.post(
        f"{live.url}/datasets/{dataset}/dicom-web/studies",
        content=multipart_body(parts, boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        timeout=120,
    )


def instance_url(live: LiveServer, ds: pydicom.Dataset) -> str:
    return (
        f"{live.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def raw(live: LiveServer, ds: pydicom.Dataset) -> bytes | None:
    """The stored bytes of one instance (None if it is not served)."""
    r = httpx.get(instance_url(live, ds), headers={"Accept": RAW}, timeout=60)
    if r.status_code != 200:
        return None
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = r.content.split(f"--{boundary}".encode())
    if len(parts) < 3:
        return None  # an empty multipart: the index row has no blob
    return parts[1].split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]


def intact(live: LiveServer, ds: pydicom.Dataset) -> None:
    """Served byte-for-byte, and rendered (the pixel path reads the blob too)."""
    assert raw(live, ds) == part10(ds)
    rendered = httpx.get(instance_url(live, ds) + "/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200, rendered.text[:300]


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


def check_clean(live: LiveServer) -> None:
    done = live.cli("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent" in done.stdout and "plan:" not in done.stdout, done.stdout
