"""``imaging-gateway import``: a folder through the STOW pipeline, with progress and a summary."""

from __future__ import annotations

from pathlib import Path

import httpx

from server.synthetic import write_cohort
from tests.live import LiveServer


def test_import_folder_recursively_reports_stored_and_failed(tmp_path: Path) -> None:
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
    live = LiveServer(tmp_path / "data")
    result = live.cli("import", str(folder))
    assert result.returncode == 1  # one file failed
    assert f"stored {len(files)}, failed 1" in result.stdout
    assert "notes.txt" in result.stdout
    assert "file" in result.stderr  # tqdm progress bar
    again = live.cli("import", "--quiet", str(folder / "nested"))
    assert again.returncode == 0 and f"stored {len(files)}, failed 0" in again.stdout  # idempotent

    live.start()
    try:
        studies = httpx.get(f"{live.dicomweb}/studies").json()
        assert len(studies) == 2
        assert sum(s["00201208"]["Value"][0] for s in studies) == len(files)
    finally:
        live.stop()
    assert live.cli("check").returncode == 0
