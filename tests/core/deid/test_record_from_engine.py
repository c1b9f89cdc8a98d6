"""The index record built from the engine's header equals the one read from the file.

Ingest builds a de-identified instance's record (QIDO columns, level JSON, metadata with
BulkDataURIs, frame index) from the header the engine just wrote instead of parsing the
written file again; for every file of pydicom's test data and of the planted-PHI corpus,
both profiles, the two records agree field by field.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from server.core.deid import ctp
from server.core.deid.engine import deidentify
from server.core.deid.policy import BurnedInSuspected, DeidPolicy, Profile
from server.core.records import UnreadableInstance, read_instance, record_from_parsed
from tests.deid.phi_corpus import planted_corpus, pydicom_files

SECRET = ctp.generate_secret()
KEY = b"k" * 32
POLICIES = [DeidPolicy(profile=Profile.basic), DeidPolicy(profile=Profile.eucaim, provider_id="S")]
CORPUS = [*planted_corpus().files, *pydicom_files().files]
USED: dict[str, int] = {"parsed": 0}


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.profile.value)
@pytest.mark.parametrize("item", CORPUS, ids=lambda f: f.name)
def test_record_from_engine_header_equals_record_read_from_written_file(
    item, policy: DeidPolicy, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    src.write_bytes(item.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            done = deidentify(src, dst, policy, SECRET)
            digest, written = done.sha256, done.written
        except (UnreadableInstance, BurnedInSuspected):
            return  # refused: no record either way
        if written is None:
            return  # re-encoded (deflated, odd encodings): ingest parses the file
        try:
            expected = read_instance(dst, digest or "", patient_secret=KEY)
        except UnreadableInstance as exc:
            with pytest.raises(UnreadableInstance) as got:
                record_from_parsed(
                    dst, written.ds, written.pixel_offset, digest or "", patient_secret=KEY
                )
            assert got.value.message == exc.message
            return
        record = record_from_parsed(
            dst, written.ds, written.pixel_offset, digest or "", patient_secret=KEY
        )
    for field in dataclasses.fields(expected):
        name = field.name
        assert getattr(record, name) == getattr(expected, name), name


def test_the_engine_hands_over_its_header_for_an_ordinary_ct(tmp_path: Path) -> None:
    """The shortcut is really taken for the common case (not silently always None)."""
    item = next(f for f in planted_corpus().files if f.name == "everything.dcm")
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    src.write_bytes(item.data)
    written = deidentify(src, dst, POLICIES[0], SECRET).written
    assert written is not None
    assert written.pixel_offset is not None
    assert dst.read_bytes()[written.pixel_offset : written.pixel_offset + 4] == b"\xe0\x7f\x10\x00"
