"""``imaging-gateway studies list|delete``: one dataset's studies, for its administrators.

Real CLI processes on a data dir holding two datasets (the Makefile's ES pass reruns
this module on Elasticsearch). A study of another dataset is refused with the same
words as one that does not exist; a deletion removes index rows and blobs as
``DELETE /studies/{uid}`` does, and every run is audited.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pydicom
import pytest

from server.security.audit import tail
from server.synthetic import write_cohort
from tests.live import LiveServer, run_cli


@dataclass
class Holding:
    live: LiveServer
    studies: dict[str, set[str]]  # dataset -> study UIDs
    instances: dict[str, int]  # study UID -> instances


def _studies_of(files: list[Path]) -> tuple[set[str], dict[str, int]]:
    counts: dict[str, int] = {}
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        counts[uid] = counts.get(uid, 0) + 1
    return set(counts), counts


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def holding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Holding]:
    root = tmp_path_factory.mktemp("studies-cli")
    live = LiveServer(root / "data")
    studies: dict[str, set[str]] = {}
    instances: dict[str, int] = {}
    for n, dataset in enumerate(("ds-a", "ds-b")):
        _ok(live.cli("dataset", "create", dataset, "--title", f"T {dataset}",
                     "--cancer-type", "lung", "--deidentify", "none"))  # fmt: skip
        files = write_cohort(root / dataset, patients=3 - n, series_per_study=2,
                             instances_per_series=2, rows=16, columns=16, seed=40 + n)  # fmt: skip
        _ok(live.cli("import", "--quiet", "--dataset", dataset, str(root / dataset)))
        studies[dataset], counts = _studies_of(files)
        instances.update(counts)
    yield Holding(live, studies, instances)
    live.stop()


def _listed(live: LiveServer, *args: str) -> list[dict[str, object]]:
    done = _ok(live.cli("studies", "list", "--json", *args))
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def _blobs(live: LiveServer) -> int:
    return sum(1 for p in (live.data_dir / "blobs").rglob("*") if p.is_file())


def test_list_shows_only_the_datasets_studies_with_counts(holding: Holding) -> None:
    rows = _listed(holding.live, "--dataset", "ds-a")
    assert {r["studyInstanceUID"] for r in rows} == holding.studies["ds-a"]
    for r in rows:
        assert r["series"] == 2 and r["instances"] == holding.instances[str(r["studyInstanceUID"])]
        assert r["modalities"] and r["patientID"] and len(str(r["studyDate"])) == 8
    table = _ok(holding.live.cli("studies", "list", "--dataset", "ds-b")).stdout.splitlines()
    assert {line.split("\t")[0] for line in table} == holding.studies["ds-b"]
    assert all(len(line.split("\t")) == 6 for line in table)


def test_list_pages_with_limit_and_offset(holding: Holding) -> None:
    first = holding.live.cli("studies", "list", "--dataset", "ds-a", "--limit", "2")
    assert len(_ok(first).stdout.splitlines()) == 2 and "more: --offset 2" in first.stderr
    rest = _listed(holding.live, "--dataset", "ds-a", "--limit", "2", "--offset", "2")
    seen = {line.split("\t")[0] for line in first.stdout.splitlines()}
    assert seen | {str(r["studyInstanceUID"]) for r in rest} == holding.studies["ds-a"]


def test_unknown_dataset_is_a_clear_error(holding: Holding) -> None:
    done = holding.live.cli("studies", "list", "--dataset", "no-such")
    assert done.returncode == 1 and "dataset no-such is not known" in done.stderr
    assert "Traceback" not in done.stderr


def test_delete_of_another_datasets_study_says_what_a_missing_one_says(holding: Holding) -> None:
    other = sorted(holding.studies["ds-a"])[0]
    blobs = _blobs(holding.live)
    foreign = holding.live.cli("studies", "delete", "--dataset", "ds-b", "--yes", other)
    missing = holding.live.cli("studies", "delete", "--dataset", "ds-b", "--yes", "1.2.3.4")
    assert foreign.returncode == missing.returncode == 1
    assert foreign.stderr.replace(other, "UID") == missing.stderr.replace("1.2.3.4", "UID")
    events = [e for _, e in tail(holding.live.data_dir / "audit.sqlite", limit=2)]
    assert [e["outcome"] for e in events] == ["4", "4"], events
    assert other in {str(r["studyInstanceUID"]) for r in _listed(holding.live, "--dataset", "ds-a")}
    assert _blobs(holding.live) == blobs


def test_delete_asks_first_then_removes_rows_and_blobs_and_is_audited(holding: Holding) -> None:
    target = sorted(holding.studies["ds-b"])[0]
    blobs = _blobs(holding.live)
    live = holding.live
    declined = run_cli(["studies", "delete", "--dataset", "ds-b", target], live.env(), input="n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert target in {str(r["studyInstanceUID"]) for r in _listed(live, "--dataset", "ds-b")}
    done = run_cli(["studies", "delete", "--dataset", "ds-b", target], live.env(), input="y\n")
    assert done.returncode == 0, done.stderr
    assert f"deleted {target}: {holding.instances[target]} instance(s)" in done.stdout
    left = {str(r["studyInstanceUID"]) for r in _listed(live, "--dataset", "ds-b")}
    assert left == holding.studies["ds-b"] - {target}
    assert _blobs(live) == blobs - holding.instances[target]
    events = [e for _, e in tail(live.data_dir / "audit.sqlite", limit=3)]
    deleted = [
        e for e in events if any(x.get("name") == f"study:{target}" for x in e.get("entity", []))
    ]
    assert deleted and deleted[-1]["outcome"] == "0"
    assert _ok(live.cli("check")).returncode == 0  # no orphan blob, no dangling row
    holding.studies["ds-b"].discard(target)
