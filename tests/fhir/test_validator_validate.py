"""``$validate`` agrees with the HL7 FHIR validator on good and deliberately broken resources.

The same resources go to the gateway's ``POST /fhir/<type>/$validate`` and to the HL7
validator (tests/fhir/validator, loaded with the same profiles and terminology); the
verdicts (any error or not) must be the same for every one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fhir.validator import hl7_validator
from tests.live import LiveServer
from tests.security.conftest import cli_ok, make_study, stow_into

FHIR_JSON = "application/fhir+json"
EXT = "https://cancer-imaging-gateway.eu/fhir/StructureDefinition"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    live = LiveServer(tmp_path_factory.mktemp("validate") / "data")
    cli_ok(live, "dataset", "create", "breast-a", "--title", "Breast A", "--cancer-type", "breast")
    live.start()
    try:
        _, instances = make_study("breast-a")
        assert stow_into(live, "breast-a", None, instances).status_code == 200
        with httpx.Client(base_url=f"{live.url}/fhir", headers={"Accept": FHIR_JSON},
                          timeout=60) as http:  # fmt: skip
            yield http
    finally:
        live.stop()


def _changed(resource: dict[str, Any], change: Any) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    change(out)
    return out


def _cases(client: httpx.Client) -> dict[str, dict[str, Any]]:
    study = client.get("ImagingStudy").json()["entry"][0]["resource"]
    dataset = client.get("ResearchStudy/breast-a").json()
    return {
        "served ImagingStudy": study,
        "served ResearchStudy": dataset,
        "ImagingStudy with a status outside its required binding":
            _changed(study, lambda r: r.update(status="bogus")),
        "ImagingStudy without subject": _changed(study, lambda r: r.pop("subject")),
        "ImagingStudy without its Study Instance UID (profile)": _changed(study, lambda r: r.pop("identifier")),
        "ResearchStudy with a status outside its required binding":
            _changed(dataset, lambda r: r.update(status="nope")),
        "ResearchStudy without title (profile)": _changed(dataset, lambda r: r.pop("title")),
        "ResearchStudy with a cancer type outside the required ValueSet": _changed(
            dataset, lambda r: r.update(condition=[{"coding": [{"system": "http://snomed.info/sct", "code": "12345"}]}])),
        "ResearchStudy with an access-rights code outside its required binding": _changed(
            dataset, lambda r: r.update(extension=[
                {"url": f"{EXT}/dataset-access-rights", "valueCode": "WIDE-OPEN"}])),
        "ResearchStudy with an unknown element": _changed(dataset, lambda r: r.update(colour="red")),
        "ResearchStudy with every catalogue field": _changed(dataset, _catalogue_fields),
        "ResearchStudy with a catalogue extension without its value": _changed(
            dataset, lambda r: r.setdefault("extension", []).append({"url": f"{EXT}/dataset-version"})),
    }  # fmt: skip


def _catalogue_fields(resource: dict[str, Any]) -> None:
    """Every descriptive field of the FAIR Data Point (``imaging-gateway catalogue set``)."""
    eucaim = "https://cancerimage.eu/ontology/EUCAIM#"
    values = {
        "publisher-name": ("valueString", "Hospital"),
        "publisher-email": ("valueString", "a@b.org"),
        "publisher-url": ("valueUrl", "https://b.org/contact"),
        "version": ("valueString", "1.0.0"),
        "applicable-legislation": ("valueUri", "http://data.europa.eu/eli/reg/2025/327/oj"),
        "interoperability-level": ("valueUri", eucaim + "SPEC1000011"),
        "collection-method": ("valueUri", eucaim + "SPEC1000003"),
        "health-category": (
            "valueUri",
            "https://hdeu-dcat.acceptance.data.health.europa.eu/resource/authority/healthcategories/EHRS",
        ),
        "type": ("valueUri", "https://w3id.org/dpv#PseudonymisedData"),
        "access-url": ("valueUrl", "https://negotiator.example.org/x"),
        "license": (
            "valueUri",
            "http://publications.europa.eu/resource/authority/licence/CC_BY_4_0",
        ),
        "provenance": ("valueString", "Collected 2019-2021."),
    }
    resource.setdefault("extension", []).extend(
        {"url": f"{EXT}/dataset-{name}", key: value} for name, (key, value) in values.items()
    )
    resource["contact"] = [{"name": "Desk", "telecom": [{"system": "email", "value": "d@b.org"}]}]
    resource["keyword"] = [{"text": "breast"}]  # fmt: skip


def test_validate_agrees_with_the_hl7_validator(client: httpx.Client) -> None:
    validator = hl7_validator()
    disagreements = []
    cases = _cases(client)
    for name, resource in cases.items():
        answer = client.post(f"{resource['resourceType']}/$validate", json=resource,
                             headers={"Content-Type": FHIR_JSON})  # fmt: skip
        assert answer.status_code == 200, (name, answer.text)
        ours = [i for i in answer.json()["issue"] if i["severity"] in ("error", "fatal")]
        theirs = validator.errors(resource)
        if bool(ours) != bool(theirs):
            disagreements.append(
                f"{name}: gateway {ours or 'valid'}; HL7 {[str(i) for i in theirs] or 'valid'}"
            )
    assert len(cases) >= 12
    assert not disagreements, "\n".join(disagreements)
