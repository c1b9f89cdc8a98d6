"""The engine's fast path (raw element walk) writes exactly what the general path writes.

``deidentify`` walks the raw header of common files (``raw.py``) and falls back to the
pydicom-dataset path for anything it does not mirror. For every file of pydicom's test
data and of the planted-PHI corpus, under each profile and under option combinations
that switch every branch of the walk (safe private elements kept, dates shifted or kept,
UIDs kept, every option at once), both paths must give the same output bytes and the
same record, or refuse with the same exception; so must the rewrite in place that
ingest uses (the header replaced and the pixel data moved inside the spooled file). A new divergence in either path fails
here before it reaches a pinned output or a stored instance.
"""

from __future__ import annotations

import io
import itertools
import random
import warnings
from pathlib import Path

import orjson
import pytest
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag

import server.core.deid.engine as engine
from server.core.deid import ctp, raw, stream
from server.core.deid.engine import deidentify
from server.core.deid.policy import DeidPolicy, Option, Profile
from server.synthetic import generate_cohort, to_part10_bytes
from tests.deid.phi_corpus import planted_corpus, pydicom_files

SECRET = ctp.generate_secret()
POLICIES = {
    "basic": DeidPolicy(profile=Profile.basic),
    "basic-safe-private": DeidPolicy(options=frozenset({Option.retain_safe_private})),
    "basic-modified-dates": DeidPolicy(options=frozenset({Option.retain_long_modified_dates})),
    "basic-full-dates-uids": DeidPolicy(
        options=frozenset({Option.retain_long_full_dates, Option.retain_uids})
    ),
    "basic-all": DeidPolicy(
        options=frozenset(Option) - {Option.retain_long_full_dates, Option.retain_uids}
    ),
    "eucaim": DeidPolicy(profile=Profile.eucaim, provider_id="FAST-SITE"),
}
CORPUS = [(f.name, f.data) for f in (*planted_corpus().files, *pydicom_files().files)]


def _outcome(src: Path, dst: Path, policy: DeidPolicy, fast: bool) -> tuple[object, ...]:
    """``dst`` == ``src`` rewrites the file in place (what ingest does)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            done = deidentify(src, dst, policy, SECRET, fast=fast)
    except Exception as exc:
        return ("raised", type(exc).__name__)
    finally:
        out = dst.read_bytes() if dst.exists() else b""
        dst.unlink(missing_ok=True)
    record = orjson.dumps(done.record.to_json(), option=orjson.OPT_SORT_KEYS)
    return out, record


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_fast_path_output_equals_general_path_output(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = []
    walk = engine._fast

    def counted(*args: object, **kwargs: object) -> object:
        done = walk(*args, **kwargs)  # type: ignore[arg-type]
        taken.append(done is not None)
        return done

    monkeypatch.setattr(engine, "_fast", counted)
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    differ = []
    for file_name, data in CORPUS:
        src.write_bytes(data)
        fast = _outcome(src, dst, POLICIES[name], True)
        general = _outcome(src, dst, POLICIES[name], False)
        in_place = _outcome(src, src, POLICIES[name], True)
        if not fast == general == in_place:
            differ.append(file_name)
    assert not differ, f"{name}: the fast path's output differs for {differ}"
    # not vacuous: the walk took a good share of the files itself
    assert sum(taken) >= 60, f"{name}: the fast path took only {sum(taken)} files"


@pytest.mark.parametrize("name", ["basic", "eucaim"])
def test_fast_path_takes_the_benchmark_ct(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 512x512 CT as the benchmark sends it is walked, not parsed by pydicom."""
    general = engine._general

    def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError("the general path was taken")

    src, dst = tmp_path / "ct.dcm", tmp_path / "out.dcm"
    for ds in itertools.islice(generate_cohort(patients=1, rows=512, columns=512), 3):
        ds.BurnedInAnnotation = "NO"
        src.write_bytes(to_part10_bytes(ds))
        monkeypatch.setattr(engine, "_general", refused)
        fast = deidentify(src, dst, POLICIES[name], SECRET)
        out = dst.read_bytes()
        monkeypatch.setattr(engine, "_general", general)
        slow = deidentify(src, dst, POLICIES[name], SECRET, fast=False)
        assert out == dst.read_bytes()
        assert fast.record == slow.record
        assert fast.sha256 is not None and fast.sha256 == (slow.sha256 or fast.sha256)


@pytest.mark.parametrize(
    "vr", ["AE", "AS", "CS", "DA", "DT", "TM", "UI", "LO", "SH", "US", "UL", "SL", "IS", "DS"]
)
def test_values_the_walk_leaves_as_read_encode_back_to_the_same_bytes(vr: str) -> None:
    """``eucaim`` decodes every top-level element before writing; the walk skips that for
    values whose decoding and re-encoding give back the bytes read. Checked here against
    pydicom's decoder and the engine's encoder on many generated values."""
    rng = random.Random(vr)
    alphabet = list(b"AZaz09 .\\\x00^-:")
    if vr in ("US", "UL", "SL"):
        alphabet = list(range(256))
    elif vr in ("IS", "DS"):
        alphabet = list(b"0123456789 .+-eE\\")
    checked = 0
    for _ in range(4000):
        value = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 10)))
        if not raw.same_when_decoded(vr, value, True):
            continue
        checked += 1
        tag = BaseTag(0x00181000)
        elem = convert_raw_data_element(RawDataElement(tag, vr, len(value), value, 0, False, True))
        decoded, as_read = DicomFileLike(io.BytesIO()), DicomFileLike(io.BytesIO())
        for out in (decoded, as_read):
            out.is_implicit_VR, out.is_little_endian = False, True
        if not stream._string(decoded, elem, stream.Encoding(False, True), True):
            write_data_element(decoded, elem, "iso8859")
        assert stream._raw_value(as_read, int(tag), vr, value, stream.Encoding(False, True))
        assert decoded.parent.getvalue() == as_read.parent.getvalue(), value  # type: ignore[union-attr]
    assert checked > 100
