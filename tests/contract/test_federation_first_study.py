"""Contract: "age at diagnosis" and "year of diagnosis" are the patient's FIRST study's, on
every index backend.

A patient's first study in a dataset is the one with the earliest StudyDate (a tie: the
smallest Study Instance UID; studies without a date come last). Every study of the patient
matches an age or year condition iff that first study's value does. The values follow
writes: a study added before the others, a replaced instance, a deleted first study; and
indexes written before the values existed get them when the gateway starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from server.core.federation.plan import resolve
from server.core.federation.query import parse
from server.core.records import InstanceRecord
from server.index.base import FederationIndex, Index, Scope
from server.index.elasticsearch import ElasticsearchIndex
from tests.contract.test_federation import federation_of

Build = Callable[..., InstanceRecord]
AGE, YEAR = "SNOMEDCT423493009", "SNOMEDCT432213005"
ROOT = "1.2.826.0.1.3680043.10.2"
# (dataset, patient, study uid suffix, study attributes); suffixes of one patient have equal
# length, so the smallest UID is the smallest suffix
STUDIES: list[tuple[str, str, str, dict[str, str]]] = [
    # P1: studies at 60 (2010), 65 (2015), and one undated at 70: all are "60, 2010"
    ("h1", "P1", "1.2", {"StudyDate": "20150101", "PatientAge": "065Y"}),
    ("h1", "P1", "1.1", {"StudyDate": "20100101", "PatientAge": "060Y"}),
    ("h1", "P1", "1.0", {"PatientAge": "070Y"}),  # smallest UID, but no date: last
    # P2: two studies on one day: the smaller UID's age (40) wins
    ("h1", "P2", "2.2", {"StudyDate": "20200101", "PatientAge": "041Y"}),
    ("h1", "P2", "2.1", {"StudyDate": "20200101", "PatientAge": "040Y"}),
    # P3: no dates at all: the smallest UID (55); no year
    ("h1", "P3", "3.2", {"PatientAge": "050Y"}),
    ("h1", "P3", "3.1", {"PatientAge": "055Y"}),
    # P4 de-identified: birth date removed, PatientAge kept (70 at 2019)
    ("h1", "P4", "4.1", {"StudyDate": "20190101", "PatientAge": "070Y"}),
    ("h1", "P4", "4.2", {"StudyDate": "20210101", "PatientAge": "072Y"}),
    # P5: no PatientAge, birth date coarsened to January 1st: 68 at the first study
    ("h1", "P5", "5.1", {"StudyDate": "20180615", "PatientBirthDate": "19500101"}),
    ("h1", "P5", "5.2", {"StudyDate": "20200615", "PatientBirthDate": "19500101"}),
    # P6 in two datasets: the first study is per dataset (50 in h1, 45 in h2)
    ("h1", "P6", "6.1", {"StudyDate": "20150101", "PatientAge": "050Y"}),
    ("h2", "P6", "6.2", {"StudyDate": "20100101", "PatientAge": "045Y"}),
    # P7: the first study has a date but no age: the patient has no age (later ones don't count)
    ("h2", "P7", "7.1", {"StudyDate": "20000101"}),
    ("h2", "P7", "7.2", {"StudyDate": "20050101", "PatientAge": "044Y"}),
]


def uid(suffix: str) -> str:
    return f"{ROOT}.{suffix}"


def record(
    record_of: Build, dataset: str, patient: str, suffix: str, **attrs: str
) -> InstanceRecord:
    rec = record_of(StudyInstanceUID=uid(suffix), SeriesInstanceUID=f"{uid(suffix)}.1",
                    PatientID=patient, Modality="MR", **attrs)  # fmt: skip
    rec.dataset = dataset
    return rec


@pytest.fixture
def fed(index: Index, record_of: Build) -> FederationIndex:
    # one record per write, in the listed order (later studies first for P1, P2, P3)
    for dataset, patient, suffix, attrs in STUDIES:
        index.add_instances([record(record_of, dataset, patient, suffix, **attrs)], overwrite=False)
    return federation_of(index)


def cond(key: str, kind: str, value: Any) -> dict[str, Any]:
    return {"key": key, "type": kind, "value": value}


def counts(fed: FederationIndex, ast: dict[str, Any]) -> dict[str, tuple[int, int]]:
    plan = resolve(parse(ast).plan, frozenset())
    return fed.federation_counts([(plan, ["h1", "h2"])])


def age(low: float, high: float) -> dict[str, Any]:
    return cond(AGE, "BETWEEN", {"min": low, "max": high})


CASES: list[tuple[str, dict[str, Any], dict[str, tuple[int, int]]]] = [
    ("a later study's age does not match", age(64, 66), {}),
    ("every study of P1 has the first study's age", age(60, 60), {"h1": (3, 1)}),
    ("an undated study's age is not the first", age(70, 70), {"h1": (2, 1)}),  # P4 only
    ("tie on the date: smaller UID", cond(AGE, "EQUALS", 40), {"h1": (2, 1)}),
    ("tie: the larger UID's age matches nothing", cond(AGE, "EQUALS", 41), {}),
    ("no dates: smallest UID", cond(AGE, "EQUALS", 55.0), {"h1": (2, 1)}),
    ("no dates: the other age matches nothing", cond(AGE, "EQUALS", 50), {"h1": (1, 1)}),  # P6
    ("de-identified: PatientAge only", cond(AGE, "GREATER_THAN", 71), {}),
    ("coarsened birth date, first study", cond(AGE, "EQUALS", 68), {"h1": (2, 1)}),
    ("first study per dataset", cond(AGE, "EQUALS", 45), {"h2": (1, 1)}),
    ("first study without an age: no age", cond(AGE, "EQUALS", 44), {}),
    (
        "a first study without an age gives none",
        cond(AGE, "NOT_EQUALS", 1),
        {"h1": (12, 6), "h2": (1, 1)},
    ),
    ("year of the first study", cond(YEAR, "EQUALS", 2010), {"h1": (3, 1), "h2": (1, 1)}),
    ("a later study's year does not match", cond(YEAR, "EQUALS", 2015), {"h1": (1, 1)}),  # P6
    (
        "tie: the shared year; P5's later 2020 does not count",
        cond(YEAR, "EQUALS", 2020),
        {"h1": (2, 1)},
    ),
    ("an undated patient has no year", cond(YEAR, "NOT_EQUALS", 1), {"h1": (10, 5), "h2": (3, 2)}),
]


@pytest.mark.parametrize(("name", "ast", "expected"), CASES, ids=[c[0] for c in CASES])
def test_first_study_counts(
    fed: FederationIndex, name: str, ast: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert counts(fed, ast) == expected


def test_profile_age_range_is_of_first_studies(fed: FederationIndex) -> None:
    profiles = fed.federation_profiles(["h1", "h2"])
    assert (profiles["h1"].age_min, profiles["h1"].age_max) == (40, 70)  # not 72 (P4's later)
    assert (profiles["h2"].age_min, profiles["h2"].age_max) == (45, 45)  # not 44 (P7's later)


def test_deleting_the_first_study_makes_the_next_one_first(
    index: Index, fed: FederationIndex
) -> None:
    index.delete(Scope(uid("1.1")))
    assert counts(fed, age(64, 66)) == {"h1": (2, 1)}  # 65 (2015), given to the undated study
    assert counts(fed, age(60, 60)) == {}
    assert counts(fed, cond(YEAR, "EQUALS", 2015)) == {"h1": (3, 2)}  # P1's two and P6
    index.delete(Scope(uid("1.2")))  # only the undated study is left: it is first
    assert counts(fed, age(70, 70)) == {"h1": (3, 2)}
    assert counts(fed, cond(YEAR, "EQUALS", 2015)) == {"h1": (1, 1)}


def test_an_earlier_study_added_later_becomes_first(
    index: Index, record_of: Build, fed: FederationIndex
) -> None:
    rec = record(record_of, "h1", "P1", "1.3", StudyDate="20050101", PatientAge="055Y")
    index.add_instances([rec], overwrite=False)
    assert counts(fed, age(60, 60)) == {}
    assert counts(fed, age(55, 55)) == {"h1": (6, 2)}  # P1's four and P3's two
    assert counts(fed, cond(YEAR, "EQUALS", 2005)) == {"h1": (4, 1)}


def test_studies_of_one_write_share_their_first_study(index: Index, record_of: Build) -> None:
    """Several studies of a new patient in one batch: the batch's earliest is first."""
    recs = [record(record_of, "h3", "P8", "8.2", StudyDate="20120101", PatientAge="032Y"),
            record(record_of, "h3", "P8", "8.1", StudyDate="20110101", PatientAge="031Y")]  # fmt: skip
    index.add_instances(recs, overwrite=False)
    plan = resolve(parse(cond(AGE, "EQUALS", 31)).plan, frozenset())
    assert federation_of(index).federation_counts([(plan, ["h3"])]) == {"h3": (2, 1)}


def test_replacing_the_first_study_instance_updates_the_patient(
    index: Index, record_of: Build, fed: FederationIndex
) -> None:
    stored = index.instances(Scope(uid("1.1")))[0]
    new = record(record_of, "h1", "P1", "1.1", StudyDate="20100101", PatientAge="062Y",
                 SOPInstanceUID=stored.sop_uid)  # fmt: skip
    index.add_instances([new], overwrite=True)
    assert counts(fed, age(62, 62)) == {"h1": (3, 1)}
    assert counts(fed, age(60, 60)) == {}


def test_indexes_written_before_get_the_values_at_start(
    index: Index, record_of: Build, request: pytest.FixtureRequest
) -> None:
    """SQLite: an index made before the values gains the columns and triggers when opened,
    and the values of its older studies from the migration's backfill (federated search
    answers 503 until then); Elasticsearch: documents without the values are backfilled
    at start."""
    if isinstance(index, ElasticsearchIndex):
        for dataset, patient, suffix, attrs in STUDIES:
            index.add_instances([record(record_of, dataset, patient, suffix, **attrs)], overwrite=False)  # fmt: skip
        from elasticsearch import Elasticsearch

        blank = {"fed_first_age": None, "fed_first_year": None, "fed_first_study": None}
        for _, _, suffix, _ in STUDIES:  # as an earlier release wrote them
            index.es.update(
                index=index.first_studies.index, id=uid(suffix), doc=blank, refresh=True
            )
        assert counts(federation_of(index), age(60, 60)) == {}
        prefix = index.first_studies.index.removesuffix("-studies")
        url = request.getfixturevalue("elasticsearch_url")
        reopened = ElasticsearchIndex(Elasticsearch(url), prefix, refresh=True)  # starts
        fed = federation_of(reopened)
    else:
        from server.errors import ServiceUnavailable
        from server.index.federation_sql import FIRST_STUDY_MIGRATION, SqlFederation
        from server.index.sqlite import SqliteIndex
        from tests.ops.test_index_migrations import as_made_before_first_study

        assert isinstance(index, SqliteIndex)
        for dataset, patient, suffix, attrs in STUDIES:
            index.add_instances([record(record_of, dataset, patient, suffix, **attrs)], overwrite=False)  # fmt: skip
        index.close()
        as_made_before_first_study(index.path)  # as an earlier release wrote them
        upgraded = SqliteIndex(index.path)  # starts: columns and triggers, no backfill yet
        assert upgraded.migrations.pending() == [FIRST_STUDY_MIGRATION]
        waiting = SqlFederation(
            upgraded.db, ready=lambda: upgraded.migrations.done(FIRST_STUDY_MIGRATION)
        )
        with pytest.raises(ServiceUnavailable):
            counts(waiting, age(60, 60))
        assert upgraded.migrations.run_backfills() == len(STUDIES)
        assert upgraded.migrations.pending() == []
        request.addfinalizer(upgraded.close)
        fed = waiting
    for name, ast, expected in CASES:
        assert counts(fed, ast) == expected, name
