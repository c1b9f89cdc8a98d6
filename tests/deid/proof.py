"""Run the planted-PHI proof against one live gateway: store, harvest, search.

``run_proof(tmp, profile, options)`` starts a gateway whose dataset ``phi`` carries the
policy, stores the planted corpus and every pydicom test file into it over STOW-RS,
sends the planted corpus again (the duplicate path), harvests everything the gateway
serves (tests/deid/harvest.py), stops it and adds its log file. The data directory
(blobs, index, journal) is returned for a search of what was written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.deid.harvest import Harvester
from tests.deid.phi_corpus import (
    Corpus,
    CorpusFile,
    Phi,
    Planted,
    planted_corpus,
    pydicom_files,
)
from tests.deid.scan import Haystacks
from tests.helpers import multipart_body
from tests.live import LiveServer

DATASET = "phi"
PROVIDER_ID = "SITE-PHIQ-0042"


@dataclass
class Proof:
    profile: str
    options: frozenset[str]
    planted: Planted
    served: Haystacks
    stored_planted: int  # instances of the generated corpus the gateway accepted
    instances: int  # instances QIDO lists
    fhir_reads: int
    requests: int
    stow_answers: list[dict[str, Any]] = field(default_factory=list)
    data_dir: Path = Path()
    log: bytes = b""
    original_lookups: dict[str, int] = field(default_factory=dict)


def create_dataset(live: LiveServer, profile: str, options: frozenset[str]) -> None:
    args = ["dataset", "create", DATASET, "--title", "Planted PHI", "--deidentify", profile]
    if profile == "none" and "--deidentify" not in live.cli("dataset", "create", "--help").stdout:
        args = args[:-2]  # before policies exist: the test servers' default profile is none
    for option in sorted(options):
        args += ["--deid-option", option]
    if profile == "eucaim":
        args += ["--provider-id", PROVIDER_ID]
    done = live.cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]


def stow(live: LiveServer, files: list[CorpusFile], stacks: Haystacks) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    response = httpx.post(
        f"{live.url}/datasets/{DATASET}/dicom-web/studies",
        content=multipart_body([f.data for f in files], boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
        timeout=300,
    )
    assert response.status_code < 500, response.text[:2000]
    body = response.json() if response.content else {}
    label = f"STOW {[f.name for f in files][:3]} [{response.status_code}]"
    stacks.add_bytes(label, orjson.dumps(_without_echo(body)), "application/dicom+json")
    return {"status": response.status_code, "body": body}


def _without_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The answer minus the SOP Instance UIDs of *failed* instances, which PS3.18 10.5.3
    requires to be the ones the sender sent (so it can tell which failed); the rest of
    each failure (its reason and ErrorComment) is searched."""
    copy = orjson.loads(orjson.dumps(body))
    for item in copy.get("00081198", {}).get("Value", []):
        item.pop("00081155", None)
    return copy


def _stored(answer: dict[str, Any]) -> int:
    return len(answer["body"].get("00081199", {}).get("Value", []))


def store_corpus(
    live: LiveServer, planted: Corpus, real: Corpus, stacks: Haystacks
) -> tuple[int, list[dict[str, Any]]]:
    answers = [stow(live, planted.files, stacks)]
    stored = _stored(answers[0])
    for start in range(0, len(real.files), 20):
        answers.append(stow(live, real.files[start : start + 20], stacks))
    answers.append(stow(live, planted.files, stacks))  # sent again: the duplicate path
    return stored, answers


def original_lookups(live: LiveServer, planted: Planted) -> dict[str, int]:
    """How many results a search by an original identifier finds (must be 0)."""
    found = {}
    for key, values in (("PatientID", sorted(v for v in planted.phi if v.startswith("PHIQ-PID"))),
                        ("StudyInstanceUID", sorted(planted.uids)[:50])):  # fmt: skip
        for value in values:
            r = httpx.get(f"{live.dicomweb}/studies", params={key: value}, timeout=60)
            found[f"{key}={value}"] = len(r.json()) if r.status_code == 200 else -1
    return found


def run_proof(tmp: Path, profile: str, options: frozenset[str] = frozenset()) -> Proof:
    planted, real = planted_corpus(), pydicom_files()
    everything = Planted()
    everything.update(planted.planted)
    everything.update(real.planted)
    live = LiveServer(tmp / "data", extra_env={"GATEWAY_LOG_LEVEL": "info"})
    create_dataset(live, profile, options)
    live.start()
    harvester = Harvester(live)
    try:
        stored, answers = store_corpus(live, planted, real, harvester.stacks)
        instances = harvester.dicomweb(thorough=set(Phi.PATIENT_IDS))
        reads = harvester.fhir()
        lookups = original_lookups(live, everything)
    finally:
        harvester.close()
        live.stop()
    log = live.log_path.read_bytes()
    harvester.stacks.add_bytes("server log", log)
    return Proof(
        profile, options, everything, harvester.stacks, stored, instances, reads,
        harvester.requests, answers, live.data_dir, log, lookups,
    )  # fmt: skip


def data_dir_stacks(data_dir: Path) -> Haystacks:
    """Every file the gateway wrote (blobs, index, journal, audit), as haystacks."""
    stacks = Haystacks()
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            stacks.add_bytes(str(path.relative_to(data_dir)), data)
    return stacks
