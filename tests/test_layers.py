"""The layers of ``server/`` hold: data flows edge -> service -> core/index/storage, never back.

Every import of every module counts, those under ``if TYPE_CHECKING`` and inside functions
too (a type-only import still couples the layers). A new import that breaks a rule below
fails here with its file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SERVER = Path(__file__).resolve().parent.parent / "server"

EDGES = ("api", "dimse", "federation", "cli")  # protocol edges and the command line
BACKENDS = ("index", "storage", "database")
# Libraries that reach the network, a database or the web: never in pure logic.
IMPURE = ("fastapi", "starlette", "uvicorn", "sqlite3", "elasticsearch", "psycopg",
          "psycopg_pool", "boto3", "botocore", "httpx", "pynetdicom", "authlib")  # fmt: skip
# What an edge may know of a backend: the protocols and their value types, not an engine.
BACKEND_PROTOCOLS = ("server.index.base", "server.storage.base", "server.database")


@dataclass(frozen=True)
class Import:
    where: str  # path:line
    package: str  # the importing module's package under server/ ("app" for server/app.py)
    name: str  # the imported module


def imports(root: Path, files: Iterable[Path]) -> list[Import]:
    found = []
    for path in files:
        parts = path.relative_to(root).with_suffix("").parts
        package = parts[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            where = f"{path.relative_to(root.parent)}:{node.lineno}"
            found.extend(Import(where, package, name) for name in names)
    return found


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _server(*packages: str) -> tuple[str, ...]:
    return tuple(f"server.{p}" for p in packages)


def violations(found: Iterable[Import]) -> list[str]:
    """Each import that breaks a rule, with the rule it breaks."""
    broken = []
    for imp in found:
        rule = None
        if imp.package == "core":
            if not _under(imp.name, "server.core", "server.errors") and (
                _under(imp.name, "server") or _under(imp.name, *IMPURE)
            ):
                rule = "core is pure: it imports only core and errors, no web, database or network"  # fmt: skip
        elif imp.package in BACKENDS:
            if _under(imp.name, *_server(*EDGES, "services", "security", "app")):
                rule = "a backend imports no service, security module, edge or the composition root"  # fmt: skip
        elif imp.package in ("services", "security"):
            if _under(imp.name, *_server(*EDGES, "app")):
                rule = "a service imports no edge and not the composition root (it gets its parts)"  # fmt: skip
        elif imp.package in EDGES:
            engine = _under(imp.name, *_server(*BACKENDS)) and not _under(imp.name, *BACKEND_PROTOCOLS)  # fmt: skip
            library = _under(imp.name, "sqlite3", "elasticsearch", "psycopg", "boto3")
            if engine or library:
                rule = "an edge talks to services, never to a backend engine"
        if rule:
            broken.append(f"{imp.where}: import {imp.name}: {rule}")
    return broken


def test_no_module_of_the_server_imports_against_the_layers() -> None:
    assert violations(imports(SERVER, sorted(SERVER.rglob("*.py")))) == []


def test_the_check_reports_an_upward_or_impure_import(tmp_path: Path) -> None:
    root = tmp_path / "server"
    sources = {
        "core/pixels.py": "import fastapi\nfrom server.index.sqlite import SqliteIndex\n",
        "index/sqlite.py": "from server.services.ingest import IngestService\n",
        "services/pull.py": "if TYPE_CHECKING:\n    from server.app import Gateway\n",
        "api/wado.py": "from server.index.base import Scope\nimport server.storage.s3\n",
        "core/fine.py": "from server.core.dicom_json import to_json\nimport numpy\n",
    }
    for name, text in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = violations(imports(root, sorted(root.rglob("*.py"))))
    assert [line.split(": import ")[0] for line in found] == [
        "server/api/wado.py:2",
        "server/core/pixels.py:1",
        "server/core/pixels.py:2",
        "server/index/sqlite.py:1",
        "server/services/pull.py:2",
    ]
