"""Collect every byte a live gateway serves about its data, over HTTP, into haystacks.

DICOMweb: QIDO at every level with ``includefield=all``; WADO-RS study, series and
instance retrieval in the stored syntax and in each syntax asked for; metadata at
every level; frames (stored and decoded); every BulkDataURI the metadata names;
rendered images and thumbnails. FHIR: the CapabilityStatement, a search of every
resource type it lists (following ``next`` links, with ``_include=*``), a read and the
history of each resource found. Plus what the caller adds (STOW answers, error
answers) and the server log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from tests.deid.scan import Haystacks
from tests.live import LiveServer

DICOM_ANY = 'multipart/related; type="application/dicom"'
SYNTAXES = ("*", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99")
QIDO_LEVELS = ("studies", "series", "instances")


class Harvester:
    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.http = httpx.Client(timeout=120)
        self.stacks = Haystacks()
        self.requests = 0

    def get(self, url: str, accept: str = "*/*", **params: Any) -> httpx.Response:
        full = url if url.startswith("http") else f"{self.live.url}{url}"
        response = self.http.get(full, headers={"Accept": accept}, params=params or None)
        self.requests += 1
        label = f"GET {response.request.url} [{response.status_code}]"
        self.stacks.add_bytes(label, response.content, response.headers.get("content-type", ""))
        return response

    def close(self) -> None:
        self.http.close()

    # --- DICOMweb -----------------------------------------------------------------------

    def qido(self) -> list[dict[str, Any]]:
        """Every instance (QIDO includefield=all at each level) and the study/series lists."""
        instances: list[dict[str, Any]] = []
        for level in QIDO_LEVELS:
            found = self.get(f"/dicom-web/{level}", "application/dicom+json",
                             includefield="all", limit="100000")  # fmt: skip
            if level == "instances" and found.status_code == 200:
                instances = found.json()
        return instances

    def dicomweb(self, thorough: set[str] | None = None) -> int:
        """Harvest every instance; those whose PatientID is in ``thorough`` in every form."""
        instances = self.qido()
        studies = sorted({_value(i, "0020000D") for i in instances} - {None})
        for study in studies:
            self._study(str(study))
        series = sorted({(_value(i, "0020000D"), _value(i, "0020000E")) for i in instances})
        for study, one in series:
            url = f"/dicom-web/studies/{study}/series/{one}"
            self.get(f"{url}/metadata", "application/dicom+json")
            self.get(url, DICOM_ANY)
        for instance in instances:
            self._instance(instance, thorough is None or _value(instance, "00100020") in thorough)
        return len(instances)

    def _study(self, study: str) -> None:
        base = f"/dicom-web/studies/{study}"
        self.get(f"{base}/metadata", "application/dicom+json")
        self.get(f"{base}/series", "application/dicom+json", includefield="all")
        self.get(f"{base}/instances", "application/dicom+json", includefield="all")
        self.get(base, DICOM_ANY)
        self.get(base, f"{DICOM_ANY}; transfer-syntax=*")
        self.get(f"{base}/thumbnail", "image/png")

    def _instance(self, instance: dict[str, Any], thorough: bool) -> None:
        """Instance, metadata, bulk data, frames; when ``thorough`` every syntax and image."""
        study, series, sop = (_value(instance, t) for t in ("0020000D", "0020000E", "00080018"))
        url = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
        for syntax in SYNTAXES if thorough else ():  # the others: in the study retrieval
            self.get(url, f"{DICOM_ANY}; transfer-syntax={syntax}")
        metadata = self.get(f"{url}/metadata", "application/dicom+json")
        if metadata.status_code == 200:
            for uri in bulk_data_uris(metadata.json()):
                self.get(uri, 'multipart/related; type="application/octet-stream"')
        frames = 'multipart/related; type="application/octet-stream"'
        self.get(f"{url}/frames/1", f"{frames}; transfer-syntax=*")
        if thorough:
            self.get(f"{url}/frames/1", frames)
            self.get(f"{url}/rendered", "image/png")
            self.get(f"{url}/thumbnail", "image/jpeg")

    # --- FHIR ---------------------------------------------------------------------------

    def fhir(self) -> int:
        metadata = self.get("/fhir/metadata", "application/fhir+json").json()
        types = [r["type"] for rest in metadata.get("rest", []) for r in rest.get("resource", [])]
        read = 0
        for rtype in types:
            for resource in self._search(rtype):
                rid = resource.get("id")
                if rid:
                    self.get(f"/fhir/{rtype}/{rid}", "application/fhir+json")
                    self.get(f"/fhir/{rtype}/{rid}/_history", "application/fhir+json")
                    read += 1
            self.get(f"/fhir/{rtype}/_history", "application/fhir+json")
        return read

    def _search(self, rtype: str) -> Iterator[dict[str, Any]]:
        url: str | None = f"/fhir/{rtype}?_count=1000&_include=*"
        while url:
            response = self.get(url, "application/fhir+json")
            if response.status_code != 200:  # e.g. _include=* refused: plain search
                if "_include" not in url:
                    return
                url = f"/fhir/{rtype}?_count=1000"
                continue
            bundle = response.json()
            for entry in bundle.get("entry", []):
                if entry.get("search", {}).get("mode", "match") == "match":
                    yield entry.get("resource", {})
            url = next((link["url"] for link in bundle.get("link", [])
                        if link.get("relation") == "next"), None)  # fmt: skip


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def bulk_data_uris(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "BulkDataURI" and isinstance(value, str):
                yield value
            else:
                yield from bulk_data_uris(value)
    elif isinstance(node, list):
        for value in node:
            yield from bulk_data_uris(value)
