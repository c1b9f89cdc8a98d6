"""Shared constants and small types of the browser end-to-end tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
NODE_MODULES = HERE / "node_modules"
# the viewer the gateway serves at /viewer (viewer/install.sh)
OHIF_DIST = HERE.parent.parent / "viewer" / "node_modules" / "@ohif" / "app" / "dist"
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
