"""Elasticsearch unreachable: a DIMSE C-FIND is refused as "out of resources" (A700), C-MOVE
and C-GET as "out of resources, unable to calculate the number of matches" (A701, with an
ErrorComment), not as an identifier that does not match nor as zero sub-operations (the
peer did nothing wrong, and "nothing matched" would be a lie); all work again with the
cluster. Real gateway, real Elasticsearch behind a TCP proxy the test cuts."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from server.synthetic import generate_cohort
from tests.dimse.conftest import (
    GATEWAY_AE,
    DimseGateway,
    StoreScp,
    start_dimse_gateway,
    write_files,
)
from tests.es.test_outage import Proxy
from tests.live import free_port
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


def _behind_a_proxy(elasticsearch_url: str, tmp_path: Path) -> tuple[Proxy, DimseGateway]:
    """A DIMSE gateway (not started) whose Elasticsearch is reached through a proxy the
    test can cut."""
    proxy = Proxy(elasticsearch_url)
    proxy.start()
    gw = start_dimse_gateway(
        tmp_path / "data",
        GATEWAY_INDEX="elasticsearch",
        GATEWAY_ELASTICSEARCH__HOSTS=f'["http://127.0.0.1:{proxy.port}"]',
        GATEWAY_ELASTICSEARCH__INDEX_PREFIX=f"dimseoutage{proxy.port}",
        GATEWAY_ELASTICSEARCH__REQUEST_TIMEOUT="3",
    )
    return proxy, gw


def test_c_find_during_an_outage_is_out_of_resources(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    proxy, gw = _behind_a_proxy(elasticsearch_url, tmp_path)
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


def _study_query(study: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    return query


def _move_final(port: int, study: str) -> Dataset:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_move(_study_query(study), "DEST",
                                         StudyRootQueryRetrieveInformationModelMove))  # fmt: skip
    finally:
        assoc.release()
    return answers[-1][0]


def _get_final(port: int, study: str) -> tuple[Dataset, int]:
    """The final C-GET response and how many instances arrived on the association."""
    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0x0000

    from pynetdicom import evt

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_get(_study_query(study),
                                        StudyRootQueryRetrieveInformationModelGet))  # fmt: skip
    finally:
        assoc.release()
    return answers[-1][0], len(received)


def test_c_move_and_c_get_during_an_outage_are_out_of_resources_with_a_reason(
    elasticsearch_url: str, tmp_path: Path
) -> None:
    proxy, gw = _behind_a_proxy(elasticsearch_url, tmp_path)
    dest_port = free_port()
    cli_ok(gw.live, "dataset", "create", "site", "--title", "site", "--cancer-type", "lung")
    modality = add_client(gw.live, "modality", "--ae-title", "MODALITY", "--store", "site")
    add_client(gw.live, "destination", "--ae-title", "DEST", "--host", "127.0.0.1",
               "--port", str(dest_port))  # fmt: skip
    cli_ok(gw.live, "daa", "create", "daa-site", "--dataset", "site", "--condition", "download",
           "--client", modality.client_id)  # fmt: skip
    instances = list(generate_cohort(patients=1, studies_per_patient=1, series_per_study=1,
                                     instances_per_series=2, rows=8, columns=8, seed=3))  # fmt: skip
    study = str(instances[0].StudyInstanceUID)
    files = write_files(instances, tmp_path / "sent")
    gw.live.start()
    scp = StoreScp(dest_port, tmp_path / "received")
    try:
        stored = gw.run("storescu", "-xe", calling="MODALITY", files=files)
        assert stored.returncode == 0, stored.stderr
        final, got = _get_final(gw.port, study)
        assert (final.Status, got) == (0x0000, 2)
        assert _move_final(gw.port, study).Status == 0x0000
        assert len(scp.received()) == 2

        proxy.cut()
        final, got = _get_final(gw.port, study)
        assert (final.Status, got) == (0xA701, 0)
        assert "index is unavailable" in str(final.get("ErrorComment", ""))
        final = _move_final(gw.port, study)
        assert final.Status == 0xA701
        assert "index is unavailable" in str(final.get("ErrorComment", ""))
        assert len(scp.received()) == 2  # nothing more sent

        proxy.start()
        final, got = _get_final(gw.port, study)
        assert (final.Status, got) == (0x0000, 2)
    finally:
        scp.stop()
        gw.live.stop()
        proxy.cut()
        httpx.delete(f"{elasticsearch_url}/dimseoutage{proxy.port}-*", timeout=120)
