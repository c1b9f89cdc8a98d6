"""No planted identifying value comes back from a de-identifying dataset, by any route.

The planted corpus (tests/deid/phi_corpus.py) and every pydicom test file are stored
over STOW-RS into a ``basic`` and an ``eucaim`` dataset (``dataset create --deidentify``);
then everything the gateway serves is collected (tests/deid/harvest.py: QIDO
includefield=all at every level, WADO-RS study/series/instance in each transfer syntax,
metadata, frames, bulk data, rendered, every FHIR resource type searched and each
resource read with its history, STOW answers including failures) together with the
server's log file and every file in its data directory, and searched in UTF-8, Latin-1,
JSON- and URL-escaped forms, after decoding multipart, DICOM (deflate, character sets)
and base64 InlineBinary (tests/deid/scan.py). tests/deid/test_no_phi_oracle.py shows the
same search finds every kind of value when nothing is removed.
"""

from __future__ import annotations

import pytest

from tests.deid.proof import Proof, data_dir_stacks, run_proof
from tests.deid.scan import Haystacks, describe, find_leaks

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module", params=["basic", "eucaim"])
def proof(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Proof:
    return run_proof(tmp_path_factory.mktemp(f"phi-{request.param}"), request.param)


def _leaks(proof: Proof, kinds: set[str], data_dir: bool = False, log: bool = False) -> str:
    stacks = data_dir_stacks(proof.data_dir) if data_dir else proof.served
    stacks = Haystacks([(w, t) for w, t in stacks.items if (w == "server log") == log])
    found = [
        x
        for x in find_leaks(stacks, proof.planted, proof.profile, proof.options)
        if x.kind in kinds
    ]
    return describe(found, proof.planted) if found else ""


def test_the_planted_corpus_is_stored_and_harvested(proof: Proof) -> None:
    assert proof.stored_planted == 3, proof.stow_answers[0]
    assert proof.instances >= 50  # the planted ones and pydicom's files that could be stored
    assert proof.fhir_reads >= proof.instances // 10
    assert proof.requests > 5 * proof.instances


def test_no_name_id_address_phone_institution_or_free_text_is_served(proof: Proof) -> None:
    assert not _leaks(proof, {"phi", "age"}), _leaks(proof, {"phi", "age"})


def test_no_original_uid_is_served(proof: Proof) -> None:
    assert not _leaks(proof, {"uid"}), _leaks(proof, {"uid"})


def test_no_original_date_is_served(proof: Proof) -> None:
    # eucaim: LETHE's @keep() dates too get the day-of-month rule (a documented deviation)
    assert not _leaks(proof, {"date"}), _leaks(proof, {"date"})


def test_attribute_values_survive_only_where_the_profile_keeps_them(proof: Proof) -> None:
    # a marker per dictionary attribute; kept only where Table E.1-1 does not list the
    # attribute (basic) or LETHE's script keeps it (eucaim): see tests/deid/profiles.py
    assert not _leaks(proof, {"marker"}), _leaks(proof, {"marker"})


def test_server_log_holds_no_planted_value(proof: Proof) -> None:
    kinds = {"phi", "uid", "age", "marker", "date"}
    assert not _leaks(proof, kinds, log=True), _leaks(proof, kinds, log=True)


def test_original_identifiers_find_nothing(proof: Proof) -> None:
    assert proof.original_lookups and set(proof.original_lookups.values()) == {0}


def test_nothing_identifying_is_written_to_the_data_directory(proof: Proof) -> None:
    kinds = {"phi", "uid", "age", "date"}
    assert not _leaks(proof, kinds, data_dir=True), _leaks(proof, kinds, data_dir=True)
