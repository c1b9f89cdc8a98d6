"""``imaging-gateway import``: a folder through the STOW pipeline, with progress and a summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file

from server.security.audit import tail
from server.synthetic import write_cohort
from tests.live import LiveServer


def test_import_folder_recursively_reports_new_present_and_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    files = write_cohort(
        folder / "nested",
        patients=2,
        series_per_study=1,
        instances_per_series=3,
        rows=16,
        columns=16,
        seed=77,
    )
    (folder / "notes.txt").write_text("not DICOM")
    dicomdir = get_testdata_file("DICOMDIR")
    assert dicomdir is not None
    shutil.copy(dicomdir, folder / "DICOMDIR")
    # a Part 10 file the pipeline refuses (no pixel data module it can read): a failure
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    live = LiveServer(tmp_path / "data")
    result = live.cli("import", str(folder))
    assert result.returncode == 1, result.stdout  # the broken file failed
    assert (
        f"stored {len(files)} new, 0 already present, 0 replaced, failed 1; "
        "skipped 1 DICOMDIR, 1 not DICOM"
    ) in result.stdout
    assert "broken.dcm" in result.stdout and "notes.txt" not in result.stdout
    assert "file" in result.stderr  # tqdm progress bar
    again = live.cli("import", "--quiet", str(folder / "nested"))
    assert again.returncode == 0, again.stdout
    assert f"stored 0 new, {len(files)} already present, 0 replaced, failed 0" in again.stdout

    live.start()
    try:
        studies = httpx.get(f"{live.dicomweb}/studies").json()
        assert len(studies) == 2
        assert sum(s["00201208"]["Value"][0] for s in studies) == len(files)
    finally:
        live.stop()
    assert live.cli("check").returncode == 0


def _corrected(source: Path, target: Path) -> str:
    """A copy of ``source`` with new content under the same SOP Instance UID."""
    ds = pydicom.dcmread(source)
    ds.SeriesDescription = "corrected"
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_import_replace_corrects_an_instance_and_is_audited(tmp_path: Path) -> None:
    files = write_cohort(
        tmp_path / "first", patients=1, series_per_study=1, instances_per_series=2,
        rows=16, columns=16, seed=5,
    )  # fmt: skip
    live = LiveServer(tmp_path / "data")
    assert live.cli("import", "--quiet", str(tmp_path / "first")).returncode == 0
    sop = _corrected(files[0], tmp_path / "fix" / "one.dcm")

    refused = live.cli("import", "--quiet", str(tmp_path / "fix"))
    assert refused.returncode == 1 and "failed 1" in refused.stdout  # no --replace: refused
    done = live.cli("import", "--quiet", "--replace", str(tmp_path / "fix"))
    assert done.returncode == 0, done.stdout
    assert "stored 0 new, 0 already present, 1 replaced, failed 0" in done.stdout

    live.start()
    try:
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        meta = httpx.get(f"{live.dicomweb}/studies/{study}/metadata").json()
        described = {m["00080018"]["Value"][0]: m.get("0008103E", {}).get("Value") for m in meta}
        assert described[sop] == ["corrected"] and len(described) == 2
    finally:
        live.stop()
    events = [e for _, e in tail(live.data_dir / "audit.sqlite", limit=10)]
    names = [x.get("name") for e in events for x in e.get("entity", [])]
    assert f"replaced:{sop}" in names, names
    assert live.cli("check").returncode == 0  # the replaced blob is gone, no orphan
