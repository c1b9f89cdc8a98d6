"""Every file under the data dir is 0600 and every folder 0700, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx

from tests.helpers import cohort, part10
from tests.live import LiveServer
from tests.storage.conftest import A, stow_into, with_datasets


def test_data_dir_is_private_after_stow_fhir_writes_and_audit(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a permissive umask, inherited by the server process
    try:
        live = with_datasets(LiveServer(tmp_path / "data")).start()
    finally:
        os.umask(old)
    try:
        assert stow_into(live, A, [part10(ds) for ds in cohort()]).status_code == 200
        patient = {"resourceType": "Patient", "id": "mode-check", "active": True}
        put = httpx.put(f"{live.url}/fhir/Patient/mode-check", json=patient)
        assert put.status_code in (200, 201, 405), put.text  # an audited write attempt
        assert httpx.get(f"{live.dicomweb}/studies").status_code == 200
        wrong: list[str] = []
        seen = 0
        for root, dirs, files in os.walk(live.data_dir):
            for name in dirs:
                mode = stat.S_IMODE(os.lstat(os.path.join(root, name)).st_mode)
                wrong += [f"{root}/{name}/ {mode:o}"] if mode != 0o700 else []
            for name in files:
                mode = stat.S_IMODE(os.lstat(os.path.join(root, name)).st_mode)
                wrong += [f"{root}/{name} {mode:o}"] if mode != 0o600 else []
                seen += 1
        assert stat.S_IMODE(live.data_dir.stat().st_mode) == 0o700
        names = {p.name for p in live.data_dir.rglob("*")}
        assert {"index.sqlite", "audit.sqlite", "fhir.sqlite"} <= names, names
        assert seen > 10 and not wrong, wrong
    finally:
        live.stop()
