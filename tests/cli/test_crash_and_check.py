"""Crash safety: an interrupted ingest is, after restart + check --repair, fully there or absent."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import cohort, multipart_body, part10, store_state, stow
from tests.live import LiveServer


def _blobs(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


def _raw(server: LiveServer, ds) -> bytes:  # type: ignore[no-untyped-def]
    url = f"{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    r = httpx.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert r.status_code == 200, r.text
    boundary = r.headers["content-type"].split("boundary=")[1]
    return r.content.split(f"--{boundary}".encode())[1].split(b"\r\n\r\n", 1)[1][:-2]


@pytest.mark.parametrize("failpoint", ["after_blob_write", "after_index_commit"])
def test_process_dying_mid_write_is_recovered_at_start_without_a_manual_step(
    live_server_factory: type[LiveServer], tmp_path: Path, failpoint: str
) -> None:
    data_dir = tmp_path / "crash"
    doomed = live_server_factory(data_dir, extra_env={"GATEWAY_FAILPOINT": failpoint}).start()
    datasets = cohort(instances_per_series=3)
    payload = [part10(ds) for ds in datasets]
    with pytest.raises(httpx.HTTPError):
        stow(doomed, payload)
    assert doomed.process is not None
    assert doomed.process.wait(10) == 137  # died at the failpoint, no cleanup ran
    assert len(_blobs(data_dir)) == 3  # blobs durable, the writer never finished

    survivor = live_server_factory(data_dir)
    pending = survivor.cli("check")  # read-only: the interrupted writes await recovery
    assert "awaiting start-up recovery: 3" in pending.stdout, pending.stdout
    survivor.start()  # recovery runs at start-up
    for ds, data in zip(datasets, payload, strict=True):
        assert _raw(survivor, ds) == data
    assert store_state(survivor)["counts"]["instance"] == 3
    assert len(_blobs(data_dir)) == 3
    clean = survivor.cli("check")
    assert clean.returncode == 0, clean.stdout
    assert "awaiting start-up recovery: 0" in clean.stdout and "consistent" in clean.stdout


def test_process_killed_mid_upload_leaves_nothing(
    live_server_factory: type[LiveServer], tmp_path: Path
) -> None:
    data_dir = tmp_path / "midupload"
    live = live_server_factory(data_dir).start()
    body = multipart_body(
        [part10(ds) for ds in cohort(instances_per_series=4, rows=64, columns=64)], "bnd"
    )
    with socket.create_connection(("127.0.0.1", live.port)) as sock:
        head = (
            f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f'Content-Type: multipart/related; type="application/dicom"; boundary=bnd\r\n'
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)
        assert live.process is not None
        live.process.send_signal(signal.SIGKILL)
        live.process.wait(10)
    spools = list((data_dir / "journal").glob("*/spool/*"))
    assert spools, "the half upload should have been spooling"
    live.process = None
    live.start()  # `serve` clears every spool before its workers start
    assert _blobs(data_dir) == []
    assert not any(p.exists() for p in spools)
    assert store_state(live)["counts"] == {"study": 0, "series": 0, "instance": 0}
    assert live.cli("check").returncode == 0


def test_failpoints_are_refused_in_production(tmp_path: Path) -> None:
    live = LiveServer(
        tmp_path / "prod",
        extra_env={"GATEWAY_ENVIRONMENT": "production", "GATEWAY_FAILPOINT": "after_blob_write"},
    )
    result = live.cli("check")
    assert result.returncode != 0
    assert "FAILPOINT" in result.stderr or "failpoint" in result.stderr.lower()
