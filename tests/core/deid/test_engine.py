"""Properties of deidentify on synthetic instances (both profiles)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from server.core.deid import ctp
from server.core.deid.engine import deidentify
from server.core.deid.policy import (
    BurnedIn,
    BurnedInSuspected,
    DeidPolicy,
    Option,
    PolicyError,
    Profile,
)
from server.core.records import UnreadableInstance
from tests.core.deid import builders

SECRET = ctp.generate_secret()
PROFILES = [DeidPolicy(profile=Profile.basic), DeidPolicy(profile=Profile.eucaim, provider_id="S1")]
PLANTED = ["Kowalski", "Carla", "PAT-001", "19610412", "ACC123", "St Mary", "Doe", "Smith"]
ORIGINAL_UIDS = [builders.STUDY_UID, builders.SERIES_UID, builders.FOR_UID]


def run(tmp_path: Path, ds: Dataset, policy: DeidPolicy, name: str = "in") -> Dataset:
    src = builders.write(ds, tmp_path / f"{name}.dcm")
    dst = tmp_path / f"{name}.out.dcm"
    deidentify(src, dst, policy, SECRET)
    return dcmread(dst)


def all_text(ds: Dataset) -> str:
    """Every value at every depth (and the file meta), as one string."""
    parts: list[str] = []
    for elem in ds.iterall():
        if elem.VR != "SQ":
            parts.append(str(elem.value))
    parts.extend(str(e.value) for e in ds.file_meta)
    return "\n".join(parts)


@pytest.mark.parametrize("policy", PROFILES, ids=lambda p: p.profile.value)
def test_no_planted_value_or_original_uid_survives(tmp_path: Path, policy: DeidPolicy) -> None:
    out = run(tmp_path, builders.base(builders.new_uid()), policy)
    text = all_text(out)
    for value in [*PLANTED, *ORIGINAL_UIDS, "HOSPITAL_PACS", "Nested"]:
        assert value not in text, value
    assert out.PatientIdentityRemoved == "YES"
    assert all(0 < len(v) <= 64 for v in out.DeidentificationMethod)  # LO values
    assert out.SOPClassUID == CTImageStorage
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


@pytest.mark.parametrize("policy", PROFILES, ids=lambda p: p.profile.value)
def test_private_elements_with_and_without_creator_removed(
    tmp_path: Path, policy: DeidPolicy
) -> None:
    ds = builders.base(builders.new_uid())
    ds.add_new(0x00430010, "LO", "ACME 2.0")  # not the vendor LETHE's (0043,1039) means
    ds.add_new(0x00431039, "LO", "Kowalski under a foreign creator")
    out = run(tmp_path, ds, policy)
    private = {int(e.tag) for e in out if e.tag.is_private}
    # eucaim keeps LETHE's numeric Siemens diffusion values, with their creator
    allowed = {0x00190010, 0x0019100C, 0x0019100D} if policy.profile is Profile.eucaim else set()
    assert private == allowed
    assert not [e for e in out if e.tag.group & 0xFF00 == 0x6000]  # overlays


@pytest.mark.parametrize("policy", PROFILES, ids=lambda p: p.profile.value)
def test_output_is_byte_deterministic_across_processes(tmp_path: Path, policy: DeidPolicy) -> None:
    src = builders.write(builders.base(builders.new_uid()), tmp_path / "a.dcm")
    deidentify(src, tmp_path / "1.dcm", policy, SECRET)
    deidentify(src, tmp_path / "2.dcm", policy, SECRET)
    code = (
        "import sys; from pathlib import Path;"
        "from server.core.deid.engine import deidentify;"
        "from server.core.deid.policy import DeidPolicy;"
        "deidentify(Path(sys.argv[1]), Path(sys.argv[2]),"
        " DeidPolicy.from_json(eval(sys.argv[3])), sys.argv[4])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    args = [str(src), str(tmp_path / "3.dcm"), repr(policy.to_json()), SECRET]
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env)
    digests = {hashlib.sha256((tmp_path / f"{i}.dcm").read_bytes()).hexdigest() for i in (1, 2, 3)}
    assert len(digests) == 1


@pytest.mark.parametrize("policy", PROFILES, ids=lambda p: p.profile.value)
def test_references_map_like_the_instances_they_point_to(
    tmp_path: Path, policy: DeidPolicy
) -> None:
    ct = builders.base(builders.new_uid())
    seg = builders.reference_to(ct, builders.new_uid())
    ct_out = run(tmp_path, ct, policy, "ct")
    seg_out = run(tmp_path, seg, policy, "seg")
    ref_series = seg_out.ReferencedSeriesSequence[0]
    ref = ref_series.ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == ct_out.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == CTImageStorage  # SOP class references kept
    assert ref_series.SeriesInstanceUID == ct_out.SeriesInstanceUID
    assert seg_out.FrameOfReferenceUID == ct_out.FrameOfReferenceUID
    assert seg_out.StudyInstanceUID == ct_out.StudyInstanceUID
    assert seg_out.PatientID == ct_out.PatientID and seg_out.PatientName == ct_out.PatientName
    top = ct_out.ReferencedImageSequence[0]
    assert top.ReferencedSOPInstanceUID == ct_out.FrameOfReferenceUID  # depth 1
    middle = top.SourceImageSequence[0]
    assert middle.ReferencedSOPInstanceUID == ct_out.StudyInstanceUID  # depth 2
    deep = middle.ReferencedImageSequence[0]
    assert deep.ReferencedSOPInstanceUID == ct_out.SOPInstanceUID  # depth 3
    assert deep.ReferencedSOPClassUID == CTImageStorage
    assert "Nested" not in str(deep.get("PersonName", ""))
    assert len(ct_out.SOPInstanceUID) <= 64


def test_pseudonyms_are_keyed_by_the_secret(tmp_path: Path) -> None:
    ds = builders.base(builders.new_uid())
    src = builders.write(ds, tmp_path / "a.dcm")
    outs = []
    for i, secret in enumerate([SECRET, ctp.generate_secret()]):
        deidentify(src, tmp_path / f"{i}.dcm", DeidPolicy(), secret)
        outs.append(dcmread(tmp_path / f"{i}.dcm"))
    assert outs[0].PatientID != outs[1].PatientID
    assert outs[0].StudyInstanceUID != outs[1].StudyInstanceUID


def test_eucaim_pseudonyms_are_ctp_compatible(tmp_path: Path) -> None:
    out = run(tmp_path, builders.base("1.2.826.0.1.3680043.99.3.1"), PROFILES[1])
    anon = ctp.hash_patient_id(SECRET, builders.PID)
    assert out.PatientID == anon
    assert out.PatientName == anon + "^Anonymous"
    root = ctp.EUCAIM_UID_ROOT
    assert out.StudyInstanceUID == ctp.hash_uid(root, builders.STUDY_UID, anon)
    assert out.SOPInstanceUID == ctp.hash_uid(root, "1.2.826.0.1.3680043.99.3.1", anon)
    assert out.FrameOfReferenceUID == ctp.hash_uid(root, builders.FOR_UID, anon)
    assert out.StudyDate == "20240101" and out.ContentDate == "20240101"
    assert out.StudyTime == "101010"  # LETHE keeps times
    assert out.AccessionNumber == ctp.ctp_hash("ACC123", 16)
    assert out.InstitutionName == hashlib.sha256(b"S1").hexdigest()
    assert out.PatientSex == "F" and out.PatientAge == "063Y"  # characteristics kept
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    # 113111: the Siemens b-value LETHE keeps is there (safe private, numeric)
    assert codes == ["113100", "113107", "113108", "113109", "113111"]
    assert any("deviation" in v for v in out.DeidentificationMethod)


def test_basic_writes_the_method_it_applied(tmp_path: Path) -> None:
    policy = DeidPolicy(options=frozenset({Option.retain_uids, Option.clean_graphics}))
    out = run(tmp_path, builders.base(builders.new_uid()), policy)
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113103", "113110"]
    assert "2026c" in " ".join(out.DeidentificationMethod)
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "YES"),
        ({"BurnedInAnnotation": None, "Modality": "US"}, "US"),
        ({"BurnedInAnnotation": None, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "1.1.7"),
        ({"BurnedInAnnotation": None, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.104.1"}, "104"),
    ],
)
def test_burned_in_suspects_are_refused(
    tmp_path: Path, changes: dict[str, str | None], reason: str
) -> None:
    ds = builders.base(builders.new_uid())
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    src = builders.write(ds, tmp_path / "a.dcm")
    for policy in [*PROFILES, DeidPolicy(burned_in=BurnedIn.quarantine)]:
        with pytest.raises(BurnedInSuspected, match=reason):
            deidentify(src, tmp_path / "o.dcm", policy, SECRET)
    with pytest.raises(PolicyError, match="OCR"):
        deidentify(src, tmp_path / "o.dcm", DeidPolicy(burned_in=BurnedIn.clean), SECRET)
    assert not (tmp_path / "o.dcm").exists()


def test_ct_without_burned_in_annotation_is_not_suspect(tmp_path: Path) -> None:
    ds = builders.base(builders.new_uid())
    del ds.BurnedInAnnotation
    assert run(tmp_path, ds, DeidPolicy()).PatientIdentityRemoved == "YES"


def test_not_dicom_is_unreadable(tmp_path: Path) -> None:
    src = tmp_path / "x.dcm"
    src.write_bytes(b"hello, not dicom" * 10)
    with pytest.raises(UnreadableInstance):
        deidentify(src, tmp_path / "o.dcm", DeidPolicy(), SECRET)


def test_profile_none_copies_bytes(tmp_path: Path) -> None:
    src = builders.write(builders.base(builders.new_uid()), tmp_path / "a.dcm")
    deidentify(src, tmp_path / "o.dcm", DeidPolicy(profile=Profile.none), SECRET)
    assert (tmp_path / "o.dcm").read_bytes() == src.read_bytes()
