"""The dataset -> DCAT mapping (pure): whatever a ResearchStudy or the images hold, every record
serialises to every RDF syntax the FAIR Data Point offers and parses back to the same graph."""

from __future__ import annotations

import pytest
from rdflib import Graph, URIRef
from rdflib.compare import isomorphic

from server.core.dcat.dataset import Figures, dataset_record, distribution_record
from server.core.dcat.edit import set_fields
from server.core.dcat.fields import EXT, Contact, describe
from server.core.dcat.formats import FORMATS
from server.core.dcat.records import Node, catalog_record, fdp_record
from server.errors import BadRequest

HOSTILE = ["a b", "<x>", "javascript:alert(1)", 'http://x/"y"', "\x00", "é/ü", "{}|^`\\", ""]
NODE = Node(base="http://gw.example/fdp", gateway="http://gw.example", title="T <b>", description="d\n\"q\"",
            version="1", publisher=Contact("P & <Q>", "a b@c", "not a url"))  # fmt: skip


def _hostile_study() -> dict[str, object]:
    ext = [{"url": f"{EXT}/dataset-access-rights", "valueCode": "RESTRICTED"}]
    for name, key in (("publisher-url", "valueUrl"), ("applicable-legislation", "valueUri"),
                      ("interoperability-level", "valueUri"), ("collection-method", "valueUri"),
                      ("health-category", "valueUri"), ("type", "valueUri"), ("access-url", "valueUrl"),
                      ("license", "valueUri"), ("provenance", "valueString"), ("version", "valueString")):  # fmt: skip
        ext += [{"url": f"{EXT}/dataset-{name}", key: v} for v in HOSTILE]
    return {"resourceType": "ResearchStudy", "id": "x.y-1", "status": "active", "title": '"]]>',
            "condition": [{"coding": [{"code": c}]} for c in HOSTILE],
            "contact": [{"name": n, "telecom": [{"system": "email", "value": n}, {"system": "url", "value": n}]}
                        for n in HOSTILE], "keyword": [{"text": t} for t in HOSTILE], "extension": ext}  # fmt: skip


def test_hostile_values_never_break_a_record() -> None:
    desc = describe(_hostile_study())
    figures = Figures(subjects=3, studies=4, sexes=["M", "?", ""], modalities=HOSTILE,
                      body_parts=[(t, None) for t in HOSTILE] + [("CHEST", "a b")],
                      manufacturers=HOSTILE, first_year="2019", last_year="2020")  # fmt: skip
    records = [fdp_record(NODE), catalog_record(NODE, ["x.y-1", "a b", "<"]),
               dataset_record(NODE, desc, figures), distribution_record(NODE, desc)]  # fmt: skip
    for graph in records:
        for fmt in FORMATS.values():
            text = graph.serialize(format=fmt)
            assert isomorphic(Graph().parse(data=text, format=fmt), graph), fmt
        for node in graph.all_nodes():
            if isinstance(node, URIRef):
                assert not any(c in str(node) for c in ' <>"{}|^`\\\x00'), node


@pytest.mark.parametrize(
    "changes",
    [{"publisher_email": "no-at"}, {"publisher_url": "ftp://x"}, {"access_url": "http://a b"},
     {"legislation": ["not an iri"]}, {"interoperability_level": "<x>"}, {"version": ["1", "2"]},
     {"provenance": ["x" * 5000]}, {"keywords": ["bad\x00"]}, {"contact_email": "a@"}, {"colour": "red"},
     {"types": ["a"] * 51}],
)  # fmt: skip
def test_bad_catalogue_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        set_fields({"resourceType": "ResearchStudy", "id": "a"}, changes)


def test_short_forms_and_removal() -> None:
    study = set_fields({"resourceType": "ResearchStudy", "id": "a"}, {
        "interoperability_level": "SPEC1000011", "types": ["dpv:PseudonymisedData", "eucaim:SPEC1000019"],
        "health_categories": ["EHRS"], "keywords": ["k"], "contact_email": "a@b.org"})  # fmt: skip
    desc = describe(study)
    assert desc.interoperability_level == "https://cancerimage.eu/ontology/EUCAIM#SPEC1000011"
    assert desc.types == [
        "https://w3id.org/dpv#PseudonymisedData",
        "https://cancerimage.eu/ontology/EUCAIM#SPEC1000019",
    ]
    assert desc.health_categories[0].endswith("/healthcategories/EHRS")
    assert desc.keywords == ["k"] and desc.contacts[0].email == "a@b.org"
    cleared = describe(
        set_fields(study, {"interoperability_level": "", "keywords": [""], "contact_email": ""})
    )
    assert (
        cleared.interoperability_level is None and cleared.keywords == [] and cleared.contacts == []
    )
