"""A dataset and its distribution as EUCAIM DCAT-AP v2.0 records (``dcat:Dataset``, ``dcat:Distribution``).

Where each property comes from (README "Joining EUCAIM"):
- the images (index aggregations): numbers of individuals and imaging studies, sexes,
  modalities, body parts, manufacturers, acquisition period (years only);
- the ResearchStudy: identifier (its id), title, description, condition, contact, keywords,
  access rights and conditions, and the catalogue extensions set by an administrator;
- node defaults where the dataset names none: publisher (settings), applicable legislation
  (the EHDS Regulation), health category (EHRS), dataset type (from the de-identification
  profile), version (CalVer of the last change), keywords (cancer types and modalities).
The de-identification profile is a ``dct:provenance`` statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from rdflib import Graph, Literal, URIRef

from server.core.dcat.fields import Contact, Description
from server.core.dcat.records import (
    Node,
    agent,
    clean,
    contact_point,
    container,
    iri,
    labelled,
    metadata_dates,
    new_graph,
)
from server.core.dcat.vocab import (
    ACCESS_CONDITION,
    ACCESS_CONDITIONS,
    ACCESS_RIGHT,
    CONDITION,
    DATA_THEME,
    DCAT,
    DCATAP,
    DCM,
    DCTERMS,
    DPV,
    EHDS,
    EUCAIM,
    HEALTH,
    HEALTH_CATEGORY,
    HEALTH_THEME,
    MODALITY,
    RDF,
    RDFS,
    SEX,
    SEX_UNKNOWN,
    SKOS,
    SNOMED,
    XSD,
    manufacturer_code,
)  # fmt: skip

DEID_TEXT = {
    "basic": "De-identified on ingest by the gateway with the DICOM PS3.15 Annex E Basic "
    "Application Level Confidentiality Profile.",
    "eucaim": "De-identified on ingest by the gateway with the EUCAIM profile (output compatible "
    "with the EUCAIM de-identification pipeline).",
    "none": "Stored as received: the data holder declared the images already de-identified; the "
    "gateway did not change them.",
}
DEID_UNKNOWN = "De-identification: not recorded by the gateway for this dataset."
PSEUDONYMISED = {"basic", "eucaim"}


@dataclass
class Figures:
    """What the index knows about a dataset (counts after the minimum-cell-count floor)."""

    subjects: int = 0
    studies: int = 0
    sexes: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    body_parts: list[tuple[str, str | None]] = field(default_factory=list)  # (term, SNOMED code)
    manufacturers: list[str] = field(default_factory=list)
    first_year: str | None = None
    last_year: str | None = None


def dataset_record(node: Node, desc: Description, figures: Figures) -> Graph:
    g = new_graph()
    ds = node.dataset(desc.id)
    g.add((ds, RDF.type, DCAT.Dataset))
    _identification(g, ds, node, desc, figures)
    _classification(g, ds, desc)
    _rights(g, ds, node, desc)
    _population(g, ds, desc, figures)
    _imaging(g, ds, figures)
    _keywords_and_provenance(g, ds, desc, figures)
    g.add((ds, DCTERMS.isPartOf, node.catalog()))
    dist = node.distribution(desc.id)
    g.add((ds, DCAT.distribution, dist))
    container(g, ds, f"{ds}/distribution/", DCAT.distribution, [dist], "Distributions")
    return clean(g)


def _identification(g: Graph, ds: URIRef, node: Node, desc: Description, figures: Figures) -> None:
    g.add((ds, DCTERMS.identifier, Literal(desc.id)))
    g.add((ds, DCTERMS.title, Literal(desc.title, lang="en")))
    g.add(
        (ds, DCTERMS.description, Literal(desc.description or _summary(desc, figures), lang="en"))
    )
    g.add((ds, DCAT.version, Literal(desc.version or _calver(desc.last_updated))))
    _add_iris(g, ds, EUCAIM.interoperabilityLevel, [desc.interoperability_level])
    contacts = [c for c in desc.contacts if c.email or c.url] or [node.publisher]
    for n, who in enumerate(c for c in contacts if c.email or c.url):
        g.add((ds, DCAT.contactPoint, contact_point(g, URIRef(f"{ds}#contact-{n + 1}"), who)))
    metadata_dates(g, ds, desc.issued, desc.last_updated)
    if desc.last_updated:
        g.add((ds, DCTERMS.modified, Literal(desc.last_updated, datatype=XSD.dateTime)))


def _classification(g: Graph, ds: URIRef, desc: Description) -> None:
    g.add((ds, DCAT.theme, DATA_THEME.HEAL))
    g.add((ds, HEALTH.healthTheme, HEALTH_THEME.CANCER_DISEASE))
    _add_iris(g, ds, HEALTH.healthCategory, desc.health_categories or [str(HEALTH_CATEGORY.EHRS)])
    default = DPV.PseudonymisedData if desc.deid_profile in PSEUDONYMISED else DPV.Data
    _add_iris(g, ds, DCTERMS.type, desc.types or [str(default)])


def _rights(g: Graph, ds: URIRef, node: Node, desc: Description) -> None:
    g.add((ds, DCTERMS.accessRights, ACCESS_RIGHT[desc.access_rights or "NON_PUBLIC"]))
    _add_iris(g, ds, DCATAP.applicableLegislation, desc.legislation or [EHDS])
    publisher = Contact(desc.publisher_name, desc.publisher_email, desc.publisher_url)
    if not publisher.name:
        publisher = node.publisher
    if publisher.name:
        g.add((ds, DCTERMS.publisher, agent(g, URIRef(f"{ds}#publisher"), publisher)))


def _population(g: Graph, ds: URIRef, desc: Description, figures: Figures) -> None:
    g.add((ds, HEALTH.hasStructuredData, Literal(False)))
    g.add(
        (
            ds,
            HEALTH.numberOfUniqueIndividuals,
            Literal(figures.subjects, datatype=XSD.nonNegativeInteger),
        )
    )
    g.add((ds, HEALTH.numberOfRecords, Literal(figures.studies, datatype=XSD.nonNegativeInteger)))
    for code in sorted({SEX.get(s.strip().upper(), SEX_UNKNOWN) for s in figures.sexes}):
        g.add((ds, EUCAIM.hasBirthSex, EUCAIM[code]))
    for coding in desc.conditions:
        code = coding.get("code", "")
        g.add(
            (
                ds,
                EUCAIM.hasCondition,
                EUCAIM[CONDITION[code]] if code in CONDITION else SNOMED[quote(code, safe="")],
            )
        )
    _add_iris(g, ds, EUCAIM.collectionMethod, desc.collection_methods)


def _imaging(g: Graph, ds: URIRef, figures: Figures) -> None:
    for m in figures.modalities:
        g.add(
            (
                ds,
                EUCAIM.hasImageModality,
                EUCAIM[MODALITY[m]] if m in MODALITY else DCM[quote(m, safe="")],
            )
        )
    for term, snomed in figures.body_parts:
        value = SNOMED[quote(snomed, safe="")] if snomed else labelled(g, EUCAIM.BP1000024, term)
        g.add((ds, EUCAIM.hasImageBodyPart, value))
    for name in figures.manufacturers:
        code = manufacturer_code(name)
        value = EUCAIM[code] if code else labelled(g, EUCAIM.IMG1000010, name)
        g.add((ds, EUCAIM.hasEquipmentManufacturer, value))
    if figures.first_year and figures.last_year:
        period = URIRef(f"{ds}#acquisition-period")
        g.add((ds, DCTERMS.temporal, period))
        g.add((period, RDF.type, DCTERMS.PeriodOfTime))
        g.add((period, DCAT.startDate, Literal(figures.first_year, datatype=XSD.gYear)))
        g.add((period, DCAT.endDate, Literal(figures.last_year, datatype=XSD.gYear)))


def _keywords_and_provenance(g: Graph, ds: URIRef, desc: Description, figures: Figures) -> None:
    keywords = (
        desc.keywords
        or [c.get("display") or c.get("code", "") for c in desc.conditions] + figures.modalities
    )
    for word in dict.fromkeys(k for k in keywords if k):
        g.add((ds, DCAT.keyword, Literal(word, lang="en")))
    statements = [*desc.provenance, DEID_TEXT.get(desc.deid_profile or "", DEID_UNKNOWN)]
    for n, text in enumerate(statements):
        node = URIRef(f"{ds}#provenance-{n + 1}")
        g.add((ds, DCTERMS.provenance, node))
        g.add((node, RDF.type, DCTERMS.ProvenanceStatement))
        g.add((node, RDFS.label, Literal(text, lang="en")))


def distribution_record(node: Node, desc: Description) -> Graph:
    """The DICOMweb distribution: access URL, legislation, EUCAIM access conditions as rights."""
    g = new_graph()
    dist = node.distribution(desc.id)
    g.add((dist, RDF.type, DCAT.Distribution))
    g.add((dist, DCTERMS.title, Literal(f"{desc.title} (DICOMweb)", lang="en")))
    g.add((dist, DCTERMS.description, Literal(
        "DICOM images of the dataset through the gateway's DICOMweb service (QIDO-RS, WADO-RS); "
        "access needs an OAuth2 token granted by a data-access agreement.", lang="en")))  # fmt: skip
    g.add((dist, DCTERMS.isPartOf, node.dataset(desc.id)))
    dicomweb = URIRef(f"{node.gateway}/dicom-web")
    g.add((dist, DCAT.accessURL, iri(desc.access_url) or dicomweb))
    service = URIRef(f"{dist}#service")
    g.add((dist, DCAT.accessService, service))
    g.add((service, RDF.type, DCAT.DataService))
    g.add((service, DCTERMS.title, Literal("DICOMweb", lang="en")))
    g.add((service, DCAT.endpointURL, dicomweb))
    g.add(
        (
            dist,
            DCAT.mediaType,
            URIRef("https://www.iana.org/assignments/media-types/application/dicom"),
        )
    )
    _add_iris(g, dist, DCATAP.applicableLegislation, desc.legislation or [EHDS])
    for condition in _conditions(desc):
        rights = ACCESS_CONDITION[ACCESS_CONDITIONS[condition]]
        g.add((dist, DCTERMS.rights, rights))
        g.add((rights, RDF.type, DCTERMS.RightsStatement))
        g.add((rights, SKOS.notation, Literal(ACCESS_CONDITIONS[condition])))
    _add_iris(g, dist, DCTERMS.license, [desc.license])
    metadata_dates(g, dist, desc.issued, desc.last_updated)
    return clean(g)


def _add_iris(g: Graph, subject: URIRef, prop: URIRef, values: Sequence[str | None]) -> None:
    for value in values:
        if (node := iri(value)) is not None:
            g.add((subject, prop, node))


def _conditions(desc: Description) -> list[str]:
    known = [c for c in dict.fromkeys(desc.access_conditions) if c in ACCESS_CONDITIONS]
    if not known and desc.access_rights == "PUBLIC":
        return ["download"]  # public reading is downloading
    return known


def _summary(desc: Description, figures: Figures) -> str:
    cancers = ", ".join(c.get("display") or c.get("code", "") for c in desc.conditions)
    modalities = ", ".join(figures.modalities)
    return (
        f"Imaging dataset {desc.title}"
        + (f" ({cancers})" if cancers else "")
        + (f"; modalities {modalities}." if modalities else ".")
    )


def _calver(last_updated: str | None) -> str:
    """Calendar Versioning from the day the dataset was last changed (YYYY.MM.DD)."""
    return (last_updated or "1970-01-01")[:10].replace("-", ".")
