"""The conformance artifacts in profiles/ and terminology/ and the lookups built from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource

from server.core.fhir.conformance import (
    BASE_URL,
    SNOMED_SYSTEM,
    Conformance,
    load_conformance,
)
from server.synthetic import CANCER_TYPES

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass

REPO = Path(__file__).resolve().parents[2]
ARTIFACT_FILES = sorted([*REPO.glob("profiles/*.json"), *REPO.glob("terminology/*.json")])
SEARCH_PARAM_TYPES = {
    "number",
    "date",
    "string",
    "token",
    "reference",
    "composite",
    "quantity",
    "uri",
    "special",
}
CANCER_SHORT_CODES = (
    "breast",
    "colon",
    "lung",
    "prostate",
    "rectum",
    "liver",
    "glioma",
    "neuroblastoma",
    "glioblastoma",
)


@pytest.fixture(scope="module")
def conformance() -> Conformance:
    return load_conformance()


def _is_resource_type(name: str) -> bool:
    try:
        model = get_fhir_model_class(name)
    except (KeyError, ValueError):
        return False
    return issubclass(model, Resource)


def test_artifacts_exist() -> None:
    names = {path.name for path in ARTIFACT_FILES}
    for expected in (
        "ValueSet-cancer-types.json",
        "CodeSystem-cancer-type.json",
        "ConceptMap-cancer-type-to-snomed.json",
        "ValueSet-dicom-modalities.json",
        "ConceptMap-bodypart-to-snomed.json",
        "ConceptMap-laterality-to-snomed.json",
        "CodeSystem-access-condition.json",
        "StructureDefinition-gateway-imagingstudy.json",
        "StructureDefinition-dataset-researchstudy.json",
        "SearchParameter-researchstudy-cancer-type.json",
        "SearchParameter-researchstudy-modality.json",
        "SearchParameter-researchstudy-access-condition.json",
        "SearchParameter-imagingstudy-dataset.json",
    ):
        assert expected in names


@pytest.mark.parametrize("path", ARTIFACT_FILES, ids=lambda p: p.name)
def test_file_is_one_valid_r4_resource(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n", "not pretty-printed"
    get_fhir_model_class(data["resourceType"]).model_validate(data)
    assert path.name == f"{data['resourceType']}-{data['id']}.json"
    assert data["url"] == f"{BASE_URL}/{data['resourceType']}/{data['id']}"
    assert data["version"] == "0.1.0"
    assert data["status"] in {"draft", "active"}
    assert data.get("name") or data.get("title")
    assert data.get("description") or data.get("purpose") or data.get("copyright")
    if "fhirVersion" in data:
        assert data["fhirVersion"] == "4.0.1"


def test_urls_unique_and_under_base(conformance: Conformance) -> None:
    urls = [resource["url"] for resource in conformance.resources.values()]
    assert len(urls) == len(set(urls))
    assert len(conformance.resources) == len(ARTIFACT_FILES)
    assert all(url.startswith(f"{BASE_URL}/") for url in urls)


@pytest.mark.parametrize("resource_type", ["ValueSet", "ConceptMap", "CodeSystem"])
def test_terminology_names_its_source(conformance: Conformance, resource_type: str) -> None:
    resources = conformance.of_type(resource_type)
    assert resources
    for resource in resources:
        text = f"{resource.get('description', '')} {resource.get('copyright', '')}"
        assert "source" in text.lower(), resource["id"]
        sources = ("DICOM", "SNOMED", "EUCAIM", "EU Vocabularies", "this gateway")
        assert any(word in text for word in sources), resource["id"]


def test_snomed_content_carries_snomed_copyright(conformance: Conformance) -> None:
    for resource_type in ("ValueSet", "ConceptMap"):
        for resource in conformance.of_type(resource_type):
            systems = {inc.get("system") for inc in resource.get("compose", {}).get("include", [])}
            systems |= {group.get("target") for group in resource.get("group", [])}
            if SNOMED_SYSTEM in systems:
                assert "SNOMED" in resource.get("copyright", ""), resource["id"]


def test_every_synthetic_body_part_is_mapped(conformance: Conformance) -> None:
    body_parts = {cancer.body_part for cancer in CANCER_TYPES}
    assert body_parts
    for body_part in body_parts:
        coding = conformance.body_site(body_part)
        assert coding is not None, body_part
        assert coding["system"] == SNOMED_SYSTEM
        assert coding["code"].isdigit()


def test_body_site_lookup(conformance: Conformance) -> None:
    assert conformance.body_site("breast") == {
        "system": SNOMED_SYSTEM,
        "code": "76752008",
        "display": "Breast",
    }
    assert conformance.body_site(" BREAST ") == conformance.body_site("breast")
    assert conformance.body_site("NOT_A_BODY_PART") is None


def test_body_site_targets_are_in_body_site_valueset(conformance: Conformance) -> None:
    valueset = conformance.get("ValueSet", "body-site")
    assert valueset is not None
    codes = {c["code"] for inc in valueset["compose"]["include"] for c in inc["concept"]}
    concept_map = conformance.get("ConceptMap", "bodypart-to-snomed")
    assert concept_map is not None
    source = concept_map["group"][0]["source"]
    assert source == f"{BASE_URL}/CodeSystem/dicom-body-part-examined"
    for element in concept_map["group"][0]["element"]:
        assert conformance.body_site(element["code"]) is not None
        assert element["target"][0]["code"] in codes


def test_laterality_lookup(conformance: Conformance) -> None:
    assert conformance.laterality("R") == {
        "system": SNOMED_SYSTEM,
        "code": "24028007",
        "display": "Right",
    }
    left = conformance.laterality("l")
    both = conformance.laterality("B")
    assert left is not None and left["code"] == "7771000"
    assert both is not None and both["code"] == "51440002"
    assert conformance.laterality("U") is None


@pytest.mark.parametrize("short_code", CANCER_SHORT_CODES)
def test_cancer_type_by_short_code_or_snomed(conformance: Conformance, short_code: str) -> None:
    coding = conformance.cancer_type(short_code)
    assert coding is not None
    assert coding["system"] == SNOMED_SYSTEM
    assert conformance.cancer_type(coding["code"]) == coding
    assert conformance.cancer_type(f"{SNOMED_SYSTEM}|{coding['code']}") == coding
    assert conformance.cancer_type(short_code.upper()) == coding


def test_cancer_types_are_consistent(conformance: Conformance) -> None:
    breast = conformance.cancer_type("breast")
    assert breast is not None and breast["code"] == "254837009"
    valueset = conformance.get("ValueSet", "cancer-types")
    code_system = conformance.get("CodeSystem", "cancer-type")
    assert valueset is not None and code_system is not None
    vs_codes = {c["code"] for inc in valueset["compose"]["include"] for c in inc["concept"]}
    assert {c["code"] for c in code_system["concept"]} == set(CANCER_SHORT_CODES)
    mapped = {conformance.cancer_type(code)["code"] for code in CANCER_SHORT_CODES}  # type: ignore[index]
    assert mapped == vs_codes
    assert len(vs_codes) == len(CANCER_SHORT_CODES)
    assert conformance.cancer_type("melanoma") is None
    assert conformance.cancer_type("http://loinc.org|254837009") is None


def test_modality_display(conformance: Conformance) -> None:
    assert conformance.modality_display("MR") == "Magnetic Resonance"
    assert conformance.modality_display("ct") == "Computed Tomography"
    for code in ("PT", "SEG", "SR", "RTSTRUCT", "KO"):
        assert conformance.modality_display(code)
    assert conformance.modality_display("XX") is None


def test_search_parameters_are_valid(conformance: Conformance) -> None:
    params = conformance.of_type("SearchParameter")
    assert {p["code"] for p in params} >= {"cancer-type", "modality", "access-condition", "dataset"}
    for param in params:
        assert param["type"] in SEARCH_PARAM_TYPES, param["id"]
        assert param["base"]
        for base in param["base"]:
            assert _is_resource_type(base), base
            assert param["expression"].startswith(f"{base}."), param["id"]
        for target in param.get("target", []):
            assert _is_resource_type(target), target
        if param["type"] == "reference":
            assert param.get("target")
        for url in _canonical_refs(param["expression"]):
            assert conformance.by_url(url) is not None, url


def test_dataset_search_parameter(conformance: Conformance) -> None:
    param = conformance.get("SearchParameter", "imagingstudy-dataset")
    assert param is not None
    assert param["code"] == "dataset"
    assert param["base"] == ["ImagingStudy"]
    assert param["type"] == "reference"
    assert param["target"] == ["ResearchStudy"]


def _canonical_refs(expression: str) -> list[str]:
    parts = expression.split("'")
    return [part for part in parts[1::2] if part.startswith(BASE_URL)]


def _element(profile: dict[str, Any], element_id: str) -> dict[str, Any]:
    for element in profile["differential"]["element"]:
        if element["id"] == element_id:
            return dict(element)
    raise AssertionError(f"{element_id} not in differential")


def test_researchstudy_condition_bound_to_cancer_types(conformance: Conformance) -> None:
    profile = conformance.get("StructureDefinition", "dataset-researchstudy")
    assert profile is not None
    assert profile["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/ResearchStudy"
    condition = _element(profile, "ResearchStudy.condition")
    valueset = conformance.get("ValueSet", "cancer-types")
    assert valueset is not None
    assert condition["binding"] == {"strength": "required", "valueSet": valueset["url"]}
    assert _element(profile, "ResearchStudy.title")["min"] == 1


def test_profiles_reference_existing_artifacts(conformance: Conformance) -> None:
    for profile in conformance.of_type("StructureDefinition"):
        assert profile["derivation"] == "constraint"
        assert profile["fhirVersion"] == "4.0.1"
        for element in profile["differential"]["element"]:
            assert element["path"].split(".")[0] == profile["type"]
            binding = element.get("binding")
            if binding and binding["valueSet"].startswith(BASE_URL):
                assert conformance.by_url(binding["valueSet"]) is not None, binding["valueSet"]
            for type_ in element.get("type", []):
                for url in type_.get("profile", []):
                    assert conformance.by_url(url) is not None, url
        if profile["type"] == "Extension":
            assert profile["context"]
            url_element = _element(profile, "Extension.url")
            assert url_element["fixedUri"] == profile["url"]


def test_imagingstudy_profile(conformance: Conformance) -> None:
    profile = conformance.get("StructureDefinition", "gateway-imagingstudy")
    assert profile is not None
    assert profile["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/ImagingStudy"
    assert _element(profile, "ImagingStudy.identifier")["min"] == 1
    assert _element(profile, "ImagingStudy.subject")["min"] == 1
    assert _element(profile, "ImagingStudy.endpoint")["min"] == 1
    modality = _element(profile, "ImagingStudy.series.modality")
    assert modality["binding"] == {
        "strength": "extensible",
        "valueSet": f"{BASE_URL}/ValueSet/dicom-modalities",
    }
    body_site = _element(profile, "ImagingStudy.series.bodySite")
    assert body_site["binding"] == {
        "strength": "preferred",
        "valueSet": f"{BASE_URL}/ValueSet/body-site",
    }


def test_invalid_file_is_reported_by_name(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "terminology").mkdir()
    bad = {"resourceType": "ValueSet", "id": "bad", "status": "draft", "notAnElement": 1}
    (tmp_path / "terminology" / "ValueSet-bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"ValueSet-bad\.json"):
        load_conformance(tmp_path)


def test_duplicate_id_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "terminology").mkdir()
    resource = {"resourceType": "CodeSystem", "id": "x", "status": "draft", "content": "complete"}
    (tmp_path / "profiles" / "a.json").write_text(json.dumps(resource))
    (tmp_path / "terminology" / "b.json").write_text(json.dumps(resource))
    with pytest.raises(ValueError, match=r"b\.json"):
        load_conformance(tmp_path)
