"""DICOM JSON from real files -> FHIR R4 ImagingStudy / Patient / Endpoint."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pydicom.data
import pytest
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient

from server.core.attributes import Level
from server.core.fhir.imaging import (
    DATASET_EXTENSION,
    DCM,
    DICOM_UID_SYSTEM,
    IMAGING_STUDY_PROFILE,
    PATIENT_ID_SYSTEM,
    endpoint,
    imaging_study,
    imaging_study_id,
    patient,
    patient_id,
    study_started,
)
from server.core.records import patient_key, read_instance
from server.synthetic import write_cohort

KEY = bytes(range(32))  # a patient-id key, as an installation derives one
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
SNOMED = "http://snomed.info/sct"
BODY_SITES = {
    "LIVER": {"system": SNOMED, "code": "10200004", "display": "Liver structure"},
    "CHEST": {"system": SNOMED, "code": "51185008", "display": "Thoracic structure"},
    "BREAST": {"system": SNOMED, "code": "76752008", "display": "Breast structure"},
}
LATERALITIES = {
    "L": {"system": SNOMED, "code": "7771000", "display": "Left"},
    "R": {"system": SNOMED, "code": "24028007", "display": "Right"},
}


def body_site(value: str) -> dict[str, Any] | None:
    return BODY_SITES.get(value)


def laterality(value: str) -> dict[str, Any] | None:
    return LATERALITIES.get(value)


Study = tuple[dict[str, Any], list[tuple[dict[str, Any], list[dict[str, Any]]]]]


def _count(n: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [n]}


def index_studies(paths: list[Path]) -> dict[str, Study]:
    """Level JSON per study/series/instance plus the computed attributes, as the index keeps."""
    studies: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, dict[str, Any]]] = {}
    instances: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in paths:
        record = read_instance(
            path, hashlib.sha256(path.read_bytes()).hexdigest(), patient_secret=KEY
        )
        levels = {level: orjson.loads(record.level_json[level]) for level in Level}
        studies.setdefault(record.study_uid, levels[Level.STUDY])
        series.setdefault(record.study_uid, {}).setdefault(record.series_uid, levels[Level.SERIES])
        instances.setdefault(record.study_uid, {}).setdefault(record.series_uid, []).append(
            levels[Level.INSTANCE]
        )
    out: dict[str, Study] = {}
    for study_uid, study in studies.items():
        pairs = []
        modalities: list[str] = []
        for series_uid, series_json in series[study_uid].items():
            members = instances[study_uid][series_uid]
            series_json["00201209"] = _count(len(members))
            modality = series_json.get("00080060", {}).get("Value", [None])[0]
            if modality and modality not in modalities:
                modalities.append(modality)
            pairs.append((series_json, members))
        study["00080061"] = {"vr": "CS", "Value": modalities}
        study["00201206"] = _count(len(pairs))
        study["00201208"] = _count(sum(len(m) for _, m in pairs))
        out[study_uid] = (study, pairs)
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Study]:
    root = tmp_path_factory.mktemp("cohort")
    paths = write_cohort(root, patients=2, series_per_study=2, instances_per_series=3, seed=1)
    return index_studies(paths)


@pytest.fixture(scope="module")
def ct_small() -> Study:
    (study,) = index_studies([Path(str(pydicom.data.get_testdata_file("CT_small.dcm")))]).values()
    return study


@pytest.fixture(scope="module")
def mr_small() -> Study:
    (study,) = index_studies([Path(str(pydicom.data.get_testdata_file("MR_small.dcm")))]).values()
    return study


def build(study: Study, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "endpoint_id": "dicomweb",
        "dataset_id": "ds-1",
        "body_site": body_site,
        "laterality": laterality,
        "last_updated": "2024-05-01T12:00:00Z",
    }
    args.update(kwargs)
    args.setdefault("patient_key", patient_key(KEY, study[0]))
    return imaging_study(study[0], study[1], **args)


def _patient(study: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return patient(study, patient_key=patient_key(KEY, study), **kwargs)


def assert_round_trips(model: Any, resource: dict[str, Any]) -> None:
    parsed = model.model_validate(resource)
    again = json.loads(parsed.model_dump_json())
    assert model.model_validate(again).model_dump_json() == parsed.model_dump_json()
    expected, got = copy.deepcopy(resource), copy.deepcopy(again)
    if "lastUpdated" in expected.get("meta", {}):
        # The instant may be re-serialised (Z vs +00:00); compare it separately.
        assert got["meta"].pop("lastUpdated")
        expected["meta"].pop("lastUpdated")
    assert got == expected


def uid_of(ds: dict[str, Any], tag: str) -> str:
    return str(ds[tag]["Value"][0])


# --- ImagingStudy -------------------------------------------------------------------------


def test_cohort_studies_validate_and_round_trip(cohort: dict[str, Study]) -> None:
    assert len(cohort) == 2
    for study in cohort.values():
        resource = build(study)
        assert_round_trips(ImagingStudy, resource)
        assert resource["resourceType"] == "ImagingStudy"
        assert resource["status"] == "available"
        assert resource["meta"]["profile"] == [IMAGING_STUDY_PROFILE]
        assert resource["meta"]["lastUpdated"] == "2024-05-01T12:00:00Z"
        assert resource["endpoint"] == [{"reference": "Endpoint/dicomweb"}]


def test_ids_deterministic_and_valid(cohort: dict[str, Study]) -> None:
    for study_uid, study in cohort.items():
        first, second = build(study), build(study)
        assert first == second
        assert first["id"] == study_uid == imaging_study_id(study_uid)
        assert FHIR_ID.fullmatch(first["id"])
        subject = first["subject"]["reference"]
        assert subject.startswith("Patient/")
        assert FHIR_ID.fullmatch(subject.removeprefix("Patient/"))
        assert subject == "Patient/" + _patient(study[0])["id"]


def test_identifiers(cohort: dict[str, Study]) -> None:
    for study_uid, study in cohort.items():
        resource = build(study)
        uid_ids = [i for i in resource["identifier"] if i.get("system") == DICOM_UID_SYSTEM]
        assert len(uid_ids) == 1
        assert uid_ids[0]["value"] == f"urn:oid:{study_uid}"
        assert uid_ids[0]["type"]["coding"][0] == {
            "system": DCM,
            "code": "110180",
            "display": "Study Instance UID",
        }
        accession = uid_of(study[0], "00080050")
        acsn = [
            i
            for i in resource["identifier"]
            if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"
        ]
        assert len(acsn) == 1
        assert acsn[0]["value"] == accession
        assert acsn[0]["type"]["coding"][0]["system"] == (
            "http://terminology.hl7.org/CodeSystem/v2-0203"
        )
        assert resource["basedOn"] == [{"type": "ServiceRequest", "identifier": acsn[0]}]
        study_ids = [i for i in resource["identifier"] if i.get("type", {}).get("text")]
        assert [i["value"] for i in study_ids] == [uid_of(study[0], "00200010")]


def test_issuer_of_accession_number(ct_small: Study) -> None:
    study = copy.deepcopy(ct_small[0])
    study["00080050"] = {"vr": "SH", "Value": ["ACC-42"]}
    study["00080051"] = {
        "vr": "SQ",
        "Value": [
            {
                "00400031": {"vr": "UT", "Value": ["RIS"]},
                "00400032": {"vr": "UT", "Value": ["1.2.3.4.5"]},
                "00400033": {"vr": "CS", "Value": ["ISO"]},
            }
        ],
    }
    resource = build((study, ct_small[1]))
    assert_round_trips(ImagingStudy, resource)
    (acsn,) = [i for i in resource["identifier"] if i.get("use") == "usual"]
    assert acsn["system"] == "urn:oid:1.2.3.4.5"
    assert acsn["assigner"] == {"display": "RIS"}
    assert acsn["value"] == "ACC-42"


def test_no_accession_number(ct_small: Study) -> None:
    resource = build(ct_small)  # CT_small.dcm has an empty Accession Number
    assert all(i.get("use") != "usual" for i in resource["identifier"])
    assert "basedOn" not in resource


def test_series_and_instances_equal_input(cohort: dict[str, Study]) -> None:
    for study in cohort.values():
        study_json, pairs = study
        resource = build(study)
        assert resource["numberOfSeries"] == len(pairs) == 2
        assert resource["numberOfInstances"] == sum(len(m) for _, m in pairs) == 6
        assert [m["code"] for m in resource["modality"]] == study_json["00080061"]["Value"]
        assert all(m["system"] == DCM for m in resource["modality"])
        assert [s["uid"] for s in resource["series"]] == [uid_of(s, "0020000E") for s, _ in pairs]
        for item, (series_json, members) in zip(resource["series"], pairs, strict=True):
            assert item["numberOfInstances"] == len(members) == 3
            assert item["modality"] == {"system": DCM, "code": uid_of(series_json, "00080060")}
            assert item["number"] == int(series_json["00200011"]["Value"][0])
            assert [i["uid"] for i in item["instance"]] == [uid_of(m, "00080018") for m in members]
            for inst, member in zip(item["instance"], members, strict=True):
                assert inst["sopClass"] == {
                    "system": "urn:ietf:rfc:3986",
                    "code": "urn:oid:" + uid_of(member, "00080016"),
                }
                assert inst["number"] == int(member["00200013"]["Value"][0])
            part = series_json.get("00180015", {}).get("Value", [None])[0]
            if part in BODY_SITES:
                assert item["bodySite"] == BODY_SITES[part]
            else:
                assert "bodySite" not in item


def test_series_without_instances(cohort: dict[str, Study]) -> None:
    for study_json, pairs in cohort.values():
        resource = build((study_json, [(s, []) for s, _ in pairs]))
        assert_round_trips(ImagingStudy, resource)
        assert all("instance" not in s for s in resource["series"])
        assert [s["numberOfInstances"] for s in resource["series"]] == [3, 3]
        assert resource["numberOfInstances"] == 6


def test_study_without_series(ct_small: Study) -> None:
    resource = build((ct_small[0], []))
    assert_round_trips(ImagingStudy, resource)
    assert "series" not in resource
    assert resource["numberOfSeries"] == 1
    assert resource["modality"] == [{"system": DCM, "code": "CT"}]


def test_ct_small_timezone_and_people(ct_small: Study) -> None:
    resource = build(ct_small)
    assert_round_trips(ImagingStudy, resource)
    # StudyDate 20040119, StudyTime 072730, TimezoneOffsetFromUTC -0500
    assert resource["started"] == "2004-01-19T07:27:30-05:00"
    (series,) = resource["series"]
    assert series["started"] == "1997-04-30T11:27:49-05:00"
    assert series["modality"] == {"system": DCM, "code": "CT"}
    assert "laterality" not in series  # empty Laterality
    assert "referrer" not in resource  # empty Referring Physician's Name
    assert resource["description"] == "e+1"


def test_mr_small_empty_series_date(mr_small: Study) -> None:
    resource = build(mr_small)
    assert_round_trips(ImagingStudy, resource)
    assert resource["started"] == "2004-08-26T18:50:59-04:00"
    (series,) = resource["series"]
    assert "started" not in series
    assert series["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.4"


def test_referrer_laterality_and_missing_modality(cohort: dict[str, Study]) -> None:
    study_json, pairs = next(iter(cohort.values()))
    series_json = copy.deepcopy(pairs[0][0])
    series_json["00200060"] = {"vr": "CS", "Value": ["L"]}
    series_json.pop("00080060")
    resource = build((study_json, [(series_json, pairs[0][1])]))
    assert_round_trips(ImagingStudy, resource)
    (item,) = resource["series"]
    assert item["laterality"] == LATERALITIES["L"]
    assert item["modality"] == {"system": DCM, "code": "OT"}
    referrer = study_json["00080090"]["Value"][0]["Alphabetic"]
    family, given = referrer.split("^")[:2]
    assert resource["referrer"] == {"display": f"{given} {family}"}


def test_dataset_extension(cohort: dict[str, Study]) -> None:
    study = next(iter(cohort.values()))
    with_dataset = build(study, dataset_id="lung-cohort-2024")
    assert with_dataset["extension"] == [
        {
            "url": DATASET_EXTENSION,
            "valueReference": {"reference": "ResearchStudy/lung-cohort-2024"},
        }
    ]
    without = build(study, dataset_id=None, last_updated=None)
    assert "extension" not in without
    assert "lastUpdated" not in without["meta"]
    assert_round_trips(ImagingStudy, without)
    with pytest.raises(ValueError):
        build(study, endpoint_id="not/an id")


def test_non_conformant_study_uid_gets_valid_id() -> None:
    long_uid = "1." + "2" * 80
    assert FHIR_ID.fullmatch(imaging_study_id(long_uid))
    assert imaging_study_id(long_uid) == imaging_study_id(long_uid)
    assert imaging_study_id("1.2.3") == "1.2.3"


# --- started ------------------------------------------------------------------------------


def _dt(date: str | None, time: str | None = None, offset: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, vr, value in (("00080020", "DA", date), ("00080030", "TM", time)):
        out[tag] = {"vr": vr, "Value": [value]} if value is not None else {"vr": vr}
    if offset is not None:
        out["00080201"] = {"vr": "SH", "Value": [offset]}
    return out


@pytest.mark.parametrize(
    ("date", "time", "offset", "expected"),
    [
        ("20190315", "101500", "+0100", "2019-03-15T10:15:00+01:00"),
        ("20190315", "101500.123", "+0100", "2019-03-15T10:15:00.123+01:00"),
        ("20190315", "101500.123456", "-0530", "2019-03-15T10:15:00.123456-05:30"),
        ("20190315", "1015", "+0000", "2019-03-15T10:15:00+00:00"),
        ("20190315", "10", "+0200", "2019-03-15T10:00:00+02:00"),
        ("20190315", "10:15:00", "+0100", "2019-03-15T10:15:00+01:00"),
        ("20190315", "101500", None, "2019-03-15"),  # a time needs a zone in FHIR
        ("20190315", None, "+0100", "2019-03-15"),
        ("20190315", None, None, "2019-03-15"),
        ("20190315", "256100", "+0100", "2019-03-15"),  # unreadable time
        ("20190315", "101500", "+01", "2019-03-15"),  # unreadable offset
        ("20190315", "101500", "+1430", "2019-03-15"),  # beyond FHIR's +14:00
        ("20190315", "101500", "+1400", "2019-03-15T10:15:00+14:00"),
        ("20190315", "235960", "+0100", "2019-03-15"),  # leap second
        ("2019.03.15", None, None, "2019-03-15"),
        ("20190230", "101500", "+0100", None),
        ("2019", None, None, None),
        (None, "101500", "+0100", None),
    ],
)
def test_study_started(
    date: str | None, time: str | None, offset: str | None, expected: str | None
) -> None:
    assert study_started(_dt(date, time, offset)) == expected


def test_started_values_validate(ct_small: Study) -> None:
    for time, offset in (("101500.123", "+0100"), ("10", "-0000"), (None, None)):
        study = copy.deepcopy(ct_small[0])
        study.update(_dt("20190315", time, offset))
        if offset is None:
            study.pop("00080201", None)
        resource = build((study, ct_small[1]))
        assert ImagingStudy.model_validate(resource).started is not None


# --- Patient ------------------------------------------------------------------------------


def test_patient_pseudonymous(cohort: dict[str, Study]) -> None:
    for study_json, _ in cohort.values():
        resource = _patient(study_json, last_updated="2024-05-01T12:00:00Z")
        assert_round_trips(Patient, resource)
        assert set(resource) == {"resourceType", "id", "meta", "identifier", "gender", "birthDate"}
        assert "name" not in resource and "address" not in resource
        birth = uid_of(study_json, "00100030")
        assert resource["birthDate"] == birth[:4]
        assert len(resource["birthDate"]) == 4
        sex = uid_of(study_json, "00100040")
        assert resource["gender"] == {"M": "male", "F": "female"}[sex]
        pid = uid_of(study_json, "00100020")
        issuer = uid_of(study_json, "00100021")
        assert resource["id"] == patient_id(KEY, pid, issuer)
        assert resource["identifier"] == [
            {"system": PATIENT_ID_SYSTEM, "value": pid, "assigner": {"display": issuer}}
        ]


def test_patient_oid_issuer_and_sex_other(ct_small: Study) -> None:
    study = copy.deepcopy(ct_small[0])
    study["00100021"] = {"vr": "LO", "Value": ["2.16.840.1.113883.19.5"]}
    resource = _patient(study)
    assert_round_trips(Patient, resource)
    assert resource["identifier"] == [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "1CT1"}]
    assert resource["gender"] == "other"  # PatientSex O
    assert "birthDate" not in resource  # empty Patient's Birth Date
    assert "meta" not in resource


def test_patient_unknown_sex_and_no_patient_id(mr_small: Study) -> None:
    study = copy.deepcopy(mr_small[0])
    study["00100040"] = {"vr": "CS"}
    study.pop("00100020")
    resource = _patient(study)
    assert_round_trips(Patient, resource)
    assert resource["gender"] == "unknown"
    assert "identifier" not in resource
    assert resource["id"] == patient_id(KEY, None, None)
    assert build((study, mr_small[1]))["subject"] == {"reference": f"Patient/{resource['id']}"}


def test_weird_patient_ids_are_valid_and_distinct() -> None:
    weird = ["A/B C", "ÅÄÖ", "x" * 65, "1" * 200, " padded ", "", None, "a|b", "../..", "p-1"]
    ids = [patient_id(KEY, pid, None) for pid in weird]
    for value in ids:
        assert FHIR_ID.fullmatch(value), value
        assert value.startswith("p-")
    assert patient_id(KEY, "", None) == patient_id(KEY, None, None)  # both: no Patient ID
    assert patient_id(KEY, " padded ", None) == patient_id(KEY, "padded", None)
    distinct = [v for pid, v in zip(weird, ids, strict=True) if pid is not None and pid != ""]
    assert len(set(distinct)) == len(distinct)
    assert patient_id(KEY, None, None) not in distinct
    assert (
        patient_id(KEY, "A/B C", "ISS1")
        != patient_id(KEY, "A/B C", "ISS2")
        != patient_id(KEY, "A/B C", None)
    )
    assert patient_id(KEY, "ÅÄÖ", "ISS") == patient_id(KEY, "ÅÄÖ", "ISS")
    for pid in weird:
        resource = _patient({"00100020": {"vr": "LO", "Value": [pid]} if pid else {"vr": "LO"}})
        assert_round_trips(Patient, resource)


# --- Endpoint -----------------------------------------------------------------------------


def test_endpoint() -> None:
    resource = endpoint("dicomweb", "https://gateway.example.org/dicomweb")
    assert_round_trips(Endpoint, resource)
    assert resource["status"] == "active"
    assert resource["connectionType"]["code"] == "dicom-wado-rs"
    assert resource["connectionType"]["system"] == (
        "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
    )
    assert resource["payloadType"] == [{"text": "DICOM"}]
    assert "application/dicom" in resource["payloadMimeType"]
    assert resource["address"] == "https://gateway.example.org/dicomweb"
    assert endpoint("e1", "http://x/", name="Archive")["name"] == "Archive"
    with pytest.raises(ValueError):
        endpoint("bad id", "http://x/")


def test_patient_id_is_a_keyed_hash_not_a_plain_one() -> None:
    """A dictionary of Patient IDs does not reverse the id: no plain hash of any usual layout
    gives it, and another key gives another id (another installation)."""
    pid, issuer = "PAT-0042", "HOSPITAL"
    got = patient_id(KEY, pid, issuer).removeprefix("p-")
    for text in (pid, f"{issuer}|{pid}", f"{pid}|{issuer}", f"{issuer}{pid}", f"|{pid}"):
        for name in ("sha256", "sha1", "md5", "sha512", "blake2b", "sha3_256"):
            assert got not in hashlib.new(name, text.encode()).hexdigest()
    assert patient_id(bytes(range(1, 33)), pid, issuer) != patient_id(KEY, pid, issuer)
    with pytest.raises(ValueError):
        patient_id(b"short", pid, issuer)
