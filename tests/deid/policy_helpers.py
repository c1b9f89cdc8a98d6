"""Shared by the policy tests: the extension as a client writes it, datasets, secrets on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.live import LiveServer

URL = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition/dataset-deidentification"
FHIR_JSON = "application/fhir+json"
BREAST = {"coding": [{"system": "http://snomed.info/sct", "code": "254837009"}]}
SECRET_DIR = "pseudonym-secrets"


def policy_ext(profile: str, *options: str, provider: str | None = None,
               burned_in: str | None = None) -> dict[str, Any]:  # fmt: skip
    subs: list[dict[str, Any]] = [{"url": "profile", "valueCode": profile}]
    subs += [{"url": "option", "valueCode": o} for o in options]
    if provider is not None:
        subs.append({"url": "providerId", "valueString": provider})
    if burned_in is not None:
        subs.append({"url": "burnedIn", "valueCode": burned_in})
    return {"url": URL, "extension": subs}


def study(rid: str | None, *extensions: dict[str, Any], title: str = "T") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "ResearchStudy", "status": "active", "title": title,
                            "condition": [BREAST], "extension": list(extensions)}  # fmt: skip
    if rid is not None:
        body["id"] = rid
    return body


def policy_of(resource: dict[str, Any]) -> dict[str, list[str]]:
    """{sub-extension url: [values]} of the one dataset-deidentification extension."""
    found = [e for e in resource.get("extension", []) if e.get("url") == URL]
    assert len(found) == 1, resource.get("extension")
    out: dict[str, list[str]] = {}
    for sub in found[0]["extension"]:
        value = sub.get("valueCode", sub.get("valueString"))
        out.setdefault(sub["url"], []).append(value)
    return out


def secrets_on_disk(data_dir: Path) -> dict[str, str]:
    folder = data_dir / SECRET_DIR
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith(".")}


class Recorder:
    """An httpx client that keeps every response (to look for secrets in all of them)."""

    def __init__(self, live: LiveServer) -> None:
        self.seen: list[bytes] = []
        self.client = httpx.Client(
            base_url=f"{live.url}/fhir", timeout=60,
            headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
            event_hooks={"response": [self._keep]},
        )  # fmt: skip

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        head = b"\n".join(k + b": " + v for k, v in response.headers.raw)
        self.seen.append(head + b"\n" + response.content)

    def leaked(self, secrets: list[str]) -> list[str]:
        return [s for s in secrets for body in self.seen if s.encode() in body]
