"""FHIR bulk export driven by a real third-party client: smart-fetch (SMART/Cumulus, PyPI).

smart-fetch authenticates with SMART Backend Services (``private_key_jwt``, an ES384
key registered as the client's JWKS), kicks off, polls, downloads and DELETEs the
export itself. Its command line exports only its own list of clinical types (Patient,
Encounter, ...), so the full export goes through its ``BulkExporter`` class.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from tests.live import LiveServer
from tests.security.conftest import AS_SENT, Study, add_client, auth_env, cli_ok, store_study, token

smart_fetch = pytest.importorskip("smart_fetch")
cfs = pytest.importorskip("cumulus_fhir_support")
from smart_fetch import bulk_utils, lifecycle  # noqa: E402

A, S, R, B = "client-a", "client-s", "client-r", "client-b"
TYPES = ("ResearchStudy", "Patient", "ImagingStudy", "ResearchSubject")


@dataclass
class Node:
    live: LiveServer
    client_id: str
    jwks: dict[str, object]
    jwks_file: Path
    studies: dict[str, list[Study]]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("bulk-client")
    live = LiveServer(
        root / "data",
        extra_env=auth_env(GATEWAY_BULK__RETRY_AFTER_SECONDS="1", GATEWAY_BULK__PROCESS="true"),
    )
    for dataset in (A, S, R, B):
        cli_ok(live, "dataset", "create", dataset, "--title", dataset, "--cancer-type", "breast",
               *AS_SENT)  # fmt: skip
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    private = {**key.as_dict(private=True), "alg": "ES384", "key_ops": ["sign"]}
    (root / "public.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    jwks_file = root / "private.jwks"
    jwks_file.write_text(json.dumps({"keys": [private]}))
    keyed = add_client(
        live, "cumulus", "--organization", "org-c", "--jwks", str(root / "public.json")
    )
    pusher = add_client(live, "router", *[a for d in (A, S, R, B) for a in ("--store", d)])
    for name, dataset, condition, org in (
        ("daa-a", A, "download", "org-c"), ("daa-s", S, "in-situ-processing", "org-c"),
        ("daa-r", R, "remote-processing", "org-c"), ("daa-b", B, "download", "org-b"),
    ):  # fmt: skip
        cli_ok(live, "daa", "create", name, "--dataset", dataset, "--condition", condition,
               "--organization", org)  # fmt: skip
    live.start()
    try:
        push = token(live, pusher)
        studies = {d: [store_study(live, d, push) for _ in range(n)]
                   for d, n in ((A, 2), (S, 1), (R, 1), (B, 2))}  # fmt: skip
        yield Node(live, keyed.client_id, {"keys": [private]}, jwks_file, studies)
    finally:
        live.stop()


def _read(folder: Path) -> dict[str, list[str]]:
    """Resource ids per type in the NDJSON files smart-fetch wrote (Type.NNN.ndjson)."""
    out: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.ndjson")):
        if path.name == "log.ndjson":  # smart-fetch's own bulk-export log
            continue
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            out.setdefault(resource["resourceType"], []).append(resource["id"])
    return out


async def _export(
    node: Node, folder: Path, group: str = "", types: tuple[str, ...] = TYPES
) -> None:
    fhir = f"{node.live.url}/fhir"
    client = cfs.FhirClient(fhir, types, smart_client_id=node.client_id, smart_jwks=node.jwks)
    async with client:
        exporter = bulk_utils.BulkExporter(
            client, set(types), bulk_utils.export_url(fhir, group), str(folder),
            metadata=lifecycle.OutputMetadata(str(folder)),
        )  # fmt: skip
        await exporter.export()


def test_smart_fetch_exports_every_allowed_resource_exactly_once(
    node: Node, tmp_path: Path
) -> None:
    asyncio.run(_export(node, tmp_path))
    found = _read(tmp_path)
    for rtype, listed in found.items():
        assert len(listed) == len(set(listed)), f"{rtype} exported twice"
    allowed = [s for d in (A, S) for s in node.studies[d]]
    assert {t: set(v) for t, v in found.items()} == {
        "ResearchStudy": {A, S},
        "Patient": {s.patient_ref for s in allowed},
        "ImagingStudy": {s.study_uid for s in allowed},
    }
    hidden = [s for d in (R, B) for s in node.studies[d]]
    text = "".join(p.read_text() for p in tmp_path.glob("*.*.ndjson"))
    for s in hidden:
        assert s.study_uid not in text and s.patient_ref not in text
    # smart-fetch DELETEs the export when it has the files: the status URL is gone
    log = [json.loads(x) for x in (tmp_path / "log.ndjson").read_text().splitlines()]
    assert [e["eventId"] for e in log][-1] == "export_complete"


def test_smart_fetch_group_export_is_the_datasets_cohort(node: Node, tmp_path: Path) -> None:
    asyncio.run(_export(node, tmp_path, group=A, types=TYPES[1:]))
    found = {t: sorted(v) for t, v in _read(tmp_path).items()}
    assert found == {
        "Patient": sorted({s.patient_ref for s in node.studies[A]}),
        "ImagingStudy": sorted(s.study_uid for s in node.studies[A]),
    }


def test_smart_fetch_command_line_exports_patients(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "smart_fetch.cli.main", "bulk", "--fhir-url",
         f"{node.live.url}/fhir", "--smart-client-id", node.client_id, "--smart-key",
         str(node.jwks_file), "--type", "Patient", "--no-compression", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    allowed = {s.patient_ref for d in (A, S) for s in node.studies[d]}
    assert sorted(_read(out)["Patient"]) == sorted(allowed)
