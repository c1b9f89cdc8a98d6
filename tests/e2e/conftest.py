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
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from e2e_harness import (  # noqa: E402
    CACHE_DIR,
    CHROMIUM,
    NODE_MODULES,
    OHIF_DIST,
    BrowserTools,
    DicomwebTarget,
    skip_or_fail,
)
from e2e_servers import (  # noqa: E402
    CorsShim,
    GatewayProcess,
    OrthancProcess,
    gateway_executable,
    stow_datasets,
)


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
    return BrowserTools(
        node=node, chromium=CHROMIUM, script=HERE / "browser.mjs", ohif_dist=OHIF_DIST
    )


def _root_from_live_server(server: object) -> str:
    for attr in ("dicomweb_root", "dicomweb_url", "dicomweb"):
        value = getattr(server, attr, None)
        if isinstance(value, str):
            return value.rstrip("/")
    for attr in ("base_url", "url"):
        value = getattr(server, attr, None)
        if isinstance(value, str):
            return value.rstrip("/") + "/dicom-web"
    if isinstance(server, str):
        return server.rstrip("/") + (
            "" if server.rstrip("/").endswith("/dicom-web") else "/dicom-web"
        )
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
    work = tmp_path_factory.mktemp("gateway")
    try:
        from tests.live import LiveServer as _LiveServer
    except ImportError:
        _LiveServer = None  # type: ignore[assignment,misc]
    if _LiveServer is not None:
        # Authorisation on, as `make run` has it: the demo dataset is PUBLIC, so the
        # viewer works without a login, as a newcomer's first try does.
        gw = _LiveServer(
            work / "data",
            demo=True,
            extra_env={"GATEWAY_ENVIRONMENT": "production", "GATEWAY_AUTH__ENABLED": "true"},
        ).start(timeout=180)
        try:
            yield DicomwebTarget("gateway", gw.dicomweb)
        finally:
            gw.stop()
        return
    try:
        executable = gateway_executable()
    except FileNotFoundError:
        skip_or_fail("the imaging-gateway executable is not installed")
    CACHE_DIR.mkdir(exist_ok=True)
    proc = GatewayProcess(work / "data", CACHE_DIR / "gateway.log", executable).start()
    try:
        yield DicomwebTarget("gateway", proc.dicomweb_root)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def _orthanc_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomwebTarget]:
    if not OrthancProcess.available():
        skip_or_fail("Orthanc with its DICOMweb plugin is not installed")
    from e2e_sample_ct import iter_datasets
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    orthanc = OrthancProcess(tmp_path_factory.mktemp("orthanc")).start()
    shim = None
    try:
        datasets = list(iter_datasets())
        datasets.append(dcmread(str(get_testdata_file("CT_small.dcm"))))
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
