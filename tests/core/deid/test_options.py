"""Every Annex E option switch changes what it should (one case per option)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from server.core.deid import ctp
from server.core.deid.engine import deidentify
from server.core.deid.policy import CODES, DeidPolicy, Option
from tests.core.deid import builders

SECRET = ctp.generate_secret()


def _days(a: str, b: str) -> int:
    parse = lambda v: dt.datetime.strptime(v, "%Y%m%d").date()  # noqa: E731
    return (parse(a) - parse(b)).days


def _modified(base: Dataset, opt: Dataset) -> None:
    assert "StudyDate" not in base or base.StudyDate in ("", "19000101")
    shift = _days(opt.StudyDate, "20240117")
    assert -3650 <= shift <= -1
    assert _days(opt.ContentDate, opt.StudyDate) == 2  # intervals kept
    assert opt.LongitudinalTemporalInformationModified == "MODIFIED"


def _safe_private(base: Dataset, opt: Dataset) -> None:
    assert not [e for e in base if e.tag.is_private]
    kept = {int(e.tag) for e in opt if e.tag.is_private}
    assert kept == {0x00190010, 0x0019100C, 0x0019100D}  # creator + safe-listed values
    assert opt[0x0019100C].value == 1000


def _descriptors(base: Dataset, opt: Dataset) -> None:
    assert "SeriesDescription" not in base or base.SeriesDescription in ("", "ANONYMIZED")
    assert opt.SeriesDescription == "Axial"  # the patient's name cleaned out


def _structured(base: Dataset, opt: Dataset) -> None:
    assert len(base.AcquisitionContextSequence) == 0
    assert opt.AcquisitionContextSequence[0].ValueType == "TEXT"


def _graphics(base: Dataset, opt: Dataset) -> None:
    assert 0x60003000 not in base and 0x60000010 not in base
    assert opt[0x60003000].value == b"\x0f\x00"
    assert "Kowalski" not in str(opt[0x60004000].value)


CASES: dict[Option, Callable[[Dataset, Dataset], None]] = {
    Option.retain_long_full_dates: lambda b, o: (
        (
            (b.get("StudyDate") or "") != "20240117" == o.StudyDate
            and o.LongitudinalTemporalInformationModified == "UNMODIFIED"
        )
        or pytest.fail("full dates")
    ),
    Option.retain_long_modified_dates: _modified,
    Option.retain_patient_characteristics: lambda b, o: (
        ((b.get("PatientSex") or "") == "" and o.PatientSex == "F" and o.PatientAge == "063Y")
        or pytest.fail("patient characteristics")
    ),
    Option.retain_device_identity: lambda b, o: (
        (
            b.get("DeviceSerialNumber") in (None, "", "ANONYMIZED")
            and o.DeviceSerialNumber == "SN12345"
            and o.StationName == "CT01"
        )
        or pytest.fail("device identity")
    ),
    Option.retain_institution_identity: lambda b, o: (
        (
            b.get("InstitutionName") in (None, "", "ANONYMIZED")
            and o.InstitutionName == "St Mary Hospital"
        )
        or pytest.fail("institution")
    ),
    Option.retain_uids: lambda b, o: (
        (
            b.StudyInstanceUID != builders.STUDY_UID
            and o.StudyInstanceUID == builders.STUDY_UID
            and o.FrameOfReferenceUID == builders.FOR_UID
        )
        or pytest.fail("uids")
    ),
    Option.retain_safe_private: _safe_private,
    Option.clean_descriptors: _descriptors,
    Option.clean_structured_content: _structured,
    Option.clean_graphics: _graphics,
}


def test_every_option_has_a_case() -> None:
    assert set(CASES) == set(Option)


@pytest.mark.parametrize("option", list(Option), ids=lambda o: o.value)
def test_option_switch(tmp_path: Path, option: Option) -> None:
    src = builders.write(builders.base("1.2.826.0.1.3680043.99.4.1"), tmp_path / "in.dcm")
    outs = []
    for name, options in (("base", frozenset()), ("opt", frozenset({option}))):
        deidentify(src, tmp_path / f"{name}.dcm", DeidPolicy(options=options), SECRET)
        outs.append(dcmread(tmp_path / f"{name}.dcm"))
    CASES[option](*outs)
    codes = [i.CodeValue for i in outs[1].DeidentificationMethodCodeSequence]
    assert codes == ["113100", CODES[option]]
    # whatever the option, the patient's name and ID never survive
    assert "Kowalski" not in str(outs[1].PatientName) and outs[1].PatientID != builders.PID
