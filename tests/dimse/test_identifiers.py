"""C-FIND identifiers encoded straight from index rows are the bytes pydicom would encode
from the data set ``find.response`` builds, in both query transfer syntaxes; rows the
direct encoder cannot encode exactly go the pydicom way."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import encode

from server.dimse.find import FindRequest, response
from server.dimse.identifiers import encode_row
from server.synthetic import generate_cohort

STUDY_KEYS = (0x00080020, 0x00080030, 0x00080050, 0x00080061, 0x00081030, 0x00100010,
              0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x00200010, 0x00201206,
              0x00201208, 0x00080005)  # fmt: skip
IMAGE_KEYS = (0x00080016, 0x00080018, 0x00200013, 0x00280010, 0x00280011, 0x00280030,
              0x00181050, 0x00100010, 0x0020000D, 0x0020000E, 0x00081190)  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    rows = []
    for ds in generate_cohort(patients=3, series_per_study=1, instances_per_series=2, seed=3):
        del ds.PixelData
        rows.append(ds.to_json_dict())
    unicode = dict(rows[0])
    unicode["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}
    unicode["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    ideographic = dict(rows[1])
    ideographic["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou",
                                                      "Phonetic": "ヤマダ^タロウ"}]}  # fmt: skip
    ideographic["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    counts = dict(rows[2])
    counts["00201206"] = {"vr": "IS", "Value": [3]}
    counts["00201208"] = {"vr": "IS", "Value": [12]}
    counts["00080061"] = {"vr": "CS", "Value": ["CT", "SEG"]}
    counts["00280010"] = {"vr": "US", "Value": [512]}
    counts["00280030"] = {"vr": "DS", "Value": [0.703125, 5]}
    counts["00181050"] = {"vr": "DS", "Value": [1 / 3]}
    counts["00081190"] = {"vr": "UR", "Value": ["http://gw/dicom-web/studies/1.2.3"]}
    return [*rows, unicode, ideographic, counts]


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-le", "implicit-le"])
@pytest.mark.parametrize(("level", "keys"), [("STUDY", STUDY_KEYS), ("IMAGE", IMAGE_KEYS)])
def test_direct_identifier_is_the_pydicom_encoding(
    implicit: bool, level: str, keys: tuple[int, ...]
) -> None:
    request = FindRequest(level, None, keys)  # type: ignore[arg-type]
    for row in _rows():
        direct = encode_row(row, keys, level, "GATEWAY", implicit)
        assert direct is not None, row
        expected = encode(response(row, request, "GATEWAY"), implicit, True)
        assert direct.raw == expected


def test_rows_it_cannot_encode_exactly_go_the_pydicom_way() -> None:
    row = _rows()[0]
    latin = {**row, "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
             "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller"}]}}  # fmt: skip
    decimal = {**row, "00200013": {"vr": "IS", "Value": [2.5]}}
    text_number = {**row, "00280030": {"vr": "DS", "Value": ["1.50"]}}
    sequence = {**row, "00081110": {"vr": "SQ", "Value": [{}]}}
    assert encode_row(latin, STUDY_KEYS, "STUDY", "GATEWAY", False) is None
    assert encode_row(decimal, IMAGE_KEYS, "IMAGE", "GATEWAY", False) is None
    assert encode_row(text_number, IMAGE_KEYS, "IMAGE", "GATEWAY", False) is None
    assert encode_row(sequence, (0x00081110,), "IMAGE", "GATEWAY", False) is None
    assert isinstance(response(latin, FindRequest("STUDY", None, STUDY_KEYS), "GATEWAY"),  # type: ignore[arg-type]
                      Dataset)  # fmt: skip
