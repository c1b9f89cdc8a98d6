"""The FAIR Data Point records: FDP root -> catalogue -> datasets -> distributions.

Each record is one rdflib graph about one resource, with the LDP container of its children
(``ldp:DirectContainer`` + ``ldp:contains``, as the FAIR Data Point reference implementation
serves them, so a harvester follows ``ldp:contains`` or the DCAT links alike). Dataset and
distribution properties follow the EUCAIM DCAT Application Profile v2.0 (HealthDCAT-AP
release 7); the root and catalogue carry what the FDP reference implementation's shapes require.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.term import Node as RdfNode

from server.core.dcat.fields import Contact
from server.core.dcat.vocab import (
    ADMS,
    CV,
    DCAT,
    DCATAP,
    DCTERMS,
    EHDS,
    FDP,
    FOAF,
    LDP,
    PREFIXES,
    R3D,
    RDF,
    RDFS,
    VCARD,
    XSD,
)

CATALOG_ID = "imaging"
_NOT_IN_IRI = set(' <>"{}|\\^`')


def iri(value: str | None) -> URIRef | None:
    """``value`` as an IRI if it is an absolute one that every RDF syntax can carry, else None
    (a stored value that is not, e.g. written through FHIR, is left out, never served broken)."""
    if not value or ":" not in value or any(c in _NOT_IN_IRI or ord(c) < 33 for c in value):
        return None
    return URIRef(value)


@dataclass(frozen=True)
class Node:
    """This gateway as the FAIR Data Point's owner: where it is and who publishes it."""

    base: str  # absolute URL of /fdp
    gateway: str  # absolute URL of the gateway root
    title: str
    description: str
    version: str
    publisher: Contact = field(default_factory=Contact)
    issued: str | None = None
    modified: str | None = None

    def catalog(self) -> URIRef:
        return URIRef(f"{self.base}/catalog/{CATALOG_ID}")

    def dataset(self, dataset_id: str) -> URIRef:
        return URIRef(f"{self.base}/dataset/{quote(dataset_id, safe='')}")

    def distribution(self, dataset_id: str) -> URIRef:
        return URIRef(f"{self.base}/distribution/{quote(dataset_id, safe='')}/dicomweb")


_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(g: Graph) -> Graph:
    """Drop characters XML 1.0 cannot carry from every literal, so that every record has an
    RDF/XML form (stored text may hold control characters)."""
    for s, p, o in list(g):
        if isinstance(o, Literal) and _NOT_IN_XML.search(str(o)):
            g.remove((s, p, o))
            text = _NOT_IN_XML.sub("", str(o))
            g.add((s, p, Literal(text, lang=o.language, datatype=o.datatype)))
    return g


def new_graph() -> Graph:
    g = Graph()
    for prefix, namespace in PREFIXES.items():
        g.bind(prefix, namespace)
    return g


def fdp_record(node: Node) -> Graph:
    """The FDP root (``fdp-o:FAIRDataPoint``) with its one catalogue."""
    g = new_graph()
    root = URIRef(node.base)
    for kind in (FDP.FAIRDataPoint, FDP.MetadataService, DCAT.DataService, R3D.Repository):
        g.add((root, RDF.type, kind))
    _resource(g, root, node, node.title, node.description, node.publisher, node.version)
    g.add((root, DCAT.endpointURL, root))
    g.add((root, R3D.repositoryIdentifier, URIRef(f"{root}#identifier")))
    g.add((root, FDP.metadataCatalog, node.catalog()))
    g.add((root, R3D.dataCatalog, node.catalog()))
    container(g, root, f"{node.base}/catalog/", FDP.metadataCatalog, [node.catalog()], "Catalogs")
    return clean(g)


def catalog_record(node: Node, dataset_ids: list[str]) -> Graph:
    """The catalogue (``dcat:Catalog``, HealthDCAT-AP) listing every dataset shown."""
    g = new_graph()
    cat = node.catalog()
    g.add((cat, RDF.type, DCAT.Catalog))
    _resource(g, cat, node, node.title, node.description, node.publisher, node.version)
    g.add((cat, DCTERMS.isPartOf, URIRef(node.base)))
    g.add((cat, DCATAP.applicableLegislation, URIRef(EHDS)))
    g.add((cat, FOAF.homepage, URIRef(node.gateway)))
    g.add(
        (
            cat,
            DCAT.themeTaxonomy,
            URIRef("http://publications.europa.eu/resource/authority/data-theme"),
        )
    )
    datasets = [node.dataset(d) for d in dataset_ids]
    for ds in datasets:
        g.add((cat, DCAT.dataset, ds))
    container(g, cat, f"{cat}/dataset/", DCAT.dataset, datasets, "Datasets")
    return clean(g)


def _resource(
    g: Graph, subject: URIRef, node: Node, title: str, description: str,
    publisher: Contact, version: str,
) -> None:  # fmt: skip
    """What every FDP layer carries: title, description, publisher, version, metadata dates."""
    g.add((subject, DCTERMS.title, Literal(title, lang="en")))
    g.add((subject, DCTERMS.description, Literal(description, lang="en")))
    g.add((subject, DCAT.version, Literal(version)))
    if publisher.name:
        g.add((subject, DCTERMS.publisher, agent(g, URIRef(f"{subject}#publisher"), publisher)))
    metadata_dates(g, subject, node.issued, node.modified)


def metadata_dates(g: Graph, subject: URIRef, issued: str | None, modified: str | None) -> None:
    ident = URIRef(f"{subject}#identifier")
    g.add((ident, RDF.type, ADMS.Identifier))
    g.add((ident, DCTERMS.identifier, Literal(str(subject))))
    g.add((subject, FDP.metadataIdentifier, ident))
    if issued:
        g.add((subject, FDP.metadataIssued, Literal(issued, datatype=XSD.dateTime)))
    if modified:
        g.add((subject, FDP.metadataModified, Literal(modified, datatype=XSD.dateTime)))


def agent(g: Graph, subject: URIRef, who: Contact) -> URIRef:
    """A ``foaf:Agent`` with its name and ``cv:ContactPoint`` (email and/or contact page)."""
    g.add((subject, RDF.type, FOAF.Agent))
    g.add((subject, RDF.type, FOAF.Organization))
    g.add((subject, FOAF.name, Literal(who.name or "", lang="en")))
    page = iri(who.url)
    if who.email or page:
        point = URIRef(f"{subject}-contact")
        g.add((subject, CV.contactPoint, point))
        g.add((point, RDF.type, CV.ContactPoint))
        if who.email:
            g.add((point, CV.email, Literal(who.email)))
        if page:
            g.add((point, CV.contactPage, page))
    return subject


def contact_point(g: Graph, subject: URIRef, who: Contact) -> URIRef:
    """A ``vcard:Kind`` (dcat:contactPoint) with ``vcard:hasEmail`` and/or ``vcard:hasURL``."""
    g.add((subject, RDF.type, VCARD.Kind))
    if who.name:
        g.add((subject, VCARD.fn, Literal(who.name)))
    if (mail := iri(f"mailto:{who.email}" if who.email else None)) is not None:
        g.add((subject, VCARD.hasEmail, mail))
    if (page := iri(who.url)) is not None:
        g.add((subject, VCARD.hasURL, page))
    return subject


def container(
    g: Graph, parent: URIRef, url: str, relation: URIRef, children: list[URIRef], title: str
) -> None:
    """The LDP DirectContainer of ``parent``'s children (FDP reference implementation)."""
    box = URIRef(url)
    g.add((box, RDF.type, LDP.DirectContainer))
    g.add((box, DCTERMS.title, Literal(title)))
    g.add((box, LDP.membershipResource, parent))
    g.add((box, LDP.hasMemberRelation, relation))
    for child in children:
        g.add((box, LDP.contains, child))


def labelled(g: Graph, kind: URIRef, label: str) -> RdfNode:
    """A value without a known vocabulary IRI: a node of the expected class with its label."""
    node = BNode()
    g.add((node, RDF.type, kind))
    g.add((node, RDFS.label, Literal(label)))
    return node
