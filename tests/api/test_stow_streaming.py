"""STOW bodies are streamed to disk: server memory does not grow with request size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from tests.helpers import cohort, part10
from tests.live import LiveServer

MB = 1024 * 1024


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_256_mb_request_raises_peak_memory_by_less_than_48_mb(fresh_server: LiveServer) -> None:
    # one 2048 x 2048 x 16-bit image (8 MiB) sent 32 times under new UIDs = 256 MiB
    template = cohort(instances_per_series=1, rows=2048, columns=2048)[0]
    assert fresh_server.process is not None
    pid = fresh_server.process.pid
    httpx.get(f"{fresh_server.dicomweb}/studies")  # warm up imports and threads
    before = _peak_rss(pid)
    count = 32

    def body() -> Iterator[bytes]:
        for n in range(count):
            template.SOPInstanceUID = generate_uid()
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = n + 1
            yield b"--big\r\nContent-Type: application/dicom\r\n\r\n" + part10(template) + b"\r\n"
        yield b"--big--\r\n"

    r = httpx.post(
        f"{fresh_server.dicomweb}/studies",
        content=body(),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=big'},
        timeout=300,
    )
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["00081199"]["Value"]) == count
    growth = _peak_rss(pid) - before
    assert growth < 48 * MB, f"peak RSS grew by {growth / MB:.1f} MiB"
