"""Elasticsearch unreachable: a DIMSE C-FIND is refused as "out of resources" (A700), not as
an identifier that does not match (the peer did nothing wrong), and works again with the
cluster. Real gateway, real Elasticsearch behind a TCP proxy the test cuts."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from tests.dimse.conftest import GATEWAY_AE, start_dimse_gateway
from tests.es.test_outage import Proxy
from tests.security.conftest import add_client, cli_ok


def _find_statuses(port: int) -> list[int]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    try:
        return [int(s.Status) for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]  # fmt: skip
    finally:
        assoc.release()


def test_c_find_during_an_outage_is_out_of_resources(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    proxy = Proxy(elasticsearch_url)
    proxy.start()
    gw = start_dimse_gateway(
        tmp_path / "data",
        GATEWAY_INDEX="elasticsearch",
        GATEWAY_ELASTICSEARCH__HOSTS=f'["http://127.0.0.1:{proxy.port}"]',
        GATEWAY_ELASTICSEARCH__INDEX_PREFIX=f"dimseoutage{proxy.port}",
        GATEWAY_ELASTICSEARCH__REQUEST_TIMEOUT="3",
    )
    cli_ok(gw.live, "dataset", "create", "site", "--title", "site", "--cancer-type", "lung")
    add_client(gw.live, "modality", "--ae-title", "MODALITY", "--store", "site")
    gw.live.start()
    try:
        assert _find_statuses(gw.port)[-1] == 0x0000
        proxy.cut()
        assert _find_statuses(gw.port)[-1] == 0xA700
        proxy.start()
        assert _find_statuses(gw.port)[-1] == 0x0000
    finally:
        gw.live.stop()
        proxy.cut()
        httpx.delete(f"{elasticsearch_url}/dimseoutage{proxy.port}-*", timeout=120)
