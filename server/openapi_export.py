"""Write the OpenAPI document to a file, or check that the committed one is current."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson


def current_document() -> bytes:
    from server.app import create_app
    from server.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)))
        document = app.openapi()
        app.state.gateway.close()
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    target = Path(next(a for a in argv if not a.startswith("--")))
    document = current_document()
    if check:
        if not target.exists() or target.read_bytes() != document:
            print(f"{target} is out of date: run 'make openapi' and commit it", file=sys.stderr)
            return 1
        return 0
    target.write_bytes(document)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
