"""The eucaim profile's two deviations from LETHE's script, over every dictionary attribute.

1. No original date: every DA/DT attribute, at the top level and inside sequence items
   (one LETHE keeps, one it removes), loses its original date.
2. LETHE's removals follow the Basic Profile: eucaim never removes, at any depth, an
   attribute that ``basic`` (no option) keeps, so structure and references survive.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from server.core.deid.policy import DeidPolicy, Profile
from tests.core.deid import builders
from tests.core.deid.test_engine import run

DATE, DATETIME = "20240117", "20240117123000"
_VALUES: dict[str, object] = {
    "CS": "VALUE", "SH": "VALUE", "LO": "VALUE", "US": 1, "SS": 1, "UL": 1, "SL": 1,
    "FL": 1.0, "FD": 1.0, "DS": "1", "IS": "1", "AS": "063Y", "TM": "120000",
    "DA": DATE, "DT": DATETIME, "UI": "1.2.826.0.1.3680043.99.7.1",
}  # fmt: skip
SEQUENCES = (0x00081140, 0x0040A730)  # ReferencedImageSequence (LETHE keeps), ContentSequence
BASIC = DeidPolicy(profile=Profile.basic)
EUCAIM = DeidPolicy(profile=Profile.eucaim, provider_id="S1")


def _attributes(vrs: set[str]) -> list[tuple[int, str]]:
    """Every public dictionary attribute of these VRs (single VR, fixed VM 1)."""
    return [
        (tag, entry[0])
        for tag, entry in DicomDictionary.items()
        if entry[0] in vrs and entry[1] == "1" and tag >> 16 not in (0x0000, 0x0002, 0x7FE0)
        and tag >> 16 & 0xFF00 not in (0x5000, 0x6000) and tag & 0xFFFF
    ]  # fmt: skip


def _instance(attributes: list[tuple[int, str]]) -> Dataset:
    item = Dataset()
    for tag, vr in attributes:
        item.add_new(tag, vr, _VALUES[vr])
    ds = builders.base("1.2.826.0.1.3680043.99.7.2")
    for tag, vr in attributes:
        if tag not in ds:
            ds.add_new(tag, vr, _VALUES[vr])
    ds.SOPClassUID, ds.Modality, ds.BurnedInAnnotation = CTImageStorage, "CT", "NO"
    for seq in SEQUENCES:
        ds.add_new(seq, "SQ", Sequence([item]))
    return ds


def _tags(ds: Dataset, depth: str = "") -> set[str]:
    found = set()
    for elem in ds:
        found.add(f"{depth}{int(elem.tag):08X}")
        if elem.VR == "SQ":
            for item in elem.value:
                found |= _tags(item, f"{depth}{int(elem.tag):08X}/")
    return found


def test_no_original_date_survives_at_any_depth(tmp_path: Path) -> None:
    out = run(tmp_path, _instance(_attributes({"DA", "DT"})), EUCAIM)
    kept = [
        f"{elem.keyword or elem.tag}={elem.value}"
        for elem in out.iterall()
        if elem.VR in ("DA", "DT") and DATE in str(elem.value)
    ]
    assert not kept, kept
    assert any(str(e.value).startswith("20240101") for e in out.iterall() if e.VR == "DA")


def test_eucaim_never_removes_what_basic_keeps(tmp_path: Path) -> None:
    ds = _instance(_attributes(set(_VALUES)))
    basic = _tags(run(tmp_path, ds, BASIC, "basic"))
    eucaim = _tags(run(tmp_path, ds, EUCAIM, "eucaim"))
    missing = sorted(basic - eucaim - {"00280303"})  # basic's LongitudinalTemporal... only
    assert not missing, missing
    assert "0040A730/00081155" in eucaim  # an SR content item keeps its reference
