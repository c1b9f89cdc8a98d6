"""The fast DICOM JSON path agrees with pydicom's to_json_dict, element by element."""

from __future__ import annotations

import os
from collections import Counter

import orjson
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from server.core.dicom_json import codec_for, raw_element_json

FILES = sorted(f for f in get_testdata_files() if os.path.isfile(f))


def _compare(ds: Dataset, codec: str | None, tally: Counter[str]) -> None:
    for tag in ds.keys():  # noqa: SIM118
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement):
            continue
        fast = raw_element_json(raw, codec)
        try:
            element = ds[tag]
            reference = element.to_json_dict(None, 2**62)
        except Exception:
            continue  # pydicom itself cannot convert it; the fast path must not matter
        if element.VR == "SQ":
            for item in element.value:
                item_codec = (
                    codec_for(item.SpecificCharacterSet)
                    if "SpecificCharacterSet" in item
                    else codec
                )
                _compare(item, item_codec, tally)
            continue
        if fast is None:
            tally["fallback"] += 1
            continue
        assert orjson.dumps(fast) == orjson.dumps(reference), f"{int(tag):08X}"
        tally["fast"] += 1


@pytest.mark.filterwarnings("ignore")
def test_fast_json_equals_pydicom_for_every_element_of_every_test_file() -> None:
    tally: Counter[str] = Counter()
    compared = 0
    for path in FILES:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            charset = ds.get("SpecificCharacterSet")
        except Exception:
            continue
        _compare(ds, codec_for(charset), tally)
        compared += 1
    assert compared > 150
    # the fast path must carry the bulk of the work, or it is not worth having
    assert tally["fast"] > 5 * tally["fallback"], tally


def test_multi_byte_character_sets_fall_back_to_pydicom() -> None:
    assert codec_for(["ISO 2022 IR 6", "ISO 2022 IR 87"]) is None
    assert codec_for("ISO_IR 192") == "UTF8"
    assert codec_for(None) == "latin_1"


def test_utf8_person_names_and_numbers() -> None:
    raw = RawDataElement(
        0x00100010, "PN", 0, "Müller^Jürgen=ミュラー".encode() + b" ", 0, False, True
    )
    assert raw_element_json(raw, "UTF8") == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Müller^Jürgen", "Ideographic": "ミュラー"}],
    }
    ds = RawDataElement(0x00280030, "DS", 0, b"0.5\\0.25 ", 0, False, True)
    assert raw_element_json(ds, "latin_1") == {"vr": "DS", "Value": [0.5, 0.25]}
    us = RawDataElement(0x00280010, "US", 2, b"\x00\x02", 0, False, True)
    assert raw_element_json(us, None) == {"vr": "US", "Value": [512]}
