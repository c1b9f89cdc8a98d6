"""The README tells the truth about what the code offers: every setting has its one row in the
Configuration table (and no row names a setting that does not exist), every API route a
README table names is in the exported OpenAPI document, and the table of contents links to
headings that exist."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from server.settings import OTHER_VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    return README[start : README.index("\n## ", start + 1)]


def settings_variables(model: type[BaseModel] = Settings, prefix: str = "GATEWAY_") -> Iterator[str]:  # fmt: skip
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from settings_variables(kind, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}"


def documented_variables(table: str) -> list[str]:
    """The variables of the table's first column; `__X` after `GATEWAY_GROUP__Y` in one cell
    is `GATEWAY_GROUP__X` (the table's shorthand)."""
    names = []
    for line in table.splitlines():
        if not line.startswith("| `GATEWAY_"):
            continue
        group = ""
        for token in re.findall(r"`(GATEWAY_[A-Z0-9_]+|__[A-Z0-9_]+)`", line.split(" | ")[0]):
            if token.startswith("GATEWAY_"):
                group = token[: token.rindex("__") + 2] if "__" in token else "GATEWAY_"
                names.append(token)
            else:
                names.append(group + token[2:])
    return names


def test_every_setting_has_exactly_one_row_in_the_configuration_table() -> None:
    rows = Counter(documented_variables(_section("Configuration")))
    settings = set(settings_variables())
    assert sorted(settings - set(rows)) == []  # undocumented settings
    assert sorted(set(rows) - settings - OTHER_VARIABLES) == []  # rows of no setting
    assert sorted(name for name, n in rows.items() if n > 1) == []  # documented twice


def _route_pattern(path: str) -> re.Pattern[str]:
    """An OpenAPI path as a pattern: a placeholder matches any one segment or placeholder."""
    parts = re.split(r"\{[^}]*\}", path.rstrip("/"))
    return re.compile("[^/]+".join(re.escape(p) for p in parts) + "/?")


def test_every_route_in_the_readme_tables_is_in_the_openapi_document() -> None:
    openapi = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    routes = [(method.upper(), _route_pattern(path)) for path, ops in openapi["paths"].items() for method in ops]  # fmt: skip
    named = set()
    for line in README.splitlines():
        cell = line.split(" | ")[0] if line.startswith("| `") else ""
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^ `]*)`", cell):
            named.add((method, path.split("?")[0]))
    assert len(named) >= 15  # the pattern still finds the tables

    def known(method: str, path: str) -> bool:  # DICOMweb tables write paths under /dicom-web
        candidates = (path, f"/dicom-web{path}")
        return any(method == m and p.fullmatch(c) for m, p in routes for c in candidates)

    missing = [(method, path) for method, path in named if not known(method, path)]
    assert sorted(missing) == []


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_table_of_contents_links_to_headings_that_exist() -> None:
    headings = {_anchor(h) for h in re.findall(r"^#{2,3} (.+)$", README, re.M)}
    contents = README[README.index("\n## Contents\n") : README.index("\n## ", README.index("\n## Contents\n") + 1)]  # fmt: skip
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(links) >= 10
    assert sorted(set(links) - headings) == []
