"""Keys and codes of the EUCAIM search, as the reference mediator and the EUCAIM UI use them.

Sources: chaimeleon-eu/dataset-service ``dataset_service/storage/eucaim_formats.py`` and
``eucaim_search.py`` (the reference mediator); samply/eucaim-frontend
``static/catalogues/catalogue-eucaim.json`` (the codes the UI sends). Where the two differ
the UI's codes are accepted too (README "Joining EUCAIM", reference-bug decisions).
"""

from __future__ import annotations

from enum import StrEnum


class Field(StrEnum):
    """What a condition is about, and where the gateway finds it."""

    SEX = "sex"  # study: PatientSex
    AGE = "age"  # patient: completed years at the first study (PatientAge, else dates)
    YEAR = "year"  # patient: year of the first study's StudyDate
    DIAGNOSIS = "diagnosis"  # dataset: the ResearchStudy's cancer types (SNOMED CT)
    MODALITY = "modality"  # series: Modality
    BODY_PART = "body_part"  # series: BodyPartExamined
    MANUFACTURER = "manufacturer"  # series: Manufacturer


KEYS: dict[str, Field] = {
    "SNOMEDCT263495000": Field.SEX,
    "SNOMEDCT423493009": Field.AGE,
    "SNOMEDCT439401001": Field.DIAGNOSIS,
    "SNOMEDCT432213005": Field.YEAR,
    "RID10311": Field.MODALITY,
    "SNOMEDCT123037004": Field.BODY_PART,
    "C25392": Field.MANUFACTURER,
}
SERIES_FIELDS = frozenset({Field.MODALITY, Field.BODY_PART, Field.MANUFACTURER})
NUMERIC_FIELDS = frozenset({Field.AGE, Field.YEAR})

# The "unknown" concept: the attribute is absent (SQL IS NULL in the reference).
UNKNOWN = "SNOMEDCT261665006"

SEX = {"SNOMEDCT248153007": "M", "SNOMEDCT248152002": "F", "SNOMEDCT74964007": "O"}
MODALITY = {
    "RID10312": "MR",
    "RID10337": "PT",
    "RID10321": "CT",
    "RID10334": "NM",  # SPECT: DICOM retired ST into NM (PS3.3 C.7.3.1.1.1)
}
BODY_PART = {
    "SNOMEDCT41216001": "PROSTATE",
    "SNOMEDCT76752008": "BREAST",
    "SNOMEDCT39607008": "LUNG",
    "SNOMEDCT71854001": "COLON",
    "SNOMEDCT818981001": "ABDOMEN",
    "SNOMEDCT816092008": "PELVIS",
    "SNOMEDCT12921003": "PELVIS",  # the UI's pelvis code; the reference rejects it (fixed here)
    "SNOMEDCT69536005": "HEAD",
}
# Manufacturer families: DICOM Manufacturer values vary ("SIEMENS", "Siemens Healthineers",
# "GE MEDICAL SYSTEMS", "Philips Medical Systems"), so a family matches any stored value
# containing one of its words, case-insensitively (the reference compares one exact string).
MANUFACTURER = {
    "C200140": ("siemens",),
    "birnlex_3066": ("siemens",),
    "birnlex_12833": ("general electric", "ge medical", "ge healthcare", "ge hualun"),
    "birnlex_3065": ("philips",),
    "birnlex_3067": ("toshiba",),
}
# Diagnosis: SNOMED CT disorder ids, compared with the dataset's cancer types. Every cancer
# type the gateway knows is accepted (the reference knows five); the UI's "pelvis cancer"
# (363484005) is a known code that no dataset type carries, so it matches nothing.
DIAGNOSIS_PREFIX = "SNOMEDCT"
EXTRA_DIAGNOSES = frozenset({"363484005"})

# MIABIS wording of the answer's ``gender`` list (the reference spells "Unkown").
GENDER_LABEL = {"M": "Male", "F": "Female", "O": "Undifferentiated", None: "Unknown"}
