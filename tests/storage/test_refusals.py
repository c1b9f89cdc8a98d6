"""A refused or failed write never changes stored data (every refusal class, both backends).

Each case stores an original in dataset A, then sends a write that must be refused,
and proves the original is still served byte-for-byte (and rendered), no blob was
added or removed, and ``check`` finds nothing to repair.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.helpers import cohort, part10, seq, value
from tests.live import LiveServer
from tests.storage.conftest import (
    A,
    B,
    blob_files,
    check_clean,
    intact,
    raw,
    stow_into,
    with_datasets,
)

FAILED, REASON = "00081198", "00081197"


def _same_bytes_other_dataset(original: pydicom.Dataset) -> tuple[str, pydicom.Dataset]:
    return B, original  # the exact bytes: same content-derived name as the stored blob


def _same_sop_other_content(original: pydicom.Dataset) -> tuple[str, pydicom.Dataset]:
    changed = copy.deepcopy(original)
    changed.PatientName = "Other^Content"
    return A, changed


def _same_sop_other_content_other_dataset(original: pydicom.Dataset) -> tuple[str, pydicom.Dataset]:
    return B, _same_sop_other_content(original)[1]


def _new_instance_in_study_of_other_dataset(
    original: pydicom.Dataset,
) -> tuple[str, pydicom.Dataset]:
    other = copy.deepcopy(original)
    other.SOPInstanceUID = generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    return B, other


def _series_of_another_study(original: pydicom.Dataset) -> tuple[str, pydicom.Dataset]:
    other = _new_instance_in_study_of_other_dataset(original)[1]
    other.StudyInstanceUID = generate_uid()
    return A, other


REFUSALS: dict[str, Callable[[pydicom.Dataset], tuple[str, pydicom.Dataset]]] = {
    "same bytes into another dataset": _same_bytes_other_dataset,
    "same SOP UID, other content": _same_sop_other_content,
    "same SOP UID, other content, other dataset": _same_sop_other_content_other_dataset,
    "new instance in a study of another dataset": _new_instance_in_study_of_other_dataset,
    "series UID of another study": _series_of_another_study,
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_write_leaves_the_stored_instance_intact(
    two_datasets: LiveServer, case: str
) -> None:
    live = two_datasets
    original = cohort(instances_per_series=1)[0]
    assert stow_into(live, A, [part10(original)]).status_code == 200
    before = blob_files(live.data_dir)
    dataset, attempt = REFUSALS[case](original)
    refused = stow_into(live, dataset, [part10(attempt)])
    assert refused.status_code == 409, refused.text
    assert value(seq(refused.json(), FAILED)[0], REASON) == 0xA900
    intact(live, original)
    assert blob_files(live.data_dir) == before
    check_clean(live)


def test_an_identical_resend_changes_nothing(two_datasets: LiveServer) -> None:
    live = two_datasets
    original = cohort(instances_per_series=1)[0]
    assert stow_into(live, A, [part10(original)]).status_code == 200
    before = blob_files(live.data_dir)
    assert stow_into(live, A, [part10(original)]).status_code == 200
    intact(live, original)
    assert blob_files(live.data_dir) == before
    check_clean(live)


def test_delete_removes_its_blobs_only(two_datasets: LiveServer) -> None:
    live = two_datasets
    kept, doomed = cohort(instances_per_series=2)
    assert stow_into(live, A, [part10(kept), part10(doomed)]).status_code == 200
    before = blob_files(live.data_dir)
    url = (f"{live.dicomweb}/studies/{doomed.StudyInstanceUID}/series/"
           f"{doomed.SeriesInstanceUID}/instances/{doomed.SOPInstanceUID}")  # fmt: skip
    assert httpx.delete(url).status_code == 200
    assert raw(live, doomed) is None
    intact(live, kept)
    assert len(blob_files(live.data_dir)) == len(before) - 1
    check_clean(live)


@pytest.fixture
def overwriting(tmp_path: Path) -> Iterator[LiveServer]:
    env = {"GATEWAY_STOW__DUPLICATE_POLICY": "overwrite"}
    live = with_datasets(LiveServer(tmp_path / "data", extra_env=env)).start()
    yield live
    live.stop()


def test_overwrite_replaces_and_a_refused_overwrite_keeps_the_original(
    overwriting: LiveServer,
) -> None:
    live = overwriting
    original = cohort(instances_per_series=1)[0]
    assert stow_into(live, A, [part10(original)]).status_code == 200
    newer = _same_sop_other_content(original)[1]
    assert stow_into(live, A, [part10(newer)]).status_code == 200
    intact(live, newer)
    assert len(blob_files(live.data_dir)) == 1  # the replaced blob is gone
    # B holds a study; an overwrite of A's instance that moves it into B's study is refused
    # and must not have removed A's row before it was refused.
    holder = cohort(instances_per_series=1)[0]
    assert stow_into(live, B, [part10(holder)]).status_code == 200
    moved = copy.deepcopy(original)
    moved.StudyInstanceUID = holder.StudyInstanceUID
    moved.PatientName = "Moved^Away"
    assert stow_into(live, A, [part10(moved)]).status_code == 409
    intact(live, newer)
    assert len(blob_files(live.data_dir)) == 2
    check_clean(live)


def test_a_failed_index_write_stores_nothing_and_damages_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    live = with_datasets(LiveServer(data_dir)).start()
    original = cohort(instances_per_series=1)[0]
    try:
        assert stow_into(live, A, [part10(original)]).status_code == 200
    finally:
        live.stop()
    failing = LiveServer(data_dir, extra_env={"GATEWAY_FAILPOINT": "index_write_fails"}).start()
    try:
        again = [part10(original), part10(cohort(instances_per_series=1)[0])]
        answer = stow_into(failing, A, again)
        assert answer.status_code == 409, answer.text
        assert {value(i, REASON) for i in seq(answer.json(), FAILED)} == {0x0110}
        intact(failing, original)
        assert len(blob_files(data_dir)) == 1
        check_clean(failing)
    finally:
        failing.stop()
