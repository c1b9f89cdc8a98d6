"""``imaging-gateway restore``: put a backup back as a data directory, all or nothing.

The manifest and every file's size and sha256 are checked before anything is
written; a damaged backup is refused and the target is left as it was. The files
are then copied (and hashed again) into a staging folder beside the target, given
modes 0600 (files) / 0700 (folders), and renamed into place. A target that is a
mount point (a container volume) cannot be replaced by a rename: the staging folder
is then made inside it and its entries are renamed into place one by one.
A non-empty target is refused unless ``force``; its old content is kept aside
(``<target>.before-restore-<time>``, or a hidden folder inside a mount point), never
deleted. The gateway must not be running on the target meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from server.errors import BadRequest
from server.services import backup_files as bf
from server.services.backup import NoProgress, Progress
from server.services.backup_manifest import (
    DATA,
    ES_MEMBERSHIP,
    BackupInvalid,
    FileEntry,
    read_manifest,
    verify_files,
)


@dataclass
class RestoreReport:
    target: Path
    manifest: dict[str, Any]
    files: int = 0
    bytes: int = 0
    set_aside: Path | None = None
    membership: Path | None = None  # Elasticsearch: the dataset of every blob, for reindex

    @property
    def index_backend(self) -> str:
        return str(self.manifest.get("index_backend", "sqlite"))


def verify_backup(
    source: Path, progress: Progress | None = None
) -> tuple[dict[str, Any], list[FileEntry]]:
    """The manifest and entries of an intact backup (BackupInvalid naming each problem)."""
    progress = progress or NoProgress()
    if not source.is_dir():
        raise BackupInvalid(source, ["not a folder"])
    manifest, entries = read_manifest(source)
    progress.phase("verify", sum(e.size for e in entries))
    verify_files(source, entries, progress.advance)
    return manifest, entries


def restore(source: Path, target: Path, *, force: bool = False,
            progress: Progress | None = None) -> RestoreReport:  # fmt: skip
    progress = progress or NoProgress()
    occupied = _check_target(target, force)
    manifest, entries = verify_backup(source, progress)
    files = [e for e in entries if e.path.startswith(f"{DATA}/")]
    mounted = target.is_dir() and os.path.ismount(target)
    stage = (
        target if mounted else target.parent
    ) / f".{target.name}.restore-{uuid.uuid4().hex[:8]}"
    bf.private_dir(stage)
    try:
        progress.phase("restore", sum(e.size for e in files))
        for entry in files:
            rel = entry.path[len(DATA) + 1 :]
            if bf.copy_file(source / entry.path, stage / rel, progress.advance) != entry.sha256:
                raise BackupInvalid(source, [f"{entry.path}: changed while being restored"])
        bf.seal_tree(stage)
        aside = _install(stage, target, occupied=occupied, mounted=mounted)
    except BaseException:
        bf.remove_tree(stage)
        raise
    membership = source / ES_MEMBERSHIP
    return RestoreReport(
        target=target, manifest=manifest, files=len(files), bytes=sum(e.size for e in files),
        set_aside=aside, membership=membership if membership.is_file() else None,
    )  # fmt: skip


def _check_target(target: Path, force: bool) -> bool:
    """Whether ``target`` holds anything; refuses unless ``force`` when it does."""
    if target.exists() and not target.is_dir():
        raise BadRequest(f"{target} exists and is not a folder")
    if not target.exists() and not target.parent.is_dir():
        raise BadRequest(f"{target.parent} does not exist")
    occupied = target.is_dir() and any(target.iterdir())
    if occupied and not force:
        raise BadRequest(
            f"{target} is not empty; restore into an empty or new folder, or pass --force "
            "(the current content is kept aside, not deleted)"
        )
    return occupied


def _install(stage: Path, target: Path, *, occupied: bool, mounted: bool) -> Path | None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside: Path | None = None
    if not mounted:
        if occupied:
            aside = target.with_name(f"{target.name}.before-restore-{stamp}")
            os.rename(target, aside)
        os.rename(stage, target)  # replaces an empty folder too
        bf.fsync_dir(target.parent)
        return aside
    if occupied:
        aside = target / f".before-restore-{stamp}"
        bf.private_dir(aside)
        for entry in target.iterdir():
            if entry not in (stage, aside):
                os.rename(entry, aside / entry.name)
    for entry in stage.iterdir():
        os.rename(entry, target / entry.name)
    stage.rmdir()
    os.chmod(target, bf.DIR_MODE)
    bf.fsync_dir(target)
    return aside


def membership_of(report: RestoreReport) -> Path:
    """Where the dataset of every restored blob is recorded: the backup's membership file
    (Elasticsearch) or the restored embedded index."""
    return report.membership or report.target / "index.sqlite"


def read_membership(path: Path) -> dict[str, str | None]:
    """blob key -> dataset, from a backup's ``elasticsearch-datasets.jsonl`` or an ``index.sqlite``."""
    out: dict[str, str | None] = {}
    if bf.is_sqlite(path):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            sql = "SELECT i.blob_key, s.dataset FROM instance i JOIN study s ON s.pk = i.study_pk"
            return {str(k): d for k, d in conn.execute(sql)}
        finally:
            conn.close()
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                key, dataset = orjson.loads(line)
                out[str(key)] = None if dataset is None else str(dataset)
    return out
