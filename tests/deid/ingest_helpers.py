"""Shared by the ingest tests: planted identities, datasets with policies, what a server holds."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom

from tests.helpers import cohort
from tests.live import LiveServer


@dataclass
class Planted:
    """A patient whose identifying values must never come back."""

    name: str
    patient_id: str
    datasets: list[pydicom.Dataset]

    @property
    def uids(self) -> set[str]:
        out = set()
        for ds in self.datasets:
            out |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
        return out

    @property
    def needles(self) -> list[str]:
        family = self.name.split("^")[0]
        return [family, self.patient_id, *sorted(self.uids)]

    def parts(self) -> list[bytes]:
        return [part10(ds) for ds in self.datasets]


def planted(instances: int = 2, **changes: Any) -> Planted:
    tag = uuid.uuid4().hex[:8]
    name, pid = f"Kowalski{tag}^Carla", f"PID-{tag}"
    datasets = cohort(instances_per_series=instances)
    for ds in datasets:
        ds.PatientName, ds.PatientID = name, pid
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
    return Planted(name, pid, datasets)


def part10(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def create_dataset(live: LiveServer, rid: str, *args: str) -> None:
    done = live.cli("dataset", "create", rid, "--title", f"Dataset {rid}", *args)
    assert done.returncode == 0, done.stderr


def secret(live: LiveServer, rid: str) -> str:
    done = live.cli("dataset", "secret", rid)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def eucaim_patient_id(secret_: str, patient_id: str) -> str:
    """CTP @hashptid as LETHE calls it, from its definition (not the gateway's code)."""
    text = "[" + secret_.strip() + "]" + patient_id.strip()
    return "EUCAIM-" + str(int(hashlib.md5(text.encode()).hexdigest(), 16))


def files_holding(data_dir: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every file under the data dir that holds one of the needles (bytes, UTF-8)."""
    found: dict[str, list[str]] = {}
    encoded = [(n, n.encode()) for n in needles]
    for path in data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n, b in encoded if b in data]
            if hits:
                found[str(path.relative_to(data_dir))] = hits
    return found


def spool_files(live: LiveServer) -> list[str]:
    return sorted(str(p) for p in (live.data_dir / "journal").glob("*/spool/**/*"))


def get(live: LiveServer, path: str, **params: Any) -> httpx.Response:
    accept = params.pop("accept", None)
    headers = {"Accept": accept} if accept else {}
    response = httpx.get(f"{live.url}{path}", params=params, headers=headers, timeout=60)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return response
