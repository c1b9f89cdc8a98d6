"""The FAIR Data Point (/fdp): harvested from the root as a harvester does, every record in every
format parsed and checked with the EUCAIM DCAT-AP SHACL shapes, figures equal to what was stored,
RESTRICTED described, NON_PUBLIC absent, administrator fields (CLI and FHIR) shown."""

from __future__ import annotations

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF, RDFS, XSD, Namespace

from tests.catalogue.conftest import (
    ACCESS,
    CV,
    DCAT,
    DCT,
    EUCAIM,
    HEALTH,
    HIDDEN,
    MIN_CELL,
    RIGHTS,
    SNOMED,
    VCARD,
    Node,
)
from tests.catalogue.harvest import FORMATS, Harvest, harvest, shacl_results


@pytest.fixture(scope="module")
def harvested(node: Node) -> Harvest:
    return harvest(node.http, node.fdp())


def test_harvest_reaches_every_listed_dataset_and_distribution_and_no_other(
    node: Node, harvested: Harvest
) -> None:
    expected = {node.fdp(), node.fdp("/catalog/imaging")}
    for ds in ("breast-p", "lung-r"):
        expected |= {node.fdp(f"/dataset/{ds}"), node.fdp(f"/distribution/{ds}/dicomweb")}
    assert set(harvested.records) == expected
    everything = harvested.union().serialize(format="nt")
    assert HIDDEN not in everything and "draft-r" not in everything


def test_every_record_in_every_format_parses_and_passes_the_shapes(
    node: Node, harvested: Harvest
) -> None:
    checked = 0
    for url, turtle in harvested.records.items():
        for media, fmt in FORMATS.items():
            answer = node.http.get(url, headers={"Accept": media})
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(media), (
                url,
                media,
            )
            graph = Graph().parse(data=answer.text, format=fmt, publicID=url)
            assert isomorphic(graph, turtle), (url, media)
            violations, _ = shacl_results(graph)
            assert violations == [], (url, media, violations)
            checked += 1
    violations, warnings = shacl_results(harvested.union())
    assert violations == [] and checked == 6 * len(FORMATS)
    assert any(
        "hdab" in w for w in warnings
    )  # recommended/transitional properties are reported, not failed


def test_the_shapes_catch_what_a_record_lacks(node: Node, harvested: Harvest) -> None:
    """The shapes are not vacuous: each removed mandatory property is a violation."""
    ds = URIRef(node.fdp("/dataset/breast-p"))
    dist = URIRef(node.fdp("/distribution/breast-p/dicomweb"))
    union = harvested.union()
    for subject, prop in ((ds, HEALTH.numberOfRecords), (ds, EUCAIM.hasBirthSex), (ds, DCT.publisher),
                          (ds, EUCAIM.interoperabilityLevel), (ds, DCAT.keyword), (ds, DCT.provenance),
                          (ds, DCAT.contactPoint), (dist, DCT.rights), (dist, DCAT.accessURL)):  # fmt: skip
        broken = Graph()
        broken += union
        broken.remove((subject, prop, None))
        violations, _ = shacl_results(broken)
        assert any(str(prop) in v or prop.n3(broken.namespace_manager) in v for v in violations), (
            prop
        )


def _values(g: Graph, s: URIRef, p: URIRef) -> set[object]:
    return {o.toPython() if isinstance(o, Literal) else o for o in g.objects(s, p)}


def test_figures_are_what_was_stored(node: Node, harvested: Harvest) -> None:
    g = harvested.union()
    breast, lung = URIRef(node.fdp("/dataset/breast-p")), URIRef(node.fdp("/dataset/lung-r"))
    assert _values(g, breast, HEALTH.numberOfUniqueIndividuals) == {4}
    assert _values(g, breast, HEALTH.numberOfRecords) == {8}
    assert g.value(breast, HEALTH.numberOfRecords).datatype == XSD.nonNegativeInteger
    assert _values(g, breast, EUCAIM.hasBirthSex) == {EUCAIM.COM1001370, EUCAIM.COM1001366}
    assert _values(g, breast, EUCAIM.hasImageModality) == {EUCAIM.IMG1000038}
    assert _values(g, breast, EUCAIM.hasEquipmentManufacturer) == {EUCAIM.IMG1000044}
    assert _values(g, breast, EUCAIM.hasImageBodyPart) == {SNOMED["76752008"]}
    assert _values(g, breast, EUCAIM.hasCondition) == {EUCAIM.CLIN1000060}
    period = g.value(breast, DCT.temporal)
    assert str(g.value(period, DCAT.startDate)) == "2019" == str(g.value(period, DCAT.endDate))
    # 1 individual and 2 studies are below the minimum cell count: reported as the minimum
    assert _values(g, lung, HEALTH.numberOfUniqueIndividuals) == {MIN_CELL}
    assert _values(g, lung, HEALTH.numberOfRecords) == {MIN_CELL}
    assert _values(g, lung, EUCAIM.hasBirthSex) == {EUCAIM.COM1001288}
    assert _values(g, lung, EUCAIM.hasCondition) == {EUCAIM.CLIN1000065}
    maker = g.value(lung, EUCAIM.hasEquipmentManufacturer)  # no EUCAIM code: a labelled node
    assert (
        str(g.value(maker, RDFS.label)) == "Acme Imaging"
        and (maker, RDF.type, EUCAIM.IMG1000010) in g
    )
    assert _values(g, lung, DCT.identifier) == {"lung-r"} and _values(
        g, breast, DCT.identifier
    ) == {"breast-p"}


def test_access_rights_conditions_and_administrator_fields(node: Node, harvested: Harvest) -> None:
    g = harvested.union()
    breast, lung = URIRef(node.fdp("/dataset/breast-p")), URIRef(node.fdp("/dataset/lung-r"))
    assert _values(g, breast, DCT.accessRights) == {URIRef(RIGHTS + "PUBLIC")}
    assert _values(g, lung, DCT.accessRights) == {URIRef(RIGHTS + "RESTRICTED")}
    lung_dist = URIRef(node.fdp("/distribution/lung-r/dicomweb"))
    assert _values(g, lung_dist, DCT.rights) == {URIRef(ACCESS + "REMOTE_PROCESSING")}
    assert _values(g, lung_dist, DCAT.accessURL) == {URIRef("https://negotiator.example.org/lung")}
    assert _values(g, URIRef(node.fdp("/distribution/breast-p/dicomweb")), DCT.rights) == {
        URIRef(ACCESS + "DOWNLOAD")
    }
    # CLI-set fields (breast) and FHIR-set fields (lung)
    assert _values(
        g, g.value(breast, DCT.publisher), Namespace("http://xmlns.com/foaf/0.1/").name
    ) == {"Breast Centre"}
    assert _values(g, g.value(g.value(breast, DCT.publisher), CV.contactPoint), CV.email) == {
        "data@breast.example.org"
    }
    assert _values(g, g.value(breast, DCAT.contactPoint), VCARD.hasEmail) == {
        URIRef("mailto:access@breast.example.org")
    }
    assert _values(g, breast, DCAT.keyword) == {"mammary", "MRI"}
    assert URIRef("http://data.europa.eu/eli/reg/2016/679/oj") in _values(
        g, breast, Namespace("http://data.europa.eu/r5r/").applicableLegislation
    )
    assert _values(g, breast, EUCAIM.interoperabilityLevel) == {EUCAIM.SPEC1000011}
    assert _values(g, lung, DCAT.version) == {"2.1.0"} and _values(g, lung, DCAT.keyword) == {
        "screening"
    }
    assert _values(g, g.value(lung, DCAT.contactPoint), VCARD.hasEmail) == {
        URIRef("mailto:desk@lung.example.org")
    }
    lung_publisher = g.value(lung, DCT.publisher)
    assert _values(g, g.value(lung_publisher, CV.contactPoint), CV.contactPage) == {
        URIRef("https://lung.example.org/contact")
    }
    provenance = {str(g.value(p, RDFS.label)) for p in g.objects(lung, DCT.provenance)}
    assert any("EUCAIM profile" in p for p in provenance)  # the de-identification profile
    # a dataset created without a policy carries the default one (``none`` on these
    # development test servers), written onto it at creation
    assert any(
        "Stored as received" in str(g.value(p, RDFS.label))
        for p in g.objects(breast, DCT.provenance)
    )
    assert "Collected 2019-2021." in {
        str(g.value(p, RDFS.label)) for p in g.objects(breast, DCT.provenance)
    }
    # the node's publisher describes the FDP and the catalogue
    root_publisher = g.value(URIRef(node.fdp()), DCT.publisher)
    assert _values(g, root_publisher, Namespace("http://xmlns.com/foaf/0.1/").name) == {
        "Gateway Node Hospital"
    }
