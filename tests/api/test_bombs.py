"""Decompression bombs cost a refused part or a 413, never a worker: the peak RSS stays bounded.

The server's peak resident memory (VmHWM in /proc) is read before and after; each
bomb decoded in full would add hundreds of MiB to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.core import bombs
from tests.helpers import stow
from tests.live import LiveServer

MiB = 1 << 20
GROWTH = 150 * MiB  # what the whole test may add to the server's peak RSS


def peak_rss(live: LiveServer) -> int:
    assert live.process is not None
    for line in Path(f"/proc/{live.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


BOMBS: dict[str, Callable[[], bytes]] = {
    "deflated to 512 MiB": lambda: bombs.deflated(512 * MiB),
    "RLE 8192x8192 16-bit": lambda: bombs.rle(8192, 8192),
    "JPEG declaring 60000x60000": lambda: bombs.jpeg_declaring(60000, 60000),
    "J2K declaring 100000x100000": lambda: bombs.j2k_declaring(100000, 100000),
}


def test_bombs_are_refused_at_ingest(fresh_server: LiveServer) -> None:
    """Default limits: each bomb fails its own part with 0xC000 and a message naming the cap."""
    parts = [make() for make in BOMBS.values()]
    before = peak_rss(fresh_server)
    answer = stow(fresh_server, parts)
    assert answer.status_code == 409, answer.text
    failed = answer.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000]] * len(BOMBS)
    messages = [f["00001902"]["Value"][0] for f in failed]
    assert "GATEWAY_STOW__MAX_INFLATED_BYTES" in messages[0]
    assert all("GATEWAY_PIXELS__MAX_FRAME_BYTES" in m for m in messages[1:]), messages
    assert peak_rss(fresh_server) - before < GROWTH
    assert httpx.get(f"{fresh_server.url}/healthz").status_code == 200


def _routes(ds: pydicom.Dataset) -> dict[str, tuple[str, str]]:
    instance = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    return {
        "rendered": (f"{instance}/rendered", "image/jpeg"),
        "rendered frame": (f"{instance}/frames/1/rendered", "image/png"),
        "thumbnail": (f"{instance}/thumbnail", "image/jpeg"),
        "series thumbnail": (f"/studies/{ds.StudyInstanceUID}/thumbnail", "image/jpeg"),
        "decoded frame": (
            f"{instance}/frames/1",
            "multipart/related; type=application/octet-stream",
        ),
    }


@pytest.mark.parametrize("name", ["deflated", "RLE", "JPEG", "J2K"])
def test_bombs_stored_earlier_answer_413_in_bounded_memory(tmp_path: Path, name: str) -> None:
    """Bombs stored under looser limits (or by an older version) are refused when decoded."""
    make = {
        "deflated": lambda: bombs.deflated(64 * MiB),
        "RLE": lambda: bombs.rle(4096, 4096),
        "JPEG": lambda: bombs.jpeg_declaring(30000, 30000),
        "J2K": lambda: bombs.j2k_declaring(30000, 30000),
    }[name]
    data = make()
    loose = {
        "GATEWAY_PIXELS__MAX_FRAME_BYTES": str(1 << 40),
        "GATEWAY_STOW__MAX_INFLATED_BYTES": str(1 << 40),
    }
    live = LiveServer(tmp_path / "data", extra_env=loose).start()
    try:
        assert stow(live, [data]).status_code == 200
    finally:
        live.stop()
    strict = {
        "GATEWAY_PIXELS__MAX_FRAME_BYTES": str(8 * MiB),
        "GATEWAY_STOW__MAX_INFLATED_BYTES": str(16 * MiB),
    }
    live = LiveServer(tmp_path / "data", extra_env=strict).start()
    try:
        ds = pydicom.dcmread(__import__("io").BytesIO(data), stop_before_pixels=True)
        before = peak_rss(live)
        for route, (path, accept) in _routes(ds).items():
            answer = httpx.get(live.dicomweb + path, headers={"Accept": accept}, timeout=60)
            assert answer.status_code == 413, (route, answer.status_code, answer.text[:300])
            assert "GATEWAY_" in answer.json()["message"], route
        whole = httpx.get(live.dicomweb + _routes(ds)["rendered"][0].rsplit("/", 1)[0], timeout=60)
        assert whole.status_code == 200  # the stored bytes are still served, as stored
        assert peak_rss(live) - before < GROWTH, name
    finally:
        live.stop()
