"""RDF namespaces and the code tables that turn DICOM/FHIR values into catalogue IRIs.

EUCAIM hyper-ontology codes (namespace ``https://cancerimage.eu/ontology/EUCAIM#``, from the
EUCAIM DCAT-AP v1.0 examples) are used where a public EUCAIM component names the code for
the value: sex, modalities and manufacturers from the node agent Focus's EUCAIM adapter
(samply/focus ``src/eucaim_beacon.rs``, ``src/eucaim_sql.rs``), CT and mammography from the
EUCAIM CDM hyper-ontology patch of chaimeleon-eu, cancer types from Focus's ``eucaim_sql``
adapter. Values without a known EUCAIM code keep an IRI of the terminology they come from
(DICOM DCM for modalities, SNOMED CT for body parts and cancer types) or, for
manufacturers, a labelled node, never an invented EUCAIM code.
"""

from __future__ import annotations

from rdflib import Namespace
from rdflib.namespace import DCTERMS, FOAF, PROV, RDF, RDFS, SKOS, XSD

__all__ = ["DCAT", "DCTERMS", "FOAF", "LDP", "PROV", "RDF", "RDFS", "SKOS", "VCARD", "XSD"]

DCAT = Namespace("http://www.w3.org/ns/dcat#")  # DCAT 3 (rdflib's closed DCAT 2 lacks dcat:version)
LDP = Namespace("http://www.w3.org/ns/ldp#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
EUCAIM = Namespace("https://cancerimage.eu/ontology/EUCAIM#")
HEALTH = Namespace("https://w3id.org/healthdcat-ap#")
DCATAP = Namespace("http://data.europa.eu/r5r/")
CV = Namespace("http://data.europa.eu/m8g/")
DPV = Namespace("https://w3id.org/dpv#")
FDP = Namespace("https://w3id.org/fdp/fdp-o#")
R3D = Namespace("http://www.re3data.org/schema/3-0#")
ADMS = Namespace("http://www.w3.org/ns/adms#")
DCM = Namespace("http://dicom.nema.org/resources/ontology/DCM/")
SNOMED = Namespace("http://snomed.info/id/")
ACCESS_RIGHT = Namespace("http://publications.europa.eu/resource/authority/access-right/")
DATA_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
LANGUAGE = Namespace("http://publications.europa.eu/resource/authority/language/")
HEALTH_CATEGORY = Namespace(
    "https://hdeu-dcat.acceptance.data.health.europa.eu/resource/authority/healthcategories/"
)
HEALTH_THEME = Namespace(
    "https://hdeu-dcat.acceptance.data.health.europa.eu/resource/authority/health-theme/"
)
ACCESS_CONDITION = Namespace(
    "https://eucaim.github.io/eucaim_dcat_ap/releases/controlled-vocabularies/access-conditions/#"
)
EHDS = "http://data.europa.eu/eli/reg/2025/327/oj"

PREFIXES = {
    "dcat": DCAT, "dct": DCTERMS, "foaf": FOAF, "ldp": LDP, "vcard": VCARD, "xsd": XSD,
    "eucaim": EUCAIM, "healthdcatap": HEALTH, "dcatap": DCATAP, "cv": CV, "dpv": DPV,
    "fdp-o": FDP, "r3d": R3D, "adms": ADMS, "prov": PROV, "skos": SKOS,
}  # fmt: skip

# PatientSex (0010,0040) -> EUCAIM sex assigned at birth; '' = absent.
SEX = {"M": "COM1001366", "F": "COM1001370", "O": "COM1001288", "": "COM1002760"}
SEX_UNKNOWN = "COM1002760"

# Modality (0008,0060) -> EUCAIM imaging modality.
MODALITY = {"MR": "IMG1000038", "PT": "IMG1000062", "CT": "IMG1000026", "MG": "IMG1000030"}

# Manufacturer (0008,0070), matched case-insensitively on its first word(s).
MANUFACTURER = (
    (("siemens",), "IMG1000044"),
    (("ge ", "ge medical", "general electric"), "IMG1000047"),
    (("philips",), "IMG1000046"),
    (("toshiba",), "IMG1000045"),
)

# Cancer type (SNOMED CT code of ResearchStudy.condition) -> EUCAIM malignant neoplastic disease.
CONDITION = {
    "254837009": "CLIN1000060",  # breast
    "363406005": "CLIN1000057",  # colon
    "363358000": "CLIN1000065",  # lung
    "399068003": "CLIN1000075",  # prostate
    "393563007": "CLIN1007990",  # glioblastoma (chaimeleon-eu hyper-ontology patch)
}

# The gateway's access conditions -> EUCAIM access conditions (controlled vocabulary of the profile).
ACCESS_CONDITIONS = {
    "download": "DOWNLOAD",
    "in-situ-processing": "IN_SITU_PROCESSING",
    "remote-processing": "REMOTE_PROCESSING",
}


def manufacturer_code(name: str) -> str | None:
    text = name.strip().lower() + " "
    for prefixes, code in MANUFACTURER:
        if text.startswith(prefixes):
            return code
    return None
