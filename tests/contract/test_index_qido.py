"""Index contract: QIDO matching per PS3.4 C.2.2.2, identical on every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from server.core.attributes import Level
from server.core.qido import parse_query
from server.core.records import InstanceRecord
from server.index.base import AddOutcome, Index, Scope

Build = Callable[..., InstanceRecord]


def _studies(
    index: Index, *pairs: tuple[str, str], level: Level = Level.STUDY, **kw: str
) -> list[str]:
    page = index.search(parse_query(level, list(pairs), **kw))
    key = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}[level.value]
    return sorted(row[key]["Value"][0] for row in page.rows)


@pytest.fixture
def people(index: Index, record_of: Build) -> dict[str, InstanceRecord]:
    specs = {
        "muller": dict(
            PatientName="Müller^Jürgen",
            PatientID="P-001",
            StudyDate="20190315",
            StudyTime="101500",
            Modality="CT",
            AccessionNumber="ACC1",
            StudyDescription="Lung CT",
        ),
        "mueller": dict(
            PatientName="MUELLER^Anna",
            PatientID="P-002",
            StudyDate="20200101",
            StudyTime="235959",
            Modality="MR",
            AccessionNumber="ACC2",
            StudyDescription="Brain MR",
        ),
        "garcia": dict(
            PatientName="García^José María",
            PatientID="P-003",
            StudyDate="20211231",
            StudyTime="0800",
            Modality="PT",
            AccessionNumber="ACC3",
            StudyDescription="PET [staging]",
        ),
        "smith": dict(
            PatientName="Smith^John",
            PatientID="P-004",
            StudyDate="20221010",
            StudyTime="120000",
            Modality="CT",
            AccessionNumber="ACC_4",
            StudyDescription="Chest CT 100%",
        ),
    }
    records = {name: record_of(**attrs) for name, attrs in specs.items()}
    results = index.add_instances(list(records.values()), overwrite=False)
    assert [r.outcome for r in results] == [AddOutcome.STORED] * 4
    return records


def uid(records: dict[str, InstanceRecord], *names: str) -> list[str]:
    return sorted(records[n].study_uid for n in names)


def test_single_value_matching_is_exact(index: Index, people: dict[str, InstanceRecord]) -> None:
    assert _studies(index, ("PatientID", "P-002")) == uid(people, "mueller")
    assert _studies(index, ("PatientID", "P-00")) == []
    assert _studies(index, ("00100020", "P-003")) == uid(people, "garcia")


def test_uid_list_matching(index: Index, people: dict[str, InstanceRecord]) -> None:
    value = f"{people['smith'].study_uid},{people['garcia'].study_uid}"
    assert _studies(index, ("StudyInstanceUID", value)) == uid(people, "smith", "garcia")


def test_wildcards_star_and_question_mark(index: Index, people: dict[str, InstanceRecord]) -> None:
    assert _studies(index, ("AccessionNumber", "ACC?")) == uid(
        people, "muller", "mueller", "garcia"
    )
    assert _studies(index, ("AccessionNumber", "ACC*")) == uid(people, *people)
    assert _studies(index, ("StudyDescription", "*CT*")) == uid(people, "muller", "smith")
    # characters special to SQL LIKE/GLOB are literal in DICOM
    assert _studies(index, ("StudyDescription", "PET [staging]")) == uid(people, "garcia")
    assert _studies(index, ("StudyDescription", "*100%")) == uid(people, "smith")
    assert _studies(index, ("AccessionNumber", "ACC_?")) == uid(people, "smith")


def test_person_name_matching_ignores_case(index: Index, people: dict[str, InstanceRecord]) -> None:
    assert _studies(index, ("PatientName", "smith^john")) == uid(people, "smith")
    assert _studies(index, ("PatientName", "mü*")) == uid(people, "muller")
    assert _studies(index, ("PatientName", "M*")) == uid(people, "muller", "mueller")


def test_fuzzy_matching_folds_accents_and_matches_any_component_prefix(
    index: Index, people: dict[str, InstanceRecord]
) -> None:
    fuzzy = ("fuzzymatching", "true")
    assert _studies(index, ("PatientName", "muller"), fuzzy) == uid(people, "muller")
    assert _studies(index, ("PatientName", "jose"), fuzzy) == uid(people, "garcia")
    assert _studies(index, ("PatientName", "mar"), fuzzy) == uid(people, "garcia")
    assert _studies(index, ("PatientName", "JUR"), fuzzy) == uid(people, "muller")
    assert _studies(index, ("PatientName", "gar^jo"), fuzzy) == uid(people, "garcia")
    assert _studies(index, ("PatientName", "ose"), fuzzy) == []


def test_date_ranges_closed_and_open(index: Index, people: dict[str, InstanceRecord]) -> None:
    assert _studies(index, ("StudyDate", "20200101-20211231")) == uid(people, "mueller", "garcia")
    assert _studies(index, ("StudyDate", "-20200101")) == uid(people, "muller", "mueller")
    assert _studies(index, ("StudyDate", "20211231-")) == uid(people, "garcia", "smith")
    assert _studies(index, ("StudyDate", "20190315")) == uid(people, "muller")


def test_time_ranges_respect_precision(index: Index, people: dict[str, InstanceRecord]) -> None:
    assert _studies(index, ("StudyTime", "08-12")) == uid(people, "muller", "garcia", "smith")
    assert _studies(index, ("StudyTime", "2359-")) == uid(people, "mueller")
    assert _studies(index, ("StudyTime", "10")) == uid(people, "muller")


def test_modalities_in_study_and_computed_counts(
    index: Index, people: dict[str, InstanceRecord], record_of: Build
) -> None:
    muller = people["muller"]
    extra = record_of(
        StudyInstanceUID=muller.study_uid, Modality="SEG", PatientName="Müller^Jürgen"
    )
    index.add_instances([extra], overwrite=False)
    assert _studies(index, ("ModalitiesInStudy", "SEG")) == uid(people, "muller")
    assert _studies(index, ("ModalitiesInStudy", "MR,PT")) == uid(people, "mueller", "garcia")
    rows = index.search(parse_query(Level.STUDY, [("PatientID", "P-001")])).rows
    assert rows[0]["00080061"]["Value"] == ["CT", "SEG"]
    assert rows[0]["00201206"]["Value"] == [2]
    assert rows[0]["00201208"]["Value"] == [2]


def test_series_search_matches_study_attributes(
    index: Index, people: dict[str, InstanceRecord]
) -> None:
    got = _studies(index, ("PatientID", "P-004"), ("Modality", "CT"), level=Level.SERIES)
    assert got == [people["smith"].series_uid]
    rows = index.search(parse_query(Level.SERIES, [("Modality", "CT")])).rows
    assert all(row["00201209"]["Value"] == [1] for row in rows)
    assert {row["00100020"]["Value"][0] for row in rows} == {"P-001", "P-004"}


def test_instance_search_scoped_by_study_and_series(
    index: Index, people: dict[str, InstanceRecord]
) -> None:
    rec = people["garcia"]
    got = _studies(index, level=Level.INSTANCE, study_uid=rec.study_uid, series_uid=rec.series_uid)
    assert got == [rec.sop_uid]
    assert (
        _studies(
            index,
            level=Level.INSTANCE,
            study_uid=people["smith"].study_uid,
            series_uid=rec.series_uid,
        )
        == []
    )


def test_limit_offset_and_more_results_flag(
    index: Index, people: dict[str, InstanceRecord]
) -> None:
    first = index.search(parse_query(Level.STUDY, [("limit", "3")]))
    rest = index.search(parse_query(Level.STUDY, [("limit", "3"), ("offset", "3")]))
    assert len(first.rows) == 3 and first.has_more
    assert len(rest.rows) == 1 and not rest.has_more
    seen = {r["0020000D"]["Value"][0] for r in first.rows + rest.rows}
    assert seen == {r.study_uid for r in people.values()}


def test_add_outcomes_identical_conflict_replaced(index: Index, record_of: Build) -> None:
    a = record_of(
        SOPInstanceUID="1.2.3.4.100",
        StudyInstanceUID="1.2.3.4",
        SeriesInstanceUID="1.2.3.4.1",
        PatientID="X",
    )
    same = record_of(
        SOPInstanceUID="1.2.3.4.100",
        StudyInstanceUID="1.2.3.4",
        SeriesInstanceUID="1.2.3.4.1",
        PatientID="X",
    )
    other = record_of(
        SOPInstanceUID="1.2.3.4.100",
        StudyInstanceUID="1.2.3.4",
        SeriesInstanceUID="1.2.3.4.1",
        PatientID="Y",
    )
    assert index.add_instances([a], overwrite=False)[0].outcome is AddOutcome.STORED
    assert index.add_instances([same], overwrite=False)[0].outcome is AddOutcome.IDENTICAL
    assert index.add_instances([other], overwrite=False)[0].outcome is AddOutcome.CONFLICT
    replaced = index.add_instances([other], overwrite=True)[0]
    assert replaced.outcome is AddOutcome.REPLACED and replaced.replaced_blob_key == a.blob_key
    assert index.counts() == {"study": 1, "series": 1, "instance": 1}


def test_series_cannot_move_to_another_study(index: Index, record_of: Build) -> None:
    a = record_of(StudyInstanceUID="1.2.9.1", SeriesInstanceUID="1.2.9.1.1")
    b = record_of(StudyInstanceUID="1.2.9.2", SeriesInstanceUID="1.2.9.1.1")
    assert index.add_instances([a, b], overwrite=False)[1].outcome is AddOutcome.HIERARCHY
    assert index.counts()["instance"] == 1


def test_delete_updates_counts_and_removes_empty_parents(index: Index, record_of: Build) -> None:
    recs = [
        record_of(StudyInstanceUID="1.2.8", SeriesInstanceUID=f"1.2.8.{s}", Modality=m)
        for s, m in ((1, "CT"), (1, "CT"), (2, "MR"))
    ]
    index.add_instances(recs, overwrite=False)
    removed = index.delete(Scope("1.2.8", "1.2.8.2"))
    assert [r.sop_uid for r in removed] == [recs[2].sop_uid]
    row = index.search(parse_query(Level.STUDY, [("StudyInstanceUID", "1.2.8")])).rows[0]
    assert row["00080061"]["Value"] == ["CT"]
    assert row["00201206"]["Value"] == [1] and row["00201208"]["Value"] == [2]
    index.delete(Scope("1.2.8"))
    assert index.counts() == {"study": 0, "series": 0, "instance": 0}
    assert list(index.metadata(Scope("1.2.8"))) == []


def test_metadata_is_precomputed_in_instance_order(index: Index, record_of: Build) -> None:
    recs = [
        record_of(StudyInstanceUID="1.2.7", SeriesInstanceUID="1.2.7.1", InstanceNumber=n)
        for n in (3, 1, 2)
    ]
    index.add_instances(recs, overwrite=False)
    blobs = list(index.metadata(Scope("1.2.7", "1.2.7.1")))
    import orjson

    numbers = [orjson.loads(b)["00200013"]["Value"][0] for b in blobs]
    assert numbers == [1, 2, 3]


def test_an_instance_stays_in_its_dataset_even_when_resent_identically(
    index: Index, record_of: Build
) -> None:
    first = record_of(
        SOPInstanceUID="1.2.6.1.1", StudyInstanceUID="1.2.6", SeriesInstanceUID="1.2.6.1"
    )
    first.dataset = "a"
    assert index.add_instances([first], overwrite=False)[0].outcome is AddOutcome.STORED
    again = dataclasses.replace(first, dataset="b")
    assert index.add_instances([again], overwrite=True)[0].outcome is AddOutcome.DATASET
    sibling = record_of(
        SOPInstanceUID="1.2.6.1.2", StudyInstanceUID="1.2.6", SeriesInstanceUID="1.2.6.1"
    )
    sibling.dataset = "b"
    assert index.add_instances([sibling], overwrite=False)[0].outcome is AddOutcome.DATASET
    assert index.counts()["instance"] == 1
