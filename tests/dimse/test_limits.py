"""Limits: a C-STORE association killed half-way leaves nothing half-stored; a silent peer
neither blocks others nor keeps its slot; associations beyond the maximum are rejected.
Each runs with the listener in one process and in two (the maximum holds across them)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dimse.conftest import GATEWAY_AE, DimseGateway, site_gateway, write_files
from tests.helpers import cohort
from tests.security.conftest import bearer


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-process", "two-processes"])
def limited(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[DimseGateway, str]]:
    with (
        site_gateway(
            tmp_path_factory.mktemp("limits") / "data",
            GATEWAY_DIMSE__PROCESSES=request.param,
            GATEWAY_DIMSE__MAX_ASSOCIATIONS="2",
            GATEWAY_DIMSE__ACSE_TIMEOUT="2",
            GATEWAY_DIMSE__IDLE_TIMEOUT="6",  # short, but a loaded machine may pause a sender for seconds
        ) as started
    ):
        yield started


def _counts(gw: DimseGateway, admin_token: str) -> dict[str, int]:
    answer = httpx.get(f"{gw.live.url}/healthz", headers=bearer(admin_token)).json()
    return {k: answer[k] for k in ("study", "series", "instance")}


def _blobs(gw: DimseGateway) -> list[Path]:
    return [p for p in (gw.live.data_dir / "blobs").rglob("*") if p.is_file()]


def test_killed_store_association_leaves_nothing_half_stored(
    limited: tuple[DimseGateway, str], tmp_path: Path
) -> None:
    gw, admin_token = limited
    instances = cohort(instances_per_series=40, rows=512, columns=512)
    files = write_files(instances, tmp_path / "files")
    cmd = ["storescu", "-aet", "MODALITY", "-aec", GATEWAY_AE, "127.0.0.1", str(gw.port), *files]
    sender = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _counts(gw, admin_token)["instance"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    sender.send_signal(signal.SIGKILL)  # mid-association, most likely mid-instance
    sender.wait(10)
    time.sleep(2)  # the gateway notices the dead peer
    stored = _counts(gw, admin_token)["instance"]
    assert 3 <= stored < len(instances)
    # every blob is an indexed instance and every indexed instance is whole
    assert len(_blobs(gw)) == stored
    check = gw.live.cli("check")
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout + check.stderr
    spools = [p for p in (gw.live.data_dir / "journal").glob("*/spool/*")]
    assert spools == []
    # sending everything again completes the study: nothing half-stored blocks a retry
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _counts(gw, admin_token)["instance"] == len(instances)


def _echo(gw: DimseGateway) -> subprocess.CompletedProcess[str]:
    return gw.run("echoscu", "-v", calling="MODALITY", timeout=30)


def test_a_silent_peer_blocks_nobody_and_loses_its_slot(limited: tuple[DimseGateway, str]) -> None:
    gw, _ = limited
    with socket.create_connection(("127.0.0.1", gw.port)) as silent:
        started = time.monotonic()
        assert _echo(gw).returncode == 0
        assert time.monotonic() - started < 5
        silent.settimeout(15)
        began = time.monotonic()
        assert silent.recv(1) == b""  # closed by the gateway after the ACSE timeout (2 s)
        assert time.monotonic() - began < 10


def test_associations_beyond_the_maximum_are_rejected_then_served(
    limited: tuple[DimseGateway, str],
) -> None:
    gw, _ = limited
    silent = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(2)]
    try:
        time.sleep(0.3)
        refused = _echo(gw)
        assert refused.returncode != 0
        assert "Local Limit Exceeded" in refused.stderr, refused.stderr
    finally:
        for sock in silent:
            sock.close()
    deadline = time.monotonic() + 15
    while _echo(gw).returncode != 0:
        assert time.monotonic() < deadline, "slots were not freed"
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("dimse", "message"),
    [
        ({"tls_cert_file": "/x.pem"}, "go together"),
        ({"tls_key_file": "/x.key"}, "go together"),
        ({"tls_ca_file": "/ca.pem"}, "needs TLS_CERT_FILE"),
        ({"ae_title": "BACK\\SLASH"}, "no backslash"),
        ({"ae_title": "A" * 17}, "at most 16"),
        ({"max_pdu": 100}, "greater than or equal"),
        ({"max_associations": 0}, "greater than or equal"),
    ],
)
def test_dimse_settings_refuse_incomplete_or_invalid_values(
    tmp_path: Path, dimse: dict[str, object], message: str
) -> None:
    from pydantic import ValidationError

    from server.settings import Settings

    with pytest.raises((ValidationError, ValueError), match=message):
        Settings(data_dir=tmp_path, dimse=dimse)


def test_an_idle_association_is_aborted_after_the_idle_timeout(
    limited: tuple[DimseGateway, str],
) -> None:
    from pynetdicom import AE

    gw, _ = limited
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=GATEWAY_AE)
    assert assoc.is_established
    deadline = time.monotonic() + 15
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.2)
    assert assoc.is_aborted, "the gateway kept an idle association past GATEWAY_DIMSE__IDLE_TIMEOUT"
    assert _echo(gw).returncode == 0
