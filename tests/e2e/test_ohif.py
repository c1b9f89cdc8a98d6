"""The OHIF viewer lists and displays studies served by the DICOMweb server.

Runs the prebuilt viewer from ``@ohif/app`` on a loopback static server,
configured with the DICOMweb root under test, and drives it with headless
Chromium (``browser.mjs``). Screenshots and a request log are written to
``tests/e2e/.cache/<target>/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from e2e_harness import CACHE_DIR, BrowserTools, DicomwebTarget
from ohif_server import OhifServer
from PIL import Image

pytestmark = pytest.mark.e2e

PAGE_SIZE = 25  # rows on the first page of OHIF's study list
MIN_STD = 10.0  # grey-level standard deviation of a viewport showing an image
MIN_NON_DARK = 0.01


def _first(ds: dict, tag: str) -> object | None:
    values = ds.get(tag, {}).get("Value") or []
    return values[0] if values else None


def _person_name(ds: dict) -> str:
    value = _first(ds, "00100010")
    if isinstance(value, dict):
        return str(value.get("Alphabetic") or "")
    return str(value or "")


def _norm(text: str) -> str:
    """Loose text form shared with browser.mjs: "Doe^Jane" ~ "DOE, JANE"."""
    text = unicodedata.normalize("NFC", text).upper()
    return " " + " ".join(re.sub(r"[\W_]+", " ", text).split()) + " "


def query_studies(root: str) -> list[dict]:
    r = httpx.get(
        f"{root}/studies",
        params={"includefield": "00081030", "limit": "200"},
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    r.raise_for_status()
    return r.json() if r.content else []


def summarize_requests(requests: list[dict], root: str) -> list[str]:
    """Group DICOMweb requests by method, URL shape and Accept header."""

    def shape(url: str) -> str:
        parts = urlsplit(url)
        path = parts.path[len(urlsplit(root).path) :]
        path = re.sub(r"\d+(\.\d+){3,}", "{uid}", path)
        path = re.sub(r"/frames/[\d,]+", "/frames/{n}", path)
        keys = sorted({kv.split("=")[0] for kv in parts.query.split("&") if kv})
        return path + (("?" + "&".join(keys)) if keys else "")

    counts = Counter(
        (r["method"], shape(r["url"]), r.get("accept"), r.get("status")) for r in requests
    )
    return [
        f"{n:4d} x {m} {s}  Accept: {a}  -> {st}"
        for (m, s, a, st), n in sorted(counts.items(), key=lambda kv: -kv[1])
    ]


def choose_study(studies: list[dict]) -> tuple[dict, str]:
    """Pick a study to open and a text unique to its study-list row."""

    def modalities(ds: dict) -> list[str]:
        return [str(v) for v in ds.get("00080061", {}).get("Value") or []]

    ordered = sorted(studies, key=lambda ds: "CT" not in modalities(ds))
    for tag in ("00080050", "00081030"):
        counts = Counter(str(_first(ds, tag) or "") for ds in studies)
        for ds in ordered:
            value = str(_first(ds, tag) or "")
            if value and counts[value] == 1:
                return ds, value
    ds = ordered[0]
    return ds, _person_name(ds).replace("^", " ")


@pytest.fixture(scope="module")
def ohif_url(browser_tools: BrowserTools, dicomweb_root: str) -> Iterator[str]:
    with OhifServer(dicomweb_root, dist=browser_tools.ohif_dist) as server:
        yield server.url


def run_browser(tools: BrowserTools, spec: dict, timeout: float = 300) -> dict:
    proc = subprocess.run(
        [tools.node, str(tools.script), json.dumps(spec)],
        cwd=tools.script.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(proc.stderr[-4000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, (
        f"browser script printed no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    )
    return json.loads(lines[-1])


def image_stats(path: Path) -> tuple[float, float]:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return float(grey.std()), float((grey > 16).mean())


def test_ohif_lists_and_renders_studies(
    browser_tools: BrowserTools, dicomweb_target: DicomwebTarget, ohif_url: str
) -> None:
    root = dicomweb_target.root
    studies = query_studies(root)
    assert studies, f"{dicomweb_target.name} at {root} returned no studies to show"

    shown = studies[:PAGE_SIZE] if len(studies) <= PAGE_SIZE else []
    expected_names = sorted({_person_name(ds).replace("^", " ").strip() for ds in shown} - {""})
    expected_descriptions = sorted({str(_first(ds, "00081030") or "") for ds in shown} - {""})
    study, open_text = choose_study(studies)
    study_uid = str(_first(study, "0020000D"))

    out_dir = CACHE_DIR / dicomweb_target.name
    spec = {
        "viewerUrl": ohif_url,
        "dicomwebRoot": root,
        "studyInstanceUID": study_uid,
        "openText": open_text,
        "expectTexts": expected_names + expected_descriptions,
        "outDir": str(out_dir),
        "chromium": browser_tools.chromium,
        "timeoutMs": 90000,
    }
    result = run_browser(browser_tools, spec)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    summary = summarize_requests(result.get("requests", []), root)
    (out_dir / "requests-summary.txt").write_text("\n".join(summary) + "\n")
    if dicomweb_target.proxy_log:
        (out_dir / "proxy-log.json").write_text(json.dumps(dicomweb_target.proxy_log, indent=2))
    print("\n".join(summary))

    assert result.get("ok"), f"browser run failed: {result.get('error')}"
    assert result.get("crossOriginIsolated") is True, "viewer page is not cross-origin isolated"

    # (1) the study list shows the stored studies
    text = _norm(result["studyList"]["text"])
    if shown:
        missing = [t for t in expected_names + expected_descriptions if _norm(t) not in text]
        assert not missing, f"study list lacks {missing}; it shows: {result['studyList']['text']}"
        count = re.search(r"\bof (\d+)\b", result["studyList"]["text"])
        assert count and int(count.group(1)) == len(studies), (
            f"study list counts {count.group(0) if count else 'nothing'}, "
            f"the server holds {len(studies)} studies"
        )
    else:
        found = [ds for ds in studies if _norm(_person_name(ds)) in text]
        assert len(found) >= min(10, len(studies)), "study list shows too few of the studies"

    # (2) opening a study renders an image
    viewer = result["viewer"]
    assert viewer["opened"] == "clicked", "could not open the study from the study list"
    assert study_uid in viewer["url"], f"opened {viewer['url']}, expected study {study_uid}"
    std, non_dark = image_stats(Path(viewer["viewportScreenshot"]))
    assert std > MIN_STD and non_dark > MIN_NON_DARK, (
        f"viewport looks blank (std {std:.1f}, non-dark {non_dark:.3f}); "
        f"see {viewer['viewportScreenshot']}"
    )

    # no DICOMweb request may fail at the network level (e.g. CORS) or with 5xx
    # (requests the viewer cancels itself, e.g. prefetch on navigation, are ERR_ABORTED)
    failed = [
        r
        for r in result["failedRequests"]
        if r["url"].startswith(root) and "ERR_ABORTED" not in str(r.get("failure"))
    ]
    assert not failed, f"DICOMweb requests failed in the browser: {failed[:5]}"
    errors = [r for r in result["requests"] if (r.get("status") or 0) >= 500]
    assert not errors, f"DICOMweb server errors: {errors[:5]}"
