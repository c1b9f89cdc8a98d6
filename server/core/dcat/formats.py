"""Content negotiation of the FAIR Data Point's RDF (as the FDP reference implementation does:
Turtle by default and for ``text/plain``, JSON-LD, RDF/XML, N3)."""

from __future__ import annotations

from server.core.mediatypes import parse_accept
from server.errors import NotAcceptable

TURTLE = "text/turtle"
# media type -> rdflib serializer, in order of preference for wildcards
FORMATS = {
    TURTLE: "turtle",
    "application/ld+json": "json-ld",
    "application/rdf+xml": "xml",
    "text/n3": "n3",
}
ALIASES = {"text/plain": TURTLE}


def negotiate_rdf(header: str | None) -> tuple[str, str]:
    """(media type, rdflib format) of the best acceptable RDF syntax; NotAcceptable if none."""
    for r in parse_accept(header):
        wanted = ALIASES.get(r.type, r.type)
        if wanted in FORMATS:
            return wanted, FORMATS[wanted]
        for media, fmt in FORMATS.items():
            if r.matches(media):
                return media, fmt
    raise NotAcceptable(
        f"cannot produce any of Accept: {header!r}; the FAIR Data Point offers "
        + ", ".join(FORMATS)
    )
