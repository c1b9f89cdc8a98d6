"""A 2 GiB STOW body into a de-identifying dataset streams: server memory stays bounded.

Like tests/api/test_stow_streaming.py, but 8x the size and into a ``basic`` dataset, so
every part is spooled, de-identified (header rewritten, pixel data copied through) and
stored while the rest of the body is still arriving. The bound: the server process's
peak resident memory (VmHWM) grows by less than 64 MiB over the whole request, i.e.
less than 1/32 of the body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.helpers import cohort, part10
from tests.live import LiveServer

MB = 1024 * 1024
BOUND = 64 * MB

pytestmark = pytest.mark.timeout(1800)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_2_gib_request_into_a_basic_dataset_streams(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data")
    done = live.cli("dataset", "create", "big", "--title", "Big", "--deidentify", "basic")
    assert done.returncode == 0, done.stderr[-2000:]
    live.start()
    try:
        assert live.process is not None
        template = cohort(instances_per_series=1, rows=2048, columns=2048)[0]  # 8 MiB each
        template.BurnedInAnnotation = "NO"
        template.PatientName = "Streamqa^Patient"
        count = 256  # 256 x 8 MiB = 2 GiB
        httpx.get(f"{live.dicomweb}/studies")  # warm up imports and threads
        before = _peak_rss(live.process.pid)

        def body() -> Iterator[bytes]:
            for n in range(count):
                template.SOPInstanceUID = generate_uid()
                template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
                template.InstanceNumber = n + 1
                yield (
                    b"--big\r\nContent-Type: application/dicom\r\n\r\n" + part10(template) + b"\r\n"
                )
            yield b"--big--\r\n"

        r = httpx.post(
            f"{live.url}/datasets/big/dicom-web/studies",
            content=body(),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=big'},
            timeout=1500,
        )
        assert r.status_code == 200, r.text[:500]
        assert len(r.json()["00081199"]["Value"]) == count
        growth = _peak_rss(live.process.pid) - before
        stored = httpx.get(f"{live.dicomweb}/instances", params={"limit": "1000"}).json()
        assert len(stored) == count
        assert all("Streamqa" not in str(i.get("00100010", "")) for i in stored)  # de-identified
        assert growth < BOUND, f"peak RSS grew by {growth / MB:.1f} MiB for a 2 GiB body"
        print(f"2 GiB STOW into a basic dataset: peak RSS grew by {growth / MB:.1f} MiB")
    finally:
        live.stop()
