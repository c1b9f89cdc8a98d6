"""The planted-PHI proof can fail: on a dataset stored without de-identification it finds
every kind of planted value in every channel it harvests.

Without this, an empty harvest (a route that stopped answering, a decoder that reads
nothing) would make tests/deid/test_no_phi.py pass vacuously.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deid.proof import Proof, run_proof
from tests.deid.scan import find_leaks

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def proof(tmp_path_factory: pytest.TempPathFactory) -> Proof:
    return run_proof(tmp_path_factory.mktemp("oracle"), "none")


def test_every_kind_of_planted_value_is_found_when_nothing_is_removed(proof: Proof) -> None:
    assert proof.stored_planted == 3
    leaks = find_leaks(proof.served, proof.planted, "basic", limit=100_000)
    kinds = {leak.kind for leak in leaks}
    assert kinds >= {"phi", "uid", "date", "marker"}, kinds  # ages count as phi


@pytest.mark.parametrize(
    "channel",
    [
        "/dicom-web/instances?includefield=all",
        "/dicom-web/studies?includefield=all",
        "/metadata",
        "transfer-syntax",  # never in a URL: the Accept header; see below
        "/bulkdata/",
        "/fhir/Patient",
        "/fhir/ImagingStudy",
        "STOW",
        "server log",
    ],
)
def test_each_channel_is_searched(proof: Proof, channel: str) -> None:
    leaks = find_leaks(proof.served, proof.planted, "basic", limit=100_000)
    if channel == "transfer-syntax":
        channel = "/instances/"  # instance retrieval in each syntax
    if channel in ("STOW", "server log"):
        assert any(where.startswith(channel) for where, _ in proof.served.items)
        return
    assert any(channel in leak.where for leak in leaks), f"nothing found via {channel}"


def test_marker_names_its_attribute(proof: Proof) -> None:
    leaks = [
        x
        for x in find_leaks(proof.served, proof.planted, "basic", limit=100_000)
        if x.kind == "marker"
    ]
    tags = {proof.planted.markers[leak.value.upper()][0] for leak in leaks}
    assert 0x00181030 in tags  # ProtocolName (a descriptor) is served when nothing is removed


def test_data_dir_search_sees_the_stored_bytes(proof: Proof) -> None:
    from tests.deid.proof import data_dir_stacks

    leaks = find_leaks(data_dir_stacks(proof.data_dir), proof.planted, "basic", limit=10)
    assert leaks, "the stored original bytes were not found in the data directory"
    assert isinstance(proof.data_dir, Path)
