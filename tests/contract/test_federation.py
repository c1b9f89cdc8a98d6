"""Contract: the EUCAIM federated search counts the same on every index backend.

Every key and operator of the reference mediator's grammar, the series rule (series
conditions of one operation node are about one series), unknown keys and values, age
from PatientAge or from the dates (birth date absent or coarsened), age and year taken
from each patient's first study, counted against what the test stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from server.core.federation.plan import resolve
from server.core.federation.query import parse
from server.core.records import InstanceRecord
from server.index.base import FederationIndex, Index
from server.index.elasticsearch import ElasticsearchIndex
from server.index.federation_es import EsFederation
from server.index.federation_sql import SqlFederation
from server.index.sqlite import SqliteIndex

Build = Callable[..., InstanceRecord]
TYPES = {"d1": frozenset({"399068003", "254837009"}), "d2": frozenset({"363358000"})}
SEX, AGE, DIAG, YEAR = (
    "SNOMEDCT263495000",
    "SNOMEDCT423493009",
    "SNOMEDCT439401001",
    "SNOMEDCT432213005",
)
MOD, BODY, MAKER = "RID10311", "SNOMEDCT123037004", "C25392"

# study -> (dataset, patient, study attributes, [series attributes])
STUDIES: dict[str, tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = {
    "S1": (
        "d1",
        "P1",
        {
            "PatientSex": "M",
            "PatientAge": "061Y",
            "StudyDate": "20200315",
            "PatientBirthDate": "19700101",
        },  # PatientAge wins over the dates (50)
        [
            {"Modality": "MR", "BodyPartExamined": "PROSTATE", "Manufacturer": "SIEMENS"},
            {"Modality": "CT", "BodyPartExamined": "PELVIS", "Manufacturer": "GE MEDICAL SYSTEMS"},
        ],
    ),
    "S2": (
        "d1",
        "P2",
        {"PatientSex": "F", "PatientBirthDate": "19700101", "StudyDate": "20210601"},
        [
            {
                "Modality": "MR",
                "BodyPartExamined": "breast",
                "Manufacturer": "Philips Medical Systems",
            }
        ],
    ),
    "S3": (
        "d1",
        "P2",
        {"PatientSex": "F", "StudyDate": "20220101"},
        [{"Modality": "PT", "Manufacturer": "Siemens Healthineers"}],
    ),
    "S4": ("d1", "P3", {"PatientAge": "045Y"}, [{"Modality": "CT"}]),
    "S5": (
        "d2",
        "P4",
        {"PatientSex": "M", "PatientBirthDate": "19890701", "StudyDate": "20190630"},
        [{"Modality": "MR", "BodyPartExamined": "PROSTATE", "Manufacturer": "SIEMENS"}],
    ),
}


def federation_of(index: Index) -> FederationIndex:
    if isinstance(index, ElasticsearchIndex):
        return EsFederation(index.es, index.names)
    assert isinstance(index, SqliteIndex)
    return SqlFederation(index.db)


@pytest.fixture
def fed(index: Index, record_of: Build) -> FederationIndex:
    records = []
    for s, (dataset, patient, study, series_list) in STUDIES.items():
        uid = f"1.2.826.0.1.3680043.10.1.{s[1:]}"
        for n, series in enumerate(series_list, 1):
            rec = record_of(StudyInstanceUID=uid, SeriesInstanceUID=f"{uid}.{n}", PatientID=patient,
                            **study, **series)  # fmt: skip
            rec.dataset = dataset
            records.append(rec)
    index.add_instances(records, overwrite=False)
    return federation_of(index)


def cond(key: str, kind: str, value: Any) -> dict[str, Any]:
    return {"key": key, "type": kind, "value": value}


def op(operand: str, *children: dict[str, Any]) -> dict[str, Any]:
    return {"operand": operand, "children": list(children)}


def counts(fed: FederationIndex, ast: dict[str, Any]) -> dict[str, tuple[int, int]]:
    query = parse(ast)
    groups: dict[Any, list[str]] = {}
    for dataset, types in TYPES.items():
        groups.setdefault(resolve(query.plan, types), []).append(dataset)
    return fed.federation_counts(list(groups.items()))


CASES: list[tuple[str, dict[str, Any], dict[str, tuple[int, int]]]] = [
    ("empty query: everything", op("OR"), {"d1": (4, 3), "d2": (1, 1)}),
    ("sex male", cond(SEX, "EQUALS", "SNOMEDCT248153007"), {"d1": (1, 1), "d2": (1, 1)}),
    ("sex female", cond(SEX, "EQUALS", "SNOMEDCT248152002"), {"d1": (2, 1)}),
    ("sex unknown is absent", cond(SEX, "EQUALS", "SNOMEDCT261665006"), {"d1": (1, 1)}),
    ("sex not male (absent excluded)", cond(SEX, "NOT_EQUALS", "SNOMEDCT248153007"), {"d1": (2, 1)}),
    ("sex in", cond(SEX, "IN", ["SNOMEDCT248153007", "SNOMEDCT248152002", "bogus"]),
     {"d1": (3, 2), "d2": (1, 1)}),
    ("sex in with unknown", cond(SEX, "IN", ["SNOMEDCT261665006"]), {"d1": (1, 1)}),
    ("sex contains", cond(SEX, "CONTAINS", "SNOMEDCT248152002"), {"d1": (2, 1)}),
    # P2's first study S2 gives 51 (dates) to S3 too, which has no birth date of its own
    ("age between (PatientAge, then dates; P2's first study)",
     cond(AGE, "BETWEEN", {"min": 45.0, "max": 51.0}), {"d1": (3, 2)}),
    ("age between open max", cond(AGE, "BETWEEN", {"min": 60, "max": None}), {"d1": (1, 1)}),
    ("age between missing min", cond(AGE, "BETWEEN", {"max": 29}), {"d2": (1, 1)}),
    ("age lower than", cond(AGE, "LOWER_THAN", 45), {"d2": (1, 1)}),
    ("age lower than range: max inclusive", cond(AGE, "LOWER_THAN", {"min": 0, "max": 45}),
     {"d1": (1, 1), "d2": (1, 1)}),
    ("age greater than", cond(AGE, "GREATER_THAN", 51.0), {"d1": (1, 1)}),
    ("age equals float", cond(AGE, "EQUALS", 61.0), {"d1": (1, 1)}),
    ("age not equals", cond(AGE, "NOT_EQUALS", 61), {"d1": (3, 2), "d2": (1, 1)}),
    ("year between", cond(YEAR, "BETWEEN", {"min": 2021, "max": 2022}), {"d1": (2, 1)}),
    ("year not equals (no date excluded)", cond(YEAR, "NOT_EQUALS", 2020.0),
     {"d1": (2, 1), "d2": (1, 1)}),
    ("modality MR", cond(MOD, "EQUALS", "RID10312"), {"d1": (2, 2), "d2": (1, 1)}),
    ("modality SPECT: none", cond(MOD, "EQUALS", "RID10334"), {}),
    ("modality contains", cond(MOD, "CONTAINS", "RID10337"), {"d1": (1, 1)}),
    ("modality not CT", cond(MOD, "NOT_EQUALS", "RID10321"), {"d1": (3, 2), "d2": (1, 1)}),
    ("body part, UI pelvis code", cond(BODY, "EQUALS", "SNOMEDCT12921003"), {"d1": (1, 1)}),
    ("body part any case", cond(BODY, "EQUALS", "SNOMEDCT76752008"), {"d1": (1, 1)}),
    ("body part unknown", cond(BODY, "EQUALS", "SNOMEDCT261665006"), {"d1": (2, 2)}),
    ("manufacturer GE family", cond(MAKER, "EQUALS", "birnlex_12833"), {"d1": (1, 1)}),
    ("manufacturer Siemens family", cond(MAKER, "IN", ["C200140"]), {"d1": (2, 2), "d2": (1, 1)}),
    ("manufacturer unknown", cond(MAKER, "EQUALS", "SNOMEDCT261665006"), {"d1": (1, 1)}),
    ("same series: MR and prostate", op("AND", cond(MOD, "EQUALS", "RID10312"),
                                        cond(BODY, "EQUALS", "SNOMEDCT41216001")),
     {"d1": (1, 1), "d2": (1, 1)}),
    ("same series: CT and prostate is none", op("AND", cond(MOD, "EQUALS", "RID10321"),
                                                cond(BODY, "EQUALS", "SNOMEDCT41216001")), {}),
    ("series-only groups bubble up (Lens shape)",
     op("OR", op("AND", op("OR", cond(MOD, "EQUALS", "RID10321")),
                 op("OR", cond(BODY, "EQUALS", "SNOMEDCT41216001")))), {}),
    ("study and series mixed", op("AND", op("OR", cond(SEX, "EQUALS", "SNOMEDCT248152002")),
                                  op("OR", cond(MOD, "EQUALS", "RID10312"))), {"d1": (1, 1)}),
    ("diagnosis prostate", cond(DIAG, "EQUALS", "SNOMEDCT399068003"), {"d1": (4, 3)}),
    ("diagnosis not prostate", cond(DIAG, "NOT_EQUALS", "SNOMEDCT399068003"), {"d2": (1, 1)}),
    ("diagnosis UI pelvis cancer: none", cond(DIAG, "EQUALS", "SNOMEDCT363484005"), {}),
    ("unknown key is false", cond("EUCAIM_Hyper-Ontology_V1.0.CLIN1037294", "EQUALS", "x"), {}),
    ("unknown key in OR", op("OR", cond("nope", "EQUALS", "x"), cond(SEX, "EQUALS", "SNOMEDCT248153007")),
     {"d1": (1, 1), "d2": (1, 1)}),
    ("unknown value is false", cond(MOD, "EQUALS", "RID99999"), {}),
    ("wrong value type is false", cond(AGE, "BETWEEN", "old"), {}),
    ("unknown type is false", cond(SEX, "LIKE", "SNOMEDCT248153007"), {}),
    ("nested depth", op("AND", op("OR", op("AND", op("OR", cond(YEAR, "EQUALS", 2019))))), {"d2": (1, 1)}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "ast", "expected"), CASES, ids=[c[0] for c in CASES])
def test_counts(
    fed: FederationIndex, name: str, ast: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert counts(fed, ast) == expected


def test_profiles_are_whole_dataset(fed: FederationIndex) -> None:
    profiles = fed.federation_profiles(["d1", "d2", "empty"])
    assert (profiles["d1"].age_min, profiles["d1"].age_max) == (45, 61)
    assert profiles["d1"].sexes == {"M", "F", None}
    assert (profiles["d2"].age_min, profiles["d2"].age_max, profiles["d2"].sexes) == (29, 29, {"M"})
    assert profiles["empty"].age_min is None and profiles["empty"].sexes == set()


def test_counts_follow_deletes(index: Index, fed: FederationIndex) -> None:
    """Removing a series updates the series facts the search matches on."""
    from server.index.base import Scope

    index.delete(Scope("1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.1.2"))
    assert counts(fed, cond(MAKER, "EQUALS", "birnlex_12833")) == {}
    assert counts(fed, cond(MOD, "EQUALS", "RID10312"))["d1"] == (2, 2)


def test_elasticsearch_indices_of_earlier_releases_get_the_fields(
    elasticsearch_url: str, record_of: Build
) -> None:
    """An index created without the federation fields (strict mapping) is upgraded at start:
    new studies are written and searchable; reindex brings the old ones."""
    import uuid

    from elasticsearch import Elasticsearch

    from server.core.attributes import Level
    from server.index.es_mapping import FEDERATION_FIELDS, LEVEL_INDEX, mapping, settings

    es = Elasticsearch(elasticsearch_url)
    prefix = f"contract-old-{uuid.uuid4().hex[:8]}"
    try:
        for level, name in LEVEL_INDEX.items():
            old = mapping(level)
            for field in FEDERATION_FIELDS if level is Level.STUDY else ():
                old["properties"].pop(field)
            es.indices.create(index=f"{prefix}-{name}-v1", mappings=old, settings=settings(1, 0),
                              aliases={f"{prefix}-{name}": {}})  # fmt: skip
        upgraded = ElasticsearchIndex(Elasticsearch(elasticsearch_url), prefix, refresh=True)
        rec = record_of(PatientID="P9", PatientSex="F", PatientAge="033Y", Modality="MR")
        rec.dataset = "d9"
        upgraded.add_instances([rec], overwrite=False)
        fed = EsFederation(upgraded.es, upgraded.names)
        plan = parse(cond(AGE, "EQUALS", 33)).plan
        assert fed.federation_counts([(plan, ["d9"])]) == {"d9": (1, 1)}
        plan = parse(cond(MOD, "EQUALS", "RID10312")).plan
        assert fed.federation_counts([(plan, ["d9"])]) == {"d9": (1, 1)}
        upgraded.close()
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{prefix}-*")
