"""``manifest.json`` of a backup: what it holds, and the check that it is intact.

The manifest lists every file of the backup (path, size, sha256, kind) and carries
a ``digest``: the sha256 of the manifest's canonical JSON without that field, so a
changed manifest is refused as surely as a changed file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from server.services import backup_files as bf

FORMAT = "cancer-imaging-gateway-backup"
VERSION = 1
MANIFEST = "manifest.json"
DATA = "data"  # the data directory's files, under their own relative paths
ES_MEMBERSHIP = "elasticsearch-datasets.jsonl"  # [blob key, dataset] per line


class BackupInvalid(Exception):
    """A backup that must not be restored: each problem found is listed."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"backup {source} is damaged or incomplete; nothing was restored:\n  {shown}{more}"
        )


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    kind: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "kind": self.kind}


def _digest(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "digest"}
    return hashlib.sha256(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)).hexdigest()


def write_manifest(stage: Path, header: dict[str, Any], entries: list[FileEntry]) -> None:
    body = {"format": FORMAT, "version": VERSION, **header,
            "files": [e.as_json() for e in entries]}  # fmt: skip
    body["digest"] = _digest(body)
    path = stage / MANIFEST
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.chmod(path, bf.FILE_MODE)


def _safe_path(text: object) -> PurePosixPath | None:
    if not isinstance(text, str) or not text or "\\" in text:
        return None
    path = PurePosixPath(text)
    if path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        return None
    if path.parts[0] != DATA and text != ES_MEMBERSHIP:
        return None
    return path


def read_manifest(source: Path) -> tuple[dict[str, Any], list[FileEntry]]:
    """The manifest of the backup at ``source`` (BackupInvalid if unreadable or altered)."""
    try:
        body = orjson.loads((source / MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise BackupInvalid(source, [f"{MANIFEST} is missing: not a gateway backup"]) from exc
    except orjson.JSONDecodeError as exc:
        raise BackupInvalid(source, [f"{MANIFEST} is not valid JSON ({exc})"]) from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BackupInvalid(source, [f"{MANIFEST} is not a {FORMAT} manifest"])
    if body.get("version") != VERSION:
        raise BackupInvalid(
            source, [f"backup format version {body.get('version')!r} is not {VERSION}"]
        )
    if body.get("digest") != _digest(body):
        raise BackupInvalid(source, [f"{MANIFEST} was changed after the backup (digest mismatch)"])
    entries, problems = [], []
    for item in body.get("files", []):
        try:
            entry = FileEntry(
                item["path"], int(item["size"]), str(item["sha256"]), str(item["kind"])
            )
        except (KeyError, TypeError, ValueError):
            problems.append(f"manifest entry {item!r} is malformed")
            continue
        if _safe_path(entry.path) is None:
            problems.append(f"manifest entry {entry.path!r} points outside the backup")
        entries.append(entry)
    if problems:
        raise BackupInvalid(source, problems)
    return body, entries


def verify_files(source: Path, entries: list[FileEntry], progress: Callable[[int], object]) -> None:
    """Every listed file present with its size and sha256, and no file that is not listed."""
    problems: list[str] = []
    listed = {e.path for e in entries}
    for rel in bf.walk(source):
        if str(rel) != MANIFEST and str(rel) not in listed:
            problems.append(f"{rel}: not in the manifest (added after the backup)")
    for entry in entries:
        path = source / entry.path
        if path.is_symlink() or not path.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        if path.stat().st_size != entry.size:
            problems.append(f"{entry.path}: size {path.stat().st_size}, manifest says {entry.size}")
            continue
        if bf.sha256_file(path, progress) != entry.sha256:
            problems.append(f"{entry.path}: content differs from the manifest (sha256 mismatch)")
    if problems:
        raise BackupInvalid(source, problems)
