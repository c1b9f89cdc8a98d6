"""``imaging-gateway check``: a plan first, quarantine instead of deletion, no mass removal,
and re-indexing that puts every instance back in its dataset."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pydicom

from tests.helpers import cohort, part10, store_state
from tests.live import LiveServer
from tests.storage.conftest import (
    A,
    B,
    blob_files,
    check_clean,
    instance_url,
    raw,
    stow_into,
    with_datasets,
)


def _store(live: LiveServer, dataset: str, ds: pydicom.Dataset) -> str:
    """Store one instance; its blob key."""
    before = {p.name for p in blob_files(live.data_dir)}
    assert stow_into(live, dataset, [part10(ds)]).status_code == 200
    (key,) = {p.name for p in blob_files(live.data_dir)} - before
    return key


def _studies_per_dataset(live: LiveServer) -> dict[str, int]:
    out = live.cli("dataset", "list").stdout
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\t\S+\t(\d+) studies", out, re.M)}


def _snapshot(live: LiveServer) -> tuple[list[str], dict[str, int], list[str]]:
    quarantine = sorted(p.name for p in (live.data_dir / "quarantine").iterdir())
    return [p.name for p in blob_files(live.data_dir)], store_state(live)["counts"], quarantine


def test_check_prints_a_plan_changes_nothing_and_repair_quarantines(
    two_datasets: LiveServer,
) -> None:
    live = two_datasets
    stays, corrupt, lost, orphan = (cohort(instances_per_series=1)[0] for _ in range(4))
    _store(live, A, stays)
    corrupt_key, lost_key = _store(live, A, corrupt), _store(live, A, lost)
    orphan_key = _store(live, B, orphan)
    path = {p.name: p for p in blob_files(live.data_dir)}
    data = bytearray(path[corrupt_key].read_bytes())
    data[-1] ^= 0xFF
    path[corrupt_key].write_bytes(bytes(data))
    path[lost_key].unlink()
    kept = path[orphan_key].read_bytes()  # an instance deleted, its blob then put back
    assert httpx.delete(instance_url(live, orphan)).status_code == 200
    path[orphan_key].parent.mkdir(parents=True, exist_ok=True)
    path[orphan_key].write_bytes(kept)

    before = _snapshot(live)
    planned = live.cli("check")
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert f"quarantine blob and remove index row {corrupt_key}" in planned.stdout
    assert f"remove index row {lost_key}" in planned.stdout
    assert f"re-index blob {orphan_key}: {orphan.SOPInstanceUID} into dataset {B}" in planned.stdout
    assert _snapshot(live) == before  # the plan changed nothing

    repaired = live.cli("check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    quarantined = {p.name for p in (live.data_dir / "quarantine").iterdir()}
    assert any(n.startswith(corrupt_key) and not n.endswith(".reason") for n in quarantined)
    reason = next(live.data_dir.glob(f"quarantine/{corrupt_key}*.reason")).read_text()
    assert "does not match its hash" in reason
    assert raw(live, orphan) == part10(orphan)  # re-indexed from its blob
    assert raw(live, corrupt) is None and raw(live, lost) is None
    assert raw(live, stays) == part10(stays)
    check_clean(live)


def test_mass_removal_is_refused_and_reindexing_keeps_dataset_membership(
    live_server_factory: type[LiveServer], tmp_path: Path
) -> None:
    live = with_datasets(live_server_factory(tmp_path / "data")).start()
    in_a, in_b = cohort(instances_per_series=3), cohort(instances_per_series=2)
    assert stow_into(live, A, [part10(ds) for ds in in_a]).status_code == 200
    assert stow_into(live, B, [part10(ds) for ds in in_b]).status_code == 200
    membership = _studies_per_dataset(live)
    assert membership[A] == 1 and membership[B] == 1
    blobs, unmounted = live.data_dir / "blobs", live.data_dir / "blobs.unmounted"
    blobs.rename(unmounted)  # the volume did not mount
    blobs.mkdir()
    counts = store_state(live)["counts"]
    refused = live.cli("check", "--repair")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refusing to remove 5 of 5 index rows" in refused.stderr
    assert store_state(live)["counts"] == counts  # nothing was removed

    # Forced anyway, then the volume comes back: repair re-indexes into the same datasets.
    assert live.cli("check", "--repair", "--force").returncode == 0
    assert store_state(live)["counts"]["instance"] == 0
    shutil.rmtree(blobs)
    unmounted.rename(blobs)
    for _ in range(2):  # a second repair changes nothing
        assert live.cli("check", "--repair").returncode == 0
        assert _studies_per_dataset(live) == membership
    for ds in [*in_a, *in_b]:
        assert raw(live, ds) == part10(ds)
    check_clean(live)
