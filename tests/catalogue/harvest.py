"""A FAIR Data Point harvester, as the FDP reference implementation's index harvests, and the
EUCAIM DCAT-AP SHACL shapes: what the catalogue tests run against a live gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pyshacl import validate
from rdflib import Graph, URIRef
from rdflib.namespace import RDF, Namespace

LDP = Namespace("http://www.w3.org/ns/ldp#")
DCAT = Namespace("http://www.w3.org/ns/dcat#")
FDP = Namespace("https://w3id.org/fdp/fdp-o#")
R3D = Namespace("http://www.re3data.org/schema/3-0#")
SH = Namespace("http://www.w3.org/ns/shacl#")
SHAPES_FILE = Path(__file__).resolve().parents[2] / "profiles" / "shacl" / "eucaim-dcat-ap.ttl"
FORMATS = {"text/turtle": "turtle", "application/ld+json": "json-ld",
           "application/rdf+xml": "xml", "text/n3": "n3"}  # fmt: skip
# the reference harvester's navigation when a record has no LDP container
LINKS = (FDP.metadataCatalog, R3D.dataCatalog, DCAT.dataset, DCAT.distribution)


@dataclass
class Harvest:
    records: dict[str, Graph] = field(default_factory=dict)  # URL -> graph (Turtle)

    def union(self) -> Graph:
        out = Graph()
        for g in self.records.values():
            out += g
        return out


def harvest(http: httpx.Client, root: str) -> Harvest:
    """Crawl from the FDP root: GET each URL as Turtle, follow ``ldp:contains`` of its
    containers, else the DCAT/FDP links; every URL once."""
    found = Harvest()
    queue = [root]
    while queue:
        url = queue.pop(0)
        if url in found.records:
            continue
        answer = http.get(url, headers={"Accept": "text/turtle"})
        assert answer.status_code == 200, (url, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("text/turtle"), answer.headers
        graph = Graph().parse(data=answer.text, format="turtle", publicID=url)
        found.records[url] = graph
        containers = list(graph.subjects(RDF.type, LDP.DirectContainer))
        if containers:
            children = [o for c in containers for o in graph.objects(c, LDP.contains)]
        else:
            children = [o for p in LINKS for o in graph.objects(URIRef(url), p)]
        queue += [str(c) for c in children]
    return found


_SHAPES: list[Graph] = []


def shapes() -> Graph:
    if not _SHAPES:
        _SHAPES.append(Graph().parse(SHAPES_FILE, format="turtle"))
    return _SHAPES[0]


def shacl_results(graph: Graph) -> tuple[list[str], list[str]]:
    """(violations, warnings) of the EUCAIM DCAT-AP shapes, as readable lines."""
    _, report, _ = validate(graph, shacl_graph=shapes(), inference="none", advanced=True)
    out: dict[URIRef, list[str]] = {SH.Violation: [], SH.Warning: []}
    for result in report.subjects(RDF.type, SH.ValidationResult):
        severity = report.value(result, SH.resultSeverity)
        line = (f"{report.value(result, SH.focusNode)} {report.value(result, SH.resultPath)}: "
                f"{report.value(result, SH.resultMessage)}")  # fmt: skip
        out.setdefault(severity, []).append(line)
    return out[SH.Violation], out[SH.Warning]
