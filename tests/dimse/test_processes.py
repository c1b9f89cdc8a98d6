"""GATEWAY_DIMSE__PROCESSES: associations spread over listener processes sharing the port,
least busy first; a listener process that dies is replaced; stopping the server ends them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from tests.dimse.conftest import (
    GATEWAY_AE,
    DimseGateway,
    site_gateway,
    start_dimse_gateway,
    write_files,
)
from tests.helpers import cohort
from tests.security.conftest import bearer

PROCESSES = 2
_LISTENING = re.compile(r"DIMSE AE \S+ listening on \S+ \(process (\d+)\)")
_ACCEPTED = re.compile(r"association from 'MODALITY' accepted \(process (\d+)\)")


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DimseGateway, str]]:
    data = tmp_path_factory.mktemp("processes") / "data"
    with site_gateway(data, GATEWAY_DIMSE__PROCESSES=str(PROCESSES)) as started:
        yield started


def _log(gw: DimseGateway) -> str:
    return gw.live.log_path.read_text(errors="replace")


def _listeners(gw: DimseGateway, timeout: float = 60) -> list[int]:
    """The pids of the listener processes now running (from their start-up lines)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [int(p) for p in _LISTENING.findall(_log(gw)) if Path(f"/proc/{p}").exists()]
        if len(alive) >= PROCESSES or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _accepted_pids(gw: DimseGateway) -> list[int]:
    return [int(p) for p in _ACCEPTED.findall(_log(gw))]


def _open(gw: DimseGateway, count: int) -> list[Association]:
    """``count`` C-ECHO associations, all held open."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = []
    for _ in range(count):
        assoc = ae.associate("127.0.0.1", gw.port, ae_title=GATEWAY_AE)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        held.append(assoc)
    return held


def _wait_logged(gw: DimseGateway, before: int, count: int) -> list[int]:
    deadline = time.monotonic() + 15
    while len(_accepted_pids(gw)) < before + count and time.monotonic() < deadline:
        time.sleep(0.1)
    return _accepted_pids(gw)[before:]


def test_open_associations_are_spread_over_the_listener_processes(
    spread: tuple[DimseGateway, str],
) -> None:
    gw, _ = spread
    listeners = _listeners(gw)
    assert len(listeners) == PROCESSES
    assert gw.live.process is not None and gw.live.process.pid not in listeners
    before = len(_accepted_pids(gw))
    held = _open(gw, PROCESSES)
    try:
        pids = _wait_logged(gw, before, PROCESSES)
    finally:
        for assoc in held:
            assoc.release()
    # the least busy process takes the next association: one each, not all in one
    assert sorted(pids) == sorted(listeners), (pids, listeners)


def test_concurrent_stores_through_several_processes_are_all_stored(
    spread: tuple[DimseGateway, str], tmp_path: Path
) -> None:
    gw, admin_token = spread
    senders = []
    total = 0
    for n in range(PROCESSES):
        instances = cohort(instances_per_series=8, rows=64, columns=64)
        total += len(instances)
        files = write_files(instances, tmp_path / f"files-{n}")
        cmd = ["storescu", "-aet", "MODALITY", "-aec", GATEWAY_AE,
               "127.0.0.1", str(gw.port), *files]  # fmt: skip
        senders.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    for sender in senders:
        _, err = sender.communicate(timeout=300)
        assert sender.returncode == 0, err
    answer = httpx.get(f"{gw.live.url}/healthz", headers=bearer(admin_token)).json()
    assert answer["instance"] >= total


def test_a_listener_process_that_dies_is_replaced(spread: tuple[DimseGateway, str]) -> None:
    gw, _ = spread
    victim, survivor = _listeners(gw)[:2]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        listeners = _listeners(gw, timeout=1)
        if len(listeners) == PROCESSES and victim not in listeners:
            break
        assert time.monotonic() < deadline, f"not replaced: {listeners}"
        time.sleep(0.5)
    assert survivor in listeners
    before = len(_accepted_pids(gw))
    held = _open(gw, PROCESSES)  # the dead one's slot and count were given back
    try:
        pids = _wait_logged(gw, before, PROCESSES)
    finally:
        for assoc in held:
            assoc.release()
    assert sorted(pids) == sorted(listeners)


def test_stopping_the_server_ends_the_listener_processes(tmp_path: Path) -> None:
    gw = start_dimse_gateway(tmp_path / "data", GATEWAY_DIMSE__PROCESSES=str(PROCESSES))
    gw.live.start()
    listeners = _listeners(gw)
    assert len(listeners) == PROCESSES
    gw.live.stop()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{p}").exists() for p in listeners):
        assert time.monotonic() < deadline, "listener processes outlived the server"
        time.sleep(0.2)
