"""Fixtures for the browser end-to-end tests.

Which DICOMweb server the viewer talks to is decided in one place,
``dicomweb_target``:

* ``E2E_DICOMWEB_TARGET=gateway`` - the imaging gateway with its demo cohort.
  A ``live_server`` fixture from the top-level ``tests/conftest.py`` is used
  when there is one; otherwise ``imaging-gateway serve --demo`` is started here.
* ``E2E_DICOMWEB_TARGET=orthanc`` - a throw-away Orthanc (Debian packages
  ``orthanc`` and ``orthanc-dicomweb``) seeded with synthetic CT studies; a
  reference implementation, useful to tell viewer problems from gateway ones.
* unset - the gateway.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from servers import (  # noqa: E402
    CorsShim,
    GatewayProcess,
    OrthancProcess,
    gateway_executable,
    stow_datasets,
)

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
NODE_MODULES = HERE / "node_modules"
OHIF_DIST = NODE_MODULES / "@ohif" / "app" / "dist"
CACHE_DIR = HERE / ".cache"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip locally, but fail in CI where a skipped e2e test would hide a gap."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is an error; run tests/e2e/setup.sh)")
    pytest.skip(f"{reason}; run tests/e2e/setup.sh to install the browser test tools")


@dataclass
class BrowserTools:
    node: str
    chromium: str
    script: Path
    ohif_dist: Path


@dataclass
class DicomwebTarget:
    name: str
    root: str
    # requests seen by a proxy in front of the server, when there is one
    proxy_log: list[dict] = field(default_factory=list)


@pytest.fixture(scope="session")
def browser_tools() -> BrowserTools:
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed")
    if not Path(CHROMIUM).is_file():
        skip_or_fail(f"chromium not found at {CHROMIUM}")
    if not (NODE_MODULES / "playwright-core" / "package.json").is_file():
        skip_or_fail("playwright-core is not installed in tests/e2e/node_modules")
    if not (OHIF_DIST / "index.html").is_file():
        skip_or_fail("the OHIF viewer build (@ohif/app/dist) is not installed")
    return BrowserTools(node=node, chromium=CHROMIUM, script=HERE / "browser.mjs", ohif_dist=OHIF_DIST)


def _root_from_live_server(server: object) -> str:
    for attr in ("dicomweb_root", "dicomweb_url"):
        value = getattr(server, attr, None)
        if isinstance(value, str):
            return value.rstrip("/")
    for attr in ("base_url", "url"):
        value = getattr(server, attr, None)
        if isinstance(value, str):
            return value.rstrip("/") + "/dicom-web"
    if isinstance(server, str):
        return server.rstrip("/") + ("" if server.rstrip("/").endswith("/dicom-web") else "/dicom-web")
    raise TypeError(f"cannot find the DICOMweb root of live_server {server!r}")


@pytest.fixture(scope="session")
def _gateway_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DicomwebTarget]:
    try:
        live = request.getfixturevalue("live_server")
    except pytest.FixtureLookupError:
        live = None
    if live is not None:
        yield DicomwebTarget("gateway", _root_from_live_server(live))
        return
    try:
        executable = gateway_executable()
    except FileNotFoundError:
        skip_or_fail("the imaging-gateway executable is not installed")
    work = tmp_path_factory.mktemp("gateway")
    CACHE_DIR.mkdir(exist_ok=True)
    gw = GatewayProcess(work / "data", CACHE_DIR / "gateway.log", executable)
    gw.start()
    try:
        yield DicomwebTarget("gateway", gw.dicomweb_root)
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def _orthanc_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomwebTarget]:
    if not OrthancProcess.available():
        skip_or_fail("Orthanc with its DICOMweb plugin is not installed")
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from sample_ct import iter_datasets

    orthanc = OrthancProcess(tmp_path_factory.mktemp("orthanc")).start()
    shim = None
    try:
        datasets = list(iter_datasets())
        datasets.append(dcmread(get_testdata_file("CT_small.dcm")))
        stow_datasets(orthanc.dicomweb_root, datasets)
        shim = CorsShim(f"http://127.0.0.1:{orthanc.http_port}").start()
        yield DicomwebTarget("orthanc", shim.base_url + "/dicom-web", shim.log)
    finally:
        if shim is not None:
            shim.stop()
        orthanc.stop()


@pytest.fixture(scope="session")
def dicomweb_target(request: pytest.FixtureRequest) -> DicomwebTarget:
    """The DICOMweb server under test (switch with E2E_DICOMWEB_TARGET)."""
    name = os.environ.get("E2E_DICOMWEB_TARGET", "gateway").strip().lower()
    if name not in ("gateway", "orthanc"):
        raise pytest.UsageError(f"E2E_DICOMWEB_TARGET must be gateway or orthanc, not {name!r}")
    return request.getfixturevalue(f"_{name}_target")


@pytest.fixture(scope="session")
def dicomweb_root(dicomweb_target: DicomwebTarget) -> str:
    return dicomweb_target.root
