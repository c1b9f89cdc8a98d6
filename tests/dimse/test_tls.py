"""DICOM TLS (PS3.15 Annex B.9, BCP 195): with a certificate the listener speaks only TLS;
with a CA file, a peer must present a certificate that CA signed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.synthetic import generate_cohort
from tests.dimse.conftest import GATEWAY_AE, DimseGateway, start_dimse_gateway, write_files
from tests.live import LiveServer
from tests.security.conftest import add_client, cli_ok

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _pki(folder: Path) -> Path:
    """A CA, a server certificate (127.0.0.1) and a client certificate, both signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem"),
             "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    for name in ("server", "client"):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.csr"),
                 "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
        _openssl("x509", "-req", "-in", str(folder / f"{name}.csr"), "-CA", str(folder / "ca.pem"),
                 "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-copy_extensions", "copy", "-out", str(folder / f"{name}.pem"))  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DimseGateway, Path]]:
    pki = _pki(tmp_path_factory.mktemp("pki"))
    gw = start_dimse_gateway(
        tmp_path_factory.mktemp("tls") / "data",
        GATEWAY_DIMSE__TLS_CERT_FILE=str(pki / "server.pem"),
        GATEWAY_DIMSE__TLS_KEY_FILE=str(pki / "server.key"),
        GATEWAY_DIMSE__TLS_CA_FILE=str(pki / "ca.pem"),
    )
    add_client(gw.live, "modality", "--ae-title", "MODALITY")
    gw.live.start()
    try:
        yield gw, pki
    finally:
        gw.live.stop()


def _echo(gw: DimseGateway, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-aet", "MODALITY", "-aec", GATEWAY_AE, *tls, "127.0.0.1", str(gw.port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_tls_with_a_client_certificate_of_the_ca_is_served(
    tls_gateway: tuple[DimseGateway, Path],
) -> None:
    gw, pki = tls_gateway
    done = _echo(gw, "+tls", str(pki / "client.key"), str(pki / "client.pem"),
                 "+cf", str(pki / "ca.pem"))  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", ["plain-tcp", "tls-without-certificate"])
def test_without_tls_or_client_certificate_nothing_is_served(
    tls_gateway: tuple[DimseGateway, Path], mode: str
) -> None:
    gw, pki = tls_gateway
    tls = () if mode == "plain-tcp" else ("+tla", "+cf", str(pki / "ca.pem"))
    done = _echo(gw, *tls)
    assert done.returncode != 0
    assert "Echo Response" not in done.stderr


def test_pull_from_a_dimse_peer_over_tls_verifies_it_and_presents_the_gateway_certificate(
    tmp_path: Path,
) -> None:
    """``pull --tls`` (C-FIND + C-GET) from a gateway whose DIMSE port speaks only TLS and
    requires client certificates: with the CA and the puller's DICOM certificate it pulls
    every instance; in plain TCP, or trusting another CA, nothing is pulled."""
    pki = _pki(tmp_path / "pki")
    other_ca = _pki(tmp_path / "other-pki") / "ca.pem"
    peer = start_dimse_gateway(
        tmp_path / "peer",
        GATEWAY_DIMSE__TLS_CERT_FILE=str(pki / "server.pem"),
        GATEWAY_DIMSE__TLS_KEY_FILE=str(pki / "server.key"),
        GATEWAY_DIMSE__TLS_CA_FILE=str(pki / "ca.pem"),
    )
    cli_ok(peer.live, "dataset", "create", "site", "--title", "site", "--cancer-type", "lung")
    add_client(peer.live, "modality", "--ae-title", "MODALITY", "--store", "site")
    puller = add_client(peer.live, "puller", "--ae-title", "PULLER")
    cli_ok(peer.live, "daa", "create", "daa-pull", "--dataset", "site", "--condition", "download",
           "--client", puller.client_id)  # fmt: skip
    instances = list(generate_cohort(patients=1, studies_per_patient=1, series_per_study=1,
                                     instances_per_series=3, rows=8, columns=8, seed=21))  # fmt: skip
    study = str(instances[0].StudyInstanceUID)
    files = write_files(instances, tmp_path / "sent")
    here = LiveServer(
        tmp_path / "here",
        extra_env={
            "GATEWAY_DIMSE__TLS_CERT_FILE": str(pki / "client.pem"),
            "GATEWAY_DIMSE__TLS_KEY_FILE": str(pki / "client.key"),
        },
    )
    cli_ok(here, "dataset", "create", "copy", "--title", "copy", "--cancer-type", "lung")
    peer.live.start()
    try:
        stored = peer.run("storescu", "+tls", str(pki / "client.key"), str(pki / "client.pem"),
                          "+cf", str(pki / "ca.pem"), calling="MODALITY", files=files)  # fmt: skip
        assert stored.returncode == 0, stored.stderr
        source = ("--dataset", "copy", "--from", f"dicom://{GATEWAY_AE}@127.0.0.1:{peer.port}",
                  "--calling-ae", "PULLER", "--study", study, "--timeout", "20", "--retries", "0")  # fmt: skip
        plain = here.cli_process("pull", *source)
        assert plain.returncode != 0
        wrong_ca = here.cli_process("pull", *source, "--tls", "--ca-file", str(other_ca))
        assert wrong_ca.returncode != 0
        pulled = here.cli_process("pull", *source, "--tls", "--ca-file", str(pki / "ca.pem"))
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        found = re.search(r"found (\d+), new (\d+)", pulled.stdout)
        assert found is not None, pulled.stdout
        assert (found[1], found[2]) == ("3", "3")
    finally:
        peer.live.stop()
