"""What another process commits to the index is retrieved at once, never a remembered answer.

The SQLite index remembers instance lists per reader until any commit (``PRAGMA
data_version``, server/index/sqlite.py). Two gateways on one data directory: one retrieves
a series many times (every worker thread remembers it), the other adds and deletes
instances; the first's very next answer must show each change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ENV = {"GATEWAY_WADO__BODY_CACHE_MB": "0"}  # the index's answers alone, no kept bodies


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    data = tmp_path / "data"
    reader = LiveServer(data, extra_env=ENV).start()
    writer = LiveServer(data, extra_env=ENV, name="writer").start()
    try:
        yield reader, writer
    finally:
        writer.stop()
        reader.stop()


def _sops(live: LiveServer, path: str) -> list[str]:
    answer = httpx.get(f"{live.dicomweb}{path}", headers={"Accept": ANY}, timeout=60)
    if answer.status_code == 404:
        return []
    assert answer.status_code == 200, answer.text[:300]
    found = re.findall(rb"\x08\x00\x18\x00UI..([0-9.]+)", answer.content, re.S)
    return [uid.rstrip(b"\x00").decode() for uid in found]


def test_instances_added_or_deleted_by_another_process_show_in_the_next_answer(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    reader, writer = pair
    sets = cohort(instances_per_series=3)
    assert stow(writer, [part10(ds) for ds in sets]).status_code == 200
    first = sets[0]
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    paths = [f"/studies/{study}", f"/studies/{study}/series/{series}",
             f"/studies/{study}/series/{series}/instances/{first.SOPInstanceUID}"]  # fmt: skip
    sops = [str(ds.SOPInstanceUID) for ds in sets]
    for _ in range(12):  # through several worker threads: each remembers its answers
        assert _sops(reader, paths[1]) == sops
        assert _sops(reader, paths[0]) == sops
        assert _sops(reader, paths[2]) == sops[:1]
    more = cohort(instances_per_series=1)[0]
    more.StudyInstanceUID, more.SeriesInstanceUID, more.InstanceNumber = study, series, 9
    assert stow(writer, [part10(more)]).status_code == 200
    for _ in range(6):
        assert _sops(reader, paths[1]) == [*sops, str(more.SOPInstanceUID)]
    gone = httpx.delete(f"{writer.dicomweb}{paths[2]}", timeout=30)
    assert gone.status_code in (200, 202, 204), gone.text
    for _ in range(6):
        assert _sops(reader, paths[2]) == []
        assert _sops(reader, paths[0]) == [*sops[1:], str(more.SOPInstanceUID)]
