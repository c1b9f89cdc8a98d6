"""Bulk export jobs outlive the process: a job cut off by a crash is re-run after the
restart (each resource once), and finished exports expire with their files."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx

from tests.fhir.conftest import running
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

ASYNC = {"Prefer": "respond-async"}


def _poll(url: str, seconds: float = 60) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = httpx.get(url, timeout=30)
        if answer.status_code != 202:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{url} still running after {seconds}s")


def _store(live: LiveServer, studies: int) -> set[str]:
    uids = set()
    for _ in range(studies):
        instances = cohort(instances_per_series=1)
        assert stow(live, [part10(ds) for ds in instances]).status_code == 200
        uids.add(str(instances[0].StudyInstanceUID))
    return uids


def test_an_export_cut_off_by_a_crash_is_rerun_after_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "GATEWAY_BULK__PAGE_SIZE": "1",
        "GATEWAY_BULK__LEASE_SECONDS": "2",
        "GATEWAY_BULK__PROCESS": "true",
    }
    live = LiveServer(data, extra_env={**env, "GATEWAY_FAILPOINT": "bulk_after_first_page"})
    live.start()
    try:
        uids = _store(live, 4)
        kicked = httpx.get(f"{live.url}/fhir/$export", params={"_type": "ImagingStudy"},
                           headers=ASYNC, timeout=30)  # fmt: skip
        assert kicked.status_code == 202, kicked.text
        location = kicked.headers["content-location"]
        assert live.process is not None
        live.process.wait(60)  # the worker wrote one page, then the server died
        assert live.process.returncode in (137, -signal.SIGKILL)
    finally:
        live.stop()
    restarted = LiveServer(data, extra_env=env, port=live.port).start()
    try:
        done = _poll(location)
        assert done.status_code == 200, done.text
        manifest = done.json()
        lines = []
        for item in manifest["output"]:
            lines += httpx.get(item["url"], timeout=30).text.splitlines()
        exported = [json.loads(line)["id"] for line in lines]
        assert sorted(exported) == sorted(uids)  # all of them, none twice
    finally:
        restarted.stop()


def test_finished_exports_expire_with_their_files(tmp_path: Path) -> None:
    with running(tmp_path / "data", GATEWAY_BULK__EXPIRY_SECONDS="10") as live:
        _store(live, 1)
        kicked = httpx.get(f"{live.url}/fhir/$export", headers=ASYNC, timeout=30)
        done = _poll(kicked.headers["content-location"])
        url = done.json()["output"][0]["url"]
        folder = live.data_dir / "bulk" / kicked.headers["content-location"].rsplit("/", 1)[-1]
        assert httpx.get(url).status_code == 200 and folder.is_dir()
        time.sleep(11)
        assert httpx.get(kicked.headers["content-location"]).status_code == 404
        assert httpx.get(url).status_code == 404
    with running(tmp_path / "data") as live:  # cleaned at the latest when a server starts
        time.sleep(0.5)
        assert not folder.exists()
