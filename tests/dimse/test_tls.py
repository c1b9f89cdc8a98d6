"""DICOM TLS (PS3.15 Annex B.9, BCP 195): with a certificate the listener speaks only TLS;
with a CA file, a peer must present a certificate that CA signed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dimse.conftest import GATEWAY_AE, DimseGateway, start_dimse_gateway
from tests.security.conftest import add_client

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
