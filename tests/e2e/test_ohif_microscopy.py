"""OHIF's microscopy mode shows a whole-slide study from the gateway, offline.

A slide pyramid written by wsidicom (tests/wsi.py) is stored by STOW-RS; the gateway's own
``/viewer`` (the prebuilt ``@ohif/app``, whose microscopy mode loads the bundled
``dicom-microscopy-viewer`` from the viewer's own files, no CDN) opens it at
``/viewer/microscopy`` in headless Chromium (``microscopy_browser.mjs``), which must draw
tiles: the slide's tiles have colours that change from tile to tile, so a drawn slide shows
many colours, and a blank or black viewport shows few. Every request the page makes goes to
the gateway; none goes to another host.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
from e2e_harness import CACHE_DIR, OHIF_DIST, BrowserTools

from tests.helpers import stow
from tests.live import LiveServer
from tests.wsi import write_slide

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slide_gateway(
    browser_tools: BrowserTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    root = tmp_path_factory.mktemp("microscopy")
    files = write_slide(root / "slide", 2048, 256)  # levels of 8x8, 4x4, 2x2 and 1 tiles
    gateway = LiveServer(root / "gw", extra_env={"GATEWAY_VIEWER__DIST": str(OHIF_DIST)})
    gateway.start()
    try:
        answer = stow(gateway, [f.read_bytes() for f in files])
        assert answer.status_code == 200, answer.text[:500]
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        yield gateway, study
    finally:
        gateway.stop()


def _browse(tools: BrowserTools, spec: dict[str, object]) -> dict:
    proc = subprocess.run(
        [tools.node, str(Path(__file__).with_name("microscopy_browser.mjs")), json.dumps(spec)],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=400,
    )
    print(proc.stderr[-4000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, (
        f"browser script printed no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    )
    return json.loads(lines[-1])


def test_ohif_microscopy_mode_draws_the_tiles_of_a_wsidicom_slide_from_the_gateway(
    browser_tools: BrowserTools, slide_gateway: tuple[LiveServer, str]
) -> None:
    gateway, study = slide_gateway
    out = CACHE_DIR / "microscopy"
    result = _browse(browser_tools, {
        "url": f"{gateway.url}/viewer/microscopy?StudyInstanceUIDs={study}",
        "dicomwebRoot": gateway.dicomweb,
        "outDir": str(out),
        "chromium": browser_tools.chromium,
        "timeoutMs": 120000,
    })  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=2))
    assert result.get("ok"), f"browser run failed: {result.get('error')}; {result.get('console')}"

    frames = [r for r in result["requests"] if "/frames/" in r["url"]]
    served = [r for r in frames if r.get("status") == 200]
    assert served, f"the viewer fetched no tile: {result['requests'][:20]}; {result['console']}"
    transcoded = [r for r in served if 'type="image/jpeg"' not in (r.get("contentType") or "")]
    assert not transcoded, f"JPEG tiles were not sent as stored: {transcoded[:3]}"
    errors = [r for r in result["requests"] if (r.get("status") or 0) >= 400]
    assert not errors, f"DICOMweb requests refused: {errors[:5]}"
    elsewhere = [r for r in result["failedRequests"] if urlsplit(r["url"]).netloc != urlsplit(gateway.url).netloc]  # fmt: skip
    assert not elsewhere, f"the page tried other hosts (not offline): {elsewhere[:5]}"

    stats = result["viewport"]
    assert stats["std"] > 8 and stats["nonDarkFraction"] > 0.05 and stats["colours"] > 8, (
        f"the slide viewport looks blank: {stats}; see {stats['screenshot']}"
    )
