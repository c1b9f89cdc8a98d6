"""A live gateway holding three listed-or-not datasets, for the FAIR Data Point tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from rdflib import Graph, URIRef
from rdflib.namespace import Namespace

from tests.helpers import cohort, multipart_body, part10
from tests.live import LiveServer

EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"
EUCAIM = Namespace("https://cancerimage.eu/ontology/EUCAIM#")
HEALTH = Namespace("https://w3id.org/healthdcat-ap#")
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCT = Namespace("http://purl.org/dc/terms/")
CV = Namespace("http://data.europa.eu/m8g/")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
SNOMED = Namespace("http://snomed.info/id/")
ACCESS = (
    "https://eucaim.github.io/eucaim_dcat_ap/releases/controlled-vocabularies/access-conditions/#"
)
RIGHTS = "http://publications.europa.eu/resource/authority/access-right/"
MIN_CELL = 3
HIDDEN = "secret-ds7"


@dataclass
class Node:
    live: LiveServer
    http: httpx.Client

    def fdp(self, path: str = "") -> str:
        return f"{self.live.url}/fdp{path}"


def _instances(
    patients: int, sexes: list[str], modality: str, maker: str, part: str, year: str
) -> list[pydicom.Dataset]:
    out = cohort(
        patients=patients, studies_per_patient=2, series_per_study=1, instances_per_series=1
    )
    keys = sorted({str(ds.PatientID) for ds in out})
    for ds in out:
        ds.PatientSex = sexes[keys.index(str(ds.PatientID)) % len(sexes)]
        ds.Modality, ds.Manufacturer, ds.BodyPartExamined = modality, maker, part
        ds.StudyDate = f"{year}0612"
    return out


def _stow(live: LiveServer, dataset: str, instances: list[pydicom.Dataset]) -> None:
    answer = httpx.post(
        f"{live.url}/datasets/{dataset}/dicom-web/studies",
        content=multipart_body([part10(ds) for ds in instances], "b"),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}, timeout=120,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


def _cli(live: LiveServer, *args: str) -> None:
    done = live.cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def _put_lung(live: LiveServer) -> None:
    """A RESTRICTED dataset whose catalogue fields are written through FHIR."""
    ext = [{"url": f"{EXT}/dataset-access-rights", "valueCode": "RESTRICTED"},
           {"url": f"{EXT}/dataset-access-condition", "valueCode": "remote-processing"},
           {"url": f"{EXT}/dataset-publisher-name", "valueString": "Lung Registry Foundation"},
           {"url": f"{EXT}/dataset-publisher-url", "valueUrl": "https://lung.example.org/contact"},
           {"url": f"{EXT}/dataset-interoperability-level", "valueUri": str(EUCAIM.SPEC1000010)},
           {"url": f"{EXT}/dataset-collection-method", "valueUri": str(EUCAIM.SPEC1000004)},
           {"url": f"{EXT}/dataset-version", "valueString": "2.1.0"},
           {"url": f"{EXT}/dataset-access-url", "valueUrl": "https://negotiator.example.org/lung"},
           {"url": f"{EXT}/dataset-deidentification", "extension": [{"url": "profile", "valueCode": "eucaim"},
                                                                     {"url": "providerId", "valueString": "SITE-LUNG-01"}]}]  # fmt: skip
    body = {"resourceType": "ResearchStudy", "id": "lung-r", "status": "active", "title": "Lung CT cohort",
            "description": "Low-dose chest CT of a screening programme.",
            "condition": [{"coding": [{"system": "http://snomed.info/sct", "code": "363358000"}]}],
            "contact": [{"name": "Data desk", "telecom": [{"system": "email", "value": "desk@lung.example.org"}]}],
            "keyword": [{"text": "screening"}], "extension": ext}  # fmt: skip
    answer = httpx.put(f"{live.url}/fhir/ResearchStudy/lung-r", json=body,
                       headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert answer.status_code in (200, 201), answer.text


@pytest.fixture(scope="package")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    live = LiveServer(tmp_path_factory.mktemp("fdp") / "data", extra_env={
        "GATEWAY_PRIVACY__MIN_CELL_COUNT": str(MIN_CELL), "GATEWAY_CATALOGUE__CACHE_SECONDS": "0",
        "GATEWAY_CATALOGUE__PUBLISHER_NAME": "Gateway Node Hospital",
        "GATEWAY_CATALOGUE__PUBLISHER_EMAIL": "catalogue@node.example.org"})  # fmt: skip
    for args in (("breast-p", "--title", "Breast MR", "--cancer-type", "breast", "--access-rights", "PUBLIC"),
                 (HIDDEN, "--title", "Hidden", "--cancer-type", "breast", "--access-rights", "NON_PUBLIC"),
                 ("draft-r", "--title", "Draft", "--cancer-type", "lung", "--status", "in-review")):  # fmt: skip
        _cli(live, "dataset", "create", *args)
    _cli(live, "catalogue", "set", "breast-p", "--publisher", "Breast Centre", "--publisher-email",
         "data@breast.example.org", "--contact-email", "access@breast.example.org", "--keyword", "mammary",
         "--keyword", "MRI", "--interoperability-level", "SPEC1000011", "--collection-method", "SPEC1000003",
         "--legislation", "http://data.europa.eu/eli/reg/2016/679/oj", "--provenance", "Collected 2019-2021.")  # fmt: skip
    live.start()
    _put_lung(live)
    _stow(
        live, "breast-p", _instances(4, ["F", "M"], "MR", "SIEMENS Healthineers", "BREAST", "2019")
    )
    _stow(live, "lung-r", _instances(1, ["O"], "CT", "Acme Imaging", "CHEST", "2021"))
    _stow(live, HIDDEN, _instances(2, ["F"], "MR", "Philips", "BREAST", "2020"))
    with httpx.Client(timeout=60) as http:
        node = Node(live, http)
        _settled(node)
        yield node
    live.stop()


def _settled(node: Node) -> None:
    """Elasticsearch shows writes after its refresh interval: wait until the figures are in."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        g = _record(node, "/dataset/lung-r")
        if g.value(URIRef(node.fdp("/dataset/lung-r")), EUCAIM.hasImageModality) is not None:
            return
        time.sleep(0.5)


def _record(node: Node, path: str) -> Graph:
    answer = node.http.get(node.fdp(path))
    assert answer.status_code == 200, (path, answer.text)
    return Graph().parse(data=answer.text, format="turtle")
