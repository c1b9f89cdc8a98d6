"""Pseudonymous Patient ids over HTTP: keyed with the installation secret, stable across
restarts, different between installations, and no dictionary of Patient IDs reverses them."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.fhir.conftest import fhir_client
from tests.helpers import cohort, part10, stow
from tests.live import LiveServer

PATIENT_ID, ISSUER = "PAT-DICT-0042", "SYNTHETIC"


def _instances() -> list[pydicom.Dataset]:
    instances = cohort(instances_per_series=1)
    for ds in instances:
        ds.PatientID, ds.IssuerOfPatientID = PATIENT_ID, ISSUER
    return instances


def _patient_ids(live: LiveServer) -> set[str]:
    with fhir_client(live) as c:
        found = c.get("Patient", params={"identifier": PATIENT_ID}).json()
        studies = c.get("ImagingStudy").json()
    ids = {e["resource"]["id"] for e in found.get("entry", [])}
    subjects = {e["resource"]["subject"]["reference"] for e in studies.get("entry", [])}
    assert subjects == {f"Patient/{i}" for i in ids}, (ids, subjects)
    return ids


def _installation(root: Path) -> LiveServer:
    root.mkdir(parents=True, exist_ok=True)
    live = LiveServer(root / "data").start()
    assert stow(live, [part10(ds) for ds in _instances()]).status_code == 200
    return live


def _plain_hashes() -> set[str]:
    out = set()
    for text in (PATIENT_ID, f"{ISSUER}|{PATIENT_ID}", f"{PATIENT_ID}|{ISSUER}",
                 f"{ISSUER}{PATIENT_ID}", f"|{PATIENT_ID}", f"{ISSUER}^{PATIENT_ID}"):  # fmt: skip
        for name in ("sha256", "sha1", "md5", "sha512", "sha224", "blake2b", "sha3_256"):
            out.add(hashlib.new(name, text.encode()).hexdigest())
    return out


def test_patient_ids_are_keyed_stable_and_per_installation(tmp_path: Path) -> None:
    first = _installation(tmp_path / "one")
    try:
        (pid,) = _patient_ids(first)
        digest = pid.removeprefix("p-")
        assert not any(digest in h for h in _plain_hashes()), "a plain hash of the Patient ID"
        secret = first.data_dir / "keys" / "installation-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        first.stop()
        first.start()
        assert _patient_ids(first) == {pid}  # stable across restarts
    finally:
        first.stop()
    second = _installation(tmp_path / "two")
    try:
        (other,) = _patient_ids(second)
        assert other != pid  # another installation, another secret, another id
    finally:
        second.stop()


@pytest.mark.skipif(
    bool(os.environ.get("GATEWAY_TEST_ES_URL")),
    reason="the embedded index is rekeyed at start; Elasticsearch needs `reindex`",
)
def test_an_index_with_unkeyed_ids_is_rekeyed_at_start(tmp_path: Path) -> None:
    """Upgrade from plain-hash ids: the embedded index recomputes every study's Patient id."""
    live = _installation(tmp_path)
    try:
        (pid,) = _patient_ids(live)
        live.stop()
        plain = "p-" + hashlib.sha256(f"{ISSUER}|{PATIENT_ID}".encode()).hexdigest()[:40]
        with sqlite3.connect(live.data_dir / "index.sqlite") as db:  # as an older release left it
            db.execute("UPDATE study SET patient_key = ?", (plain,))
            db.execute("DROP TABLE IF EXISTS patient_key_state")
        live.start()
        assert _patient_ids(live) == {pid}
        with fhir_client(live) as c:
            assert c.get(f"Patient/{plain}").status_code == 404
            assert c.get(f"Patient/{pid}").status_code == 200
        assert httpx.get(f"{live.url}/healthz").status_code == 200
    finally:
        live.stop()
