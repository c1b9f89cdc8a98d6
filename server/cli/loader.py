"""Feed files from disk (import) or generated datasets (demo) through the ingest pipeline.

The pipeline de-identifies every file by the dataset's policy before storing it (the
files on disk are copied into the spool, never changed). Each import batch is audited
like a STOW request, with the de-identification record of every stored instance.

Files that are not DICOM Part 10 (no ``DICM`` prefix after the preamble) and DICOMDIR
files (Media Storage Directory Storage, PS3.10 8.6) are skipped and counted, not
failures. Instances already stored with the same content are counted apart from new
ones; with ``replace`` (``import --replace``) an instance stored with other content
under the same SOP Instance UID is replaced (a correction), and counted as replaced.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pydicom.filereader
from tqdm import tqdm

from server.app import Gateway
from server.cli.admin_audit import cli_audit
from server.core.stow import PartOutcome, deidentified
from server.services.ingest import IngestItem

BATCH = 64
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (DICOMDIR)
_EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
DEMO_DATASET: dict[str, Any] = {
    "resourceType": "ResearchStudy",
    "id": "demo",
    "meta": {"profile": [f"{_EXT}/dataset-researchstudy"]},
    "title": "Demo cohort (synthetic)",
    "status": "active",
    "description": "A small generated cohort so that a first query returns studies. Not patient data.",
    "condition": [
        {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}
        for code, display in (
            ("254837009", "Malignant neoplasm of breast"),
            ("363358000", "Malignant neoplasm of lung"),
            ("399068003", "Malignant neoplasm of prostate"),
        )
    ],
    "extension": [
        {"url": f"{_EXT}/dataset-access-rights", "valueCode": "PUBLIC"},
        {"url": f"{_EXT}/dataset-access-condition", "valueCode": "download"},
    ],
}


@dataclass
class ImportSummary:
    stored: int = 0  # new instances
    present: int = 0  # already stored with the same content (nothing changed)
    replaced: int = 0  # corrections: new content under a SOP Instance UID already stored
    failed: int = 0
    skipped_dicomdir: int = 0
    skipped_not_dicom: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the command prints."""
        return (
            f"stored {self.stored} new, {self.present} already present, {self.replaced} "
            f"replaced, failed {self.failed}; skipped {self.skipped_dicomdir} DICOMDIR, "
            f"{self.skipped_not_dicom} not DICOM"
        )


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file())
        elif path.is_file():
            yield path


def file_kind(path: Path) -> str:
    """``dicom``, ``dicomdir`` or ``other`` (not DICOM Part 10: no DICM after the preamble)."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
        if len(head) < 132 or head[128:] != b"DICM":
            return "other"
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # unreadable File Meta: the pipeline refuses it with the reason
        return "dicom"
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")).strip()
    return "dicomdir" if sop_class == MEDIA_DIRECTORY else "dicom"


def _sort(files: list[Path], summary: ImportSummary) -> list[Path]:
    """The DICOM files among ``files``; the others counted as skipped."""
    out = []
    for path in files:
        kind = file_kind(path)
        if kind == "dicomdir":
            summary.skipped_dicomdir += 1
        elif kind == "other":
            summary.skipped_not_dicom += 1
        else:
            out.append(path)
    return out


def _spool_copy(source: Path, spool: Path, n: int) -> IngestItem:
    target = spool / f"import-{n:06d}"
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
    return IngestItem(target, digest.hexdigest())


def import_paths(
    gateway: Gateway,
    paths: list[Path],
    *,
    progress: bool = True,
    dataset: str | None = None,
    replace: bool = False,
) -> ImportSummary:
    """Import every file under ``paths`` (recursively), in batches, with a progress bar."""
    summary = ImportSummary()
    files = _sort(list(iter_files(paths)), summary)
    bar = tqdm(total=len(files), unit="file", disable=not progress, desc="import")
    for start in range(0, len(files), BATCH):
        batch = files[start : start + BATCH]
        spool = gateway.journal.spool_dir()
        try:
            items = [_spool_copy(f, spool, n) for n, f in enumerate(batch)]
            outcomes = gateway.ingest.store_instances(items, dataset=dataset, replace=replace)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        _audit(gateway, outcomes, dataset)
        _tally(summary, batch, outcomes)
        bar.update(len(batch))
        bar.set_postfix(stored=summary.stored, failed=summary.failed)
    bar.close()
    return summary


def _audit(gateway: Gateway, outcomes: list[PartOutcome], dataset: str | None) -> None:
    target = dataset or gateway.settings.default_dataset
    stored = sum(o.stored for o in outcomes)
    replaced = tuple(f"replaced:{o.sop_uid}" for o in outcomes if o.added == "replaced")
    cli_audit(gateway, "import", 200 if stored == len(outcomes) else (202 if stored else 409),
              action="store", datasets=(target,) if target else (), entities=replaced,
              deidentified=deidentified(outcomes))  # fmt: skip


def _tally(summary: ImportSummary, files: list[Path], outcomes: list[PartOutcome]) -> None:
    for path, outcome in zip(files, outcomes, strict=True):
        if outcome.added == "identical":
            summary.present += 1
        elif outcome.added == "replaced":
            summary.replaced += 1
        elif outcome.stored:
            summary.stored += 1
        else:
            summary.failed += 1
            reason = f"0x{outcome.failure or 0:04X} {outcome.message.split(':')[0]}"
            summary.reasons[reason] += 1
            summary.failures.append((str(path), outcome.message))


def load_demo(gateway: Gateway, *, patients: int = 6) -> int:
    """Store a small generated cohort if the index is empty; returns instances stored."""
    from server.synthetic import generate_cohort, to_part10_bytes

    if gateway.index.counts()["instance"]:
        return 0
    # through the FHIR write path, so the dataset gets (and shows) its de-identification
    # policy like any other dataset
    gateway.fhir_write.update("ResearchStudy", str(DEMO_DATASET["id"]), orjson.dumps(DEMO_DATASET))
    stored = 0
    datasets = list(
        generate_cohort(
            patients=patients,
            series_per_study=2,
            instances_per_series=24,
            rows=128,
            columns=128,
            seed=2026,
        )
    )
    for start in range(0, len(datasets), BATCH):
        spool = gateway.journal.spool_dir()
        try:
            items = []
            for n, ds in enumerate(datasets[start : start + BATCH]):
                data = to_part10_bytes(ds)
                target = spool / f"demo-{n:06d}"
                target.write_bytes(data)
                items.append(IngestItem(target, hashlib.sha256(data).hexdigest()))
            outcomes = gateway.ingest.store_instances(items, dataset="demo")
            stored += sum(o.stored for o in outcomes)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
    return stored
