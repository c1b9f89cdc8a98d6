"""DICOM JSON (PS3.18 F.2) from the index -> FHIR R4 (4.0.1) ImagingStudy, Patient, Endpoint.

Pure functions: the inputs are the level JSON objects the index keeps per study, series
and instance (keys are 8 hex digit tags, values ``{"vr": .., "Value": [..]}``), plus the
computed query attributes (0008,0061), (0020,1206), (0020,1208) and (0020,1209). Element
choices follow the "DICOM Tag Mapping" of the R4 ImagingStudy resource and its
implementation notes:

* ``identifier``: Study Instance UID (0020,000D) as ``system = urn:dicom:uid``,
  ``value = urn:oid:<uid>``; Accession Number (0008,0050) typed ``v2-0203#ACSN`` (with
  Issuer of Accession Number Sequence (0008,0051) when present); Study ID (0020,0010).
* ``basedOn``: the order the Accession Number stands for, as a logical reference
  (``type = ServiceRequest`` and the ACSN identifier); R4 maps the accession there.
* ``modality``: Modalities in Study (0008,0061), else the series' Modality (0008,0060).
* ``subject``: Patient ID (0010,0020) and Issuer of Patient ID (0010,0021), through the
  pseudonymous id of :func:`patient_id` (a keyed hash: the index keeps it per study).
* ``started``: Study Date (0008,0020) + Study Time (0008,0030) + Timezone Offset From
  UTC (0008,0201); see :func:`study_started`.
* ``referrer``: Referring Physician's Name (0008,0090), as a display-only reference.
* ``numberOfSeries`` / ``numberOfInstances``: (0020,1206) / (0020,1208).
* ``description``: Study Description (0008,1030).
* ``series``: Series Instance UID (0020,000E), Series Number (0020,0011), Modality
  (0008,0060), Series Description (0008,103E), Number of Series Related Instances
  (0020,1209), Body Part Examined (0018,0015), Laterality (0020,0060), Series Date
  (0008,0021) + Series Time (0008,0031).
* ``series.instance``: SOP Instance UID (0008,0018), SOP Class UID (0008,0016) and
  Instance Number (0020,0013).

The dataset (research study) an imaging study belongs to is carried by the extension
:data:`DATASET_EXTENSION` with ``valueReference = ResearchStudy/<id>``: R4 ImagingStudy
has no element that links a study to a research study (``basedOn`` is for requests).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
URI_SYSTEM = "urn:ietf:rfc:3986"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"

IMAGING_STUDY_PROFILE = (
    "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/gateway-imagingstudy"
)
DATASET_EXTENSION = (
    "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/imagingstudy-dataset"
)
PATIENT_ID_SYSTEM = "https://cancer-imaging-gateway.eu/fhir/sid/patient-id"

# DICOM tags (PS3.6) used below.
_STUDY_INSTANCE_UID = "0020000D"
_SERIES_INSTANCE_UID = "0020000E"
_SOP_INSTANCE_UID = "00080018"
_SOP_CLASS_UID = "00080016"
_STUDY_DATE = "00080020"
_STUDY_TIME = "00080030"
_SERIES_DATE = "00080021"
_SERIES_TIME = "00080031"
_TIMEZONE_OFFSET = "00080201"
_ACCESSION_NUMBER = "00080050"
_ISSUER_OF_ACCESSION_NUMBER = "00080051"
_MODALITIES_IN_STUDY = "00080061"
_MODALITY = "00080060"
_REFERRING_PHYSICIAN = "00080090"
_STUDY_DESCRIPTION = "00081030"
_SERIES_DESCRIPTION = "0008103E"
_STUDY_ID = "00200010"
_SERIES_NUMBER = "00200011"
_INSTANCE_NUMBER = "00200013"
_LATERALITY = "00200060"
_BODY_PART = "00180015"
_PATIENT_ID = "00100020"
_ISSUER_OF_PATIENT_ID = "00100021"
_ISSUER_QUALIFIERS = "00100024"
_PATIENT_BIRTH_DATE = "00100030"
_PATIENT_SEX = "00100040"
_N_STUDY_SERIES = "00201206"
_N_STUDY_INSTANCES = "00201208"
_N_SERIES_INSTANCES = "00201209"
_LOCAL_NAMESPACE = "00400031"
_UNIVERSAL_ENTITY_ID = "00400032"
_UNIVERSAL_ENTITY_ID_TYPE = "00400033"

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")
_GENDER = {"M": "male", "F": "female", "O": "other"}

Json = dict[str, Any]
DicomJson = Mapping[str, Any]
CodingLookup = Callable[[str], Mapping[str, Any] | None]


# --- identifiers -----------------------------------------------------------------------


def is_fhir_id(value: str) -> bool:
    """FHIR R4 ``id`` datatype: 1-64 characters from ``A-Z a-z 0-9 - .``."""
    return _FHIR_ID.fullmatch(value) is not None


def imaging_study_id(study_uid: str) -> str:
    """Resource id of the ImagingStudy of a study: the Study Instance UID itself.

    A conformant UID (digits and dots, at most 64 characters) is a valid FHIR id. A
    non-conformant one is replaced by a stable hash so the id is still valid.
    """
    uid = _clean_uid(study_uid)
    if uid and is_fhir_id(uid):
        return uid
    return "s-" + hashlib.sha256(study_uid.encode("utf-8")).hexdigest()[:40]


def patient_id(secret: bytes, patient_id: str | None, issuer: str | None) -> str:
    """Pseudonymous, deterministic Patient resource id for a (Patient ID, Issuer) pair.

    ``"p-"`` + the first 40 hex digits of HMAC-SHA256 keyed with the installation's
    patient-id key over ``issuer|patient_id`` (UTF-8, a missing value counting as empty).
    Without the key the id cannot be recomputed from a Patient ID (a dictionary of
    Patient IDs does not reverse it); with the same key it is stable. The result is
    always a valid FHIR id whatever characters the DICOM values hold, and instances
    without a Patient ID still get a stable id (one per issuer).
    """
    if len(secret) < 32:
        raise ValueError("the patient-id key has at least 32 bytes")
    pid = (patient_id or "").strip()
    iss = (issuer or "").strip()
    digest = hmac.new(secret, f"{iss}|{pid}".encode(), hashlib.sha256).hexdigest()
    return "p-" + digest[:40]


def dicom_uid_identifier(uid: str) -> Json:
    """A DICOM UID as a FHIR Identifier (R4 ImagingStudy notes: ``urn:oid:`` in value)."""
    return {"system": DICOM_UID_SYSTEM, "value": "urn:oid:" + uid}


# --- DICOM date and time -----------------------------------------------------------------


def fhir_date(da: str | None) -> str | None:
    """A DICOM DA value (``YYYYMMDD``, or ACR-NEMA ``YYYY.MM.DD``) as a FHIR date."""
    if not da:
        return None
    text = da.strip().replace(".", "") if len(da.strip()) == 10 else da.strip()
    match = _DA.fullmatch(text)
    if not match:
        return None
    year, month, day = (int(g) for g in match.groups())
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def _fhir_time(tm: str) -> str | None:
    """A DICOM TM value (``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.F..``) as ``hh:mm:ss[.f]``."""
    text = tm.strip()
    if ":" in text:  # ACR-NEMA form HH:MM:SS.frac
        text = text.replace(":", "")
    match = _TM.fullmatch(text)
    if not match:
        return None
    hh, mm, ss, frac = match.groups()
    hour, minute, second = int(hh), int(mm or 0), int(ss or 0)
    if hour > 23 or minute > 59 or second > 59:  # a leap second falls back to the date
        return None
    out = f"{hour:02d}:{minute:02d}:{second:02d}"
    return f"{out}.{frac}" if frac else out


def _fhir_offset(offset: str | None) -> str | None:
    """Timezone Offset From UTC (``&ZZXX``) as a FHIR ``+hh:mm`` zone."""
    if not offset:
        return None
    match = _OFFSET.fullmatch(offset.strip())
    if not match:
        return None
    sign, hh, mm = match.groups()
    if int(hh) > 14 or int(mm) > 59 or (int(hh) == 14 and int(mm) != 0):
        return None
    return f"{sign}{hh}:{mm}"


def fhir_datetime(da: str | None, tm: str | None, offset: str | None) -> str | None:
    """DICOM date + time + UTC offset as a FHIR ``dateTime``.

    FHIR requires a time zone whenever hours and minutes are given, so a time without a
    known offset is dropped and only the date is returned. A time that cannot be read
    also falls back to the date.
    """
    date = fhir_date(da)
    if date is None:
        return None
    time = _fhir_time(tm) if tm else None
    zone = _fhir_offset(offset)
    if time is None or zone is None:
        return date
    return f"{date}T{time}{zone}"


def study_started(study_json: DicomJson) -> str | None:
    """ImagingStudy.started from Study Date, Study Time and Timezone Offset From UTC."""
    return fhir_datetime(
        _text(study_json, _STUDY_DATE),
        _text(study_json, _STUDY_TIME),
        _text(study_json, _TIMEZONE_OFFSET),
    )


# --- resources -------------------------------------------------------------------------


def imaging_study(
    study: DicomJson,
    series: Iterable[tuple[DicomJson, Iterable[DicomJson]]],
    *,
    endpoint_id: str,
    dataset_id: str | None,
    patient_key: str,
    body_site: CodingLookup,
    laterality: CodingLookup,
    last_updated: str | None = None,
) -> Json:
    """An R4 ImagingStudy for one study of the index (see the module docstring).

    ``series`` pairs each series-level JSON with its instance-level JSONs; an empty
    instance list leaves ``series.instance`` out (the counts still come from the index).
    ``patient_key`` is the study's pseudonymous Patient id (:func:`patient_id`, kept by
    the index). ``body_site`` and ``laterality`` turn Body Part Examined / Laterality values into
    Codings (or None when there is no mapping). Series inherit the study's ``endpoint``.
    """
    _require_id(endpoint_id, "endpoint_id")
    if dataset_id is not None:
        _require_id(dataset_id, "dataset_id")
    study_uid = _text(study, _STUDY_INSTANCE_UID)
    if not study_uid:
        raise ValueError("study JSON has no Study Instance UID (0020,000D)")
    study_uid = _clean_uid(study_uid)

    meta: Json = {"profile": [IMAGING_STUDY_PROFILE]}
    if last_updated:
        meta = {"lastUpdated": last_updated, **meta}
    out: Json = {"resourceType": "ImagingStudy", "id": imaging_study_id(study_uid), "meta": meta}
    if dataset_id is not None:
        out["extension"] = [
            {
                "url": DATASET_EXTENSION,
                "valueReference": {"reference": f"ResearchStudy/{dataset_id}"},
            }
        ]

    # Typed DCM 110180 "Study Instance UID", as the HL7 Europe imaging profiles do.
    identifiers: list[Json] = [
        {
            "use": "official",
            "type": {
                "coding": [{"system": DCM, "code": "110180", "display": "Study Instance UID"}]
            },
            **dicom_uid_identifier(study_uid),
        }
    ]
    accession = _accession_identifier(study)
    if accession is not None:
        identifiers.append(accession)
    study_id = _text(study, _STUDY_ID)
    if study_id:
        identifiers.append({"use": "secondary", "type": {"text": "Study ID"}, "value": study_id})
    out["identifier"] = identifiers
    out["status"] = "available"

    series_list = [(s, list(instances)) for s, instances in series]
    modalities = _values(study, _MODALITIES_IN_STUDY) or [
        m for s, _ in series_list if (m := _text(s, _MODALITY))
    ]
    codes = list(dict.fromkeys(str(m).strip() for m in modalities if str(m).strip()))
    if codes:
        out["modality"] = [{"system": DCM, "code": code} for code in codes]

    _require_id(patient_key, "patient_key")
    out["subject"] = {"reference": f"Patient/{patient_key}"}
    started = study_started(study)
    if started:
        out["started"] = started
    if accession is not None:
        out["basedOn"] = [{"type": "ServiceRequest", "identifier": accession}]
    referrer = _person_name(study, _REFERRING_PHYSICIAN)
    if referrer:
        out["referrer"] = {"display": referrer}
    out["endpoint"] = [{"reference": f"Endpoint/{endpoint_id}"}]

    n_series = _int(study, _N_STUDY_SERIES)
    if n_series is None and series_list:
        n_series = len(series_list)
    if n_series is not None and n_series >= 0:
        out["numberOfSeries"] = n_series
    n_instances = _int(study, _N_STUDY_INSTANCES)
    if n_instances is None and series_list:
        per_series = [_series_count(s, i) for s, i in series_list]
        if all(n is not None for n in per_series):
            n_instances = sum(n for n in per_series if n is not None)
    if n_instances is not None and n_instances >= 0:
        out["numberOfInstances"] = n_instances
    description = _text(study, _STUDY_DESCRIPTION)
    if description:
        out["description"] = description

    offset = _text(study, _TIMEZONE_OFFSET)
    items = [
        item
        for s, instances in series_list
        if (item := _series(s, instances, offset, body_site, laterality)) is not None
    ]
    if items:
        out["series"] = items
    return out


def patient(study: DicomJson, *, patient_key: str, last_updated: str | None = None) -> Json:
    """A pseudonymous R4 Patient (id ``patient_key``) from the study-level patient attributes.

    Only the identifier (Patient ID with its issuer), gender (Patient's Sex) and the
    year of birth (from Patient's Birth Date) are exposed: no name, no full birth date.
    """
    pid = _text(study, _PATIENT_ID)
    issuer = _text(study, _ISSUER_OF_PATIENT_ID)
    _require_id(patient_key, "patient_key")
    out: Json = {"resourceType": "Patient", "id": patient_key}
    if last_updated:
        out["meta"] = {"lastUpdated": last_updated}
    if pid:
        out["identifier"] = [_patient_identifier(study, pid, issuer)]
    sex = (_text(study, _PATIENT_SEX) or "").upper()
    out["gender"] = _GENDER.get(sex, "unknown")
    birth = fhir_date(_text(study, _PATIENT_BIRTH_DATE))
    if birth:
        out["birthDate"] = birth[:4]
    return out


def endpoint(
    endpoint_id: str,
    dicomweb_root: str,
    *,
    name: str = "DICOMweb (WADO-RS/QIDO-RS/STOW-RS)",
) -> Json:
    """The R4 Endpoint of the gateway's DICOMweb service (``dicom-wado-rs`` connection).

    The R4 payload type code system only defines ``any`` and ``none`` (an example
    binding), so the payload type is given as text.
    """
    _require_id(endpoint_id, "endpoint_id")
    return {
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "status": "active",
        "connectionType": {
            "system": ENDPOINT_CONNECTION_TYPE,
            "code": "dicom-wado-rs",
            "display": "DICOM WADO-RS",
        },
        "name": name,
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom", "application/dicom+json"],
        "address": dicomweb_root,
    }


# --- helpers ---------------------------------------------------------------------------


def _series(
    series_json: DicomJson,
    instances: list[DicomJson],
    study_offset: str | None,
    body_site: CodingLookup,
    laterality: CodingLookup,
) -> Json | None:
    uid = _text(series_json, _SERIES_INSTANCE_UID)
    if not uid:
        return None
    out: Json = {"uid": _clean_uid(uid)}
    number = _int(series_json, _SERIES_NUMBER)
    if number is not None and number >= 0:
        out["number"] = number
    # Modality is 1..1 in R4; OT ("Other") when the series does not say.
    out["modality"] = {"system": DCM, "code": _text(series_json, _MODALITY) or "OT"}
    description = _text(series_json, _SERIES_DESCRIPTION)
    if description:
        out["description"] = description
    count = _series_count(series_json, instances)
    if count is not None and count >= 0:
        out["numberOfInstances"] = count
    part = _text(series_json, _BODY_PART)
    if part and (coding := body_site(part)) is not None:
        out["bodySite"] = dict(coding)
    side = _text(series_json, _LATERALITY)
    if side and (coding := laterality(side)) is not None:
        out["laterality"] = dict(coding)
    started = fhir_datetime(
        _text(series_json, _SERIES_DATE),
        _text(series_json, _SERIES_TIME),
        _text(series_json, _TIMEZONE_OFFSET) or study_offset,
    )
    if started:
        out["started"] = started
    items = [item for inst in instances if (item := _instance(inst)) is not None]
    if items:
        out["instance"] = items
    return out


def _instance(instance_json: DicomJson) -> Json | None:
    uid = _text(instance_json, _SOP_INSTANCE_UID)
    sop_class = _text(instance_json, _SOP_CLASS_UID)
    if not uid or not sop_class:  # both are 1..1 in R4
        return None
    out: Json = {
        "uid": _clean_uid(uid),
        "sopClass": {"system": URI_SYSTEM, "code": "urn:oid:" + _clean_uid(sop_class)},
    }
    number = _int(instance_json, _INSTANCE_NUMBER)
    if number is not None and number >= 0:
        out["number"] = number
    return out


def _series_count(series_json: DicomJson, instances: list[DicomJson]) -> int | None:
    count = _int(series_json, _N_SERIES_INSTANCES)
    if count is None and instances:
        count = len(instances)
    return count


def _accession_identifier(study: DicomJson) -> Json | None:
    value = _text(study, _ACCESSION_NUMBER)
    if not value:
        return None
    out: Json = {
        "use": "usual",
        "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
    }
    issuer = _first_item(study, _ISSUER_OF_ACCESSION_NUMBER)
    if issuer is not None:
        universal = _text(issuer, _UNIVERSAL_ENTITY_ID)
        kind = (_text(issuer, _UNIVERSAL_ENTITY_ID_TYPE) or "").upper()
        local = _text(issuer, _LOCAL_NAMESPACE)
        if universal and kind == "ISO" and _OID.fullmatch(universal):
            out["system"] = "urn:oid:" + universal
        elif universal and kind in ("URI", "URL"):
            out["system"] = universal
        display = local or universal
        if display:
            out["assigner"] = {"display": display}
    out["value"] = value
    return out


def _patient_identifier(study: DicomJson, pid: str, issuer: str | None) -> Json:
    if issuer and _OID.fullmatch(issuer):
        return {"system": "urn:oid:" + issuer, "value": pid}
    qualifiers = _first_item(study, _ISSUER_QUALIFIERS)
    if qualifiers is not None:
        universal = _text(qualifiers, _UNIVERSAL_ENTITY_ID)
        kind = (_text(qualifiers, _UNIVERSAL_ENTITY_ID_TYPE) or "").upper()
        if universal and kind == "ISO" and _OID.fullmatch(universal):
            return {"system": "urn:oid:" + universal, "value": pid}
    out: Json = {"system": PATIENT_ID_SYSTEM, "value": pid}
    if issuer:
        out["assigner"] = {"display": issuer}
    return out


def _values(ds: DicomJson, tag: str) -> list[Any]:
    element = ds.get(tag)
    if not isinstance(element, Mapping):
        return []
    values = element.get("Value")
    return list(values) if isinstance(values, list) else []


def _text(ds: DicomJson, tag: str) -> str | None:
    """First value of an element as stripped text (None when absent or empty)."""
    values = _values(ds, tag)
    if not values or values[0] is None or isinstance(values[0], Mapping):
        return None
    text = str(values[0]).strip()
    return text or None


def _int(ds: DicomJson, tag: str) -> int | None:
    values = _values(ds, tag)
    if not values or values[0] is None or isinstance(values[0], bool | Mapping):
        return None
    try:
        return int(str(values[0]).strip()) if isinstance(values[0], str) else int(values[0])
    except (TypeError, ValueError):
        return None


def _first_item(ds: DicomJson, tag: str) -> DicomJson | None:
    values = _values(ds, tag)
    return values[0] if values and isinstance(values[0], Mapping) else None


def _person_name(ds: DicomJson, tag: str) -> str | None:
    """A PN value as display text: ``Family^Given^Middle^Prefix^Suffix`` reordered."""
    values = _values(ds, tag)
    if not values:
        return None
    value = values[0]
    if isinstance(value, Mapping):
        raw = next(
            (str(value[k]) for k in ("Alphabetic", "Ideographic", "Phonetic") if value.get(k)),
            "",
        )
    else:
        raw = str(value or "")
    parts = [p.strip() for p in raw.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    text = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    return text or None


def _clean_uid(uid: str) -> str:
    return uid.strip().rstrip("\x00").strip()


def _require_id(value: str, what: str) -> None:
    if not is_fhir_id(value):
        raise ValueError(f"{what} is not a valid FHIR id: {value!r}")
