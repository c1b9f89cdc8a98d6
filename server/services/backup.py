"""``imaging-gateway backup``: a consistent online copy of every piece of a gateway's state.

Order within one *round* (the gateway keeps serving and storing meanwhile):

1. the index: ``index.sqlite`` through SQLite's online backup API, or - with the
   Elasticsearch backend, whose index is derived data - the dataset membership of
   every indexed blob (``elasticsearch-datasets.jsonl``), which ``reindex`` needs;
2. the other databases (FHIR store, clients and replay table, then any other SQLite
   file), then keys and other plain files;
3. the audit anchor is read, then ``audit.sqlite`` is snapshotted; the copy's anchor
   is set to the snapshot's last event after checking that the snapshot contains
   the event the live anchor names (so ``audit verify`` passes on a restore, and a
   truncated live log is not hidden);
4. blobs referenced by the index snapshot are copied (or hard-linked) and their
   sha256 checked. A blob is written before its index row commits, so every blob the
   snapshot references exists - unless a DELETE (or an overwrite) removed it after
   the snapshot. Such a blob is looked for in ``trash/``; if it is gone the round is
   repeated with fresh snapshots (copied blobs are kept); after ``ROUNDS`` rounds
   the rows of blobs still missing are removed from the copy of the index, i.e. the
   backup shows those deletions as completed.

Blobs on disk that the snapshot does not reference are not copied: they belong to
uploads not yet acknowledged (or are orphans ``check`` reports). The result is
staged beside DEST and renamed into place after ``manifest.json`` (sizes, sha256 and
a digest of the manifest itself) is written.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import orjson

from server import __version__
from server.errors import BadRequest
from server.index.sqlite import SqliteIndex
from server.services import backup_files as bf
from server.services.backup_manifest import (
    DATA,
    ES_MEMBERSHIP,
    FileEntry,
    write_manifest,
)

log = logging.getLogger("gateway.backup")

ROUNDS = 3


class Progress(Protocol):
    def phase(self, name: str, total: int | None) -> None: ...
    def advance(self, amount: int) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


class MembershipSource(Protocol):
    """blob key -> (dataset, sha256, size) of every indexed instance (Elasticsearch)."""

    def __call__(self) -> Iterable[tuple[str, str | None, str, int]]: ...


@dataclass
class BackupReport:
    dest: Path
    index_backend: str
    files: int = 0
    bytes: int = 0
    databases: list[str] = field(default_factory=list)
    instances: int = 0
    blobs_linked: int = 0
    rounds: int = 0
    rows_dropped: list[str] = field(default_factory=list)  # deleted while the backup ran
    not_copied: dict[str, int] = field(default_factory=dict)  # kind -> files left out
    unreferenced_blobs: int = 0
    unclassified: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # live-data damage found on the way
    external_key: Path | None = None


@dataclass
class _Round:
    refs: dict[str, tuple[str, int]]  # blob key -> (sha256, size) the index snapshot references
    memberships: list[tuple[str, str | None]] = field(default_factory=list)


class BackupService:
    def __init__(self, data_dir: Path, *, index_backend: str, membership: MembershipSource | None = None,
                 link: bool = False, progress: Progress | None = None,
                 external_key: Path | None = None) -> None:  # fmt: skip
        if index_backend == "elasticsearch" and membership is None:
            raise ValueError("the Elasticsearch backend needs a membership source")
        self.data_dir = data_dir
        self.index_backend = index_backend
        self.membership = membership
        self.link = link
        self.progress = progress or NoProgress()
        self.external_key = external_key

    def backup(self, dest: Path) -> BackupReport:
        self._check_target(dest)
        stage = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
        bf.private_dir(stage)
        try:
            report = self._fill(stage)
            report.dest = dest
            bf.seal_tree(stage)
            os.rename(stage, dest)  # replaces an empty DEST folder too
            bf.fsync_dir(dest.parent)
        except BaseException:
            bf.remove_tree(stage)
            raise
        return report

    def _check_target(self, dest: Path) -> None:
        if not self.data_dir.is_dir():
            raise BadRequest(f"data directory {self.data_dir} does not exist")
        data, target = self.data_dir.resolve(), dest.resolve()
        if target == data or data in target.parents:
            raise BadRequest(f"{dest} is inside the data directory {self.data_dir}")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise BadRequest(f"{dest} exists and is not an empty folder")
        if not dest.parent.is_dir():
            raise BadRequest(f"{dest.parent} does not exist")

    def _fill(self, stage: Path) -> BackupReport:
        report = BackupReport(stage, self.index_backend, external_key=self.external_key)
        data = stage / DATA
        copied: dict[str, tuple[str, int]] = {}  # blob key -> (sha256, size) in the stage
        missing: set[str] = set()
        for report.rounds in range(1, ROUNDS + 1):
            snap = self._snapshot_state(data, report)
            missing = self._copy_blobs(data, snap.refs, copied, report)
            if not missing:
                break
            log.info("round %d: %d blob(s) deleted after the snapshot", report.rounds, len(missing))
        for key in [k for k in copied if k not in snap.refs]:  # unreferenced by the final snapshot
            (data / _blob_rel(key)).unlink()
            del copied[key]
        if missing:
            self._drop_rows(data, snap, missing)
            report.rows_dropped = sorted(missing)
        report.instances = len(snap.refs) - len(missing)
        entries = self._entries(stage, copied, snap, report)
        report.files, report.bytes = len(entries), sum(e.size for e in entries)
        report.unreferenced_blobs = sum(
            1 for rel in bf.walk(self.data_dir / "blobs") if rel.name not in snap.refs
        )
        write_manifest(stage, self._manifest_header(report), entries)
        return report

    # ---------------------------------------------------------------- one round of snapshots

    def _snapshot_state(self, data: Path, report: BackupReport) -> _Round:
        files = {rel: bf.classify(self.data_dir, rel) for rel in bf.walk(self.data_dir)}
        report.not_copied = {}
        for kind in files.values():
            if kind in bf.NOT_COPIED or kind is bf.Kind.blob:
                report.not_copied[kind] = report.not_copied.get(kind, 0) + 1
        report.not_copied.pop(bf.Kind.blob, None)
        report.unclassified = [str(r) for r, k in files.items() if k is bf.Kind.unclassified]
        databases = sorted((r for r, k in files.items() if k is bf.Kind.sqlite), key=_db_order)
        self.progress.phase("databases", len(databases))
        snap = _Round(refs={})
        if self.index_backend == "elasticsearch":
            snap = self._membership_snapshot()
        for rel in databases:
            if str(rel) == bf.AUDIT_DB:
                self._copy_plain(data, files)  # keys before the audit log: it is always last
                self._snapshot_audit(data, report)
            else:
                bf.snapshot_sqlite(self.data_dir / rel, data / rel)
            if str(rel) == "index.sqlite" and self.index_backend == "sqlite":
                snap = _Round(refs=_index_refs(data / rel))
            self.progress.advance(1)
        if not any(str(r) == bf.AUDIT_DB for r in databases):
            self._copy_plain(data, files)
        report.databases = [str(r) for r in databases]
        return snap

    def _membership_snapshot(self) -> _Round:
        assert self.membership is not None
        refs: dict[str, tuple[str, int]] = {}
        memberships: list[tuple[str, str | None]] = []
        for key, dataset, sha256, size in self.membership():
            refs[key] = (sha256, size)
            memberships.append((key, dataset))
        return _Round(refs=refs, memberships=memberships)

    def _copy_plain(self, data: Path, files: dict[PurePosixPath, bf.Kind]) -> None:
        """Keys, held instances and unclassified files (each put in place atomically)."""
        for rel, kind in files.items():
            if kind in (bf.Kind.key, bf.Kind.held, bf.Kind.unclassified):
                try:
                    bf.copy_file(self.data_dir / rel, data / rel)
                except FileNotFoundError:  # replaced or removed meanwhile
                    log.warning("%s vanished while being backed up", rel)

    def _snapshot_audit(self, data: Path, report: BackupReport) -> None:
        live_anchor = self.data_dir / bf.AUDIT_ANCHOR
        try:
            anchored: dict[str, Any] | None = orjson.loads(live_anchor.read_bytes())
        except FileNotFoundError:
            anchored = None
        except orjson.JSONDecodeError:
            anchored = {}
        bf.snapshot_sqlite(self.data_dir / bf.AUDIT_DB, data / bf.AUDIT_DB)
        conn = sqlite3.connect(data / bf.AUDIT_DB)
        try:
            last = conn.execute(
                "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            held = (
                conn.execute("SELECT hash FROM audit_event WHERE seq = ?", (anchored.get("seq"),)).fetchone()
                if anchored else None
            )  # fmt: skip
        finally:
            conn.close()
        ok = anchored is None or (
            anchored.get("seq") == 0 or (held is not None and held[0] == anchored.get("hash"))
        )
        if ok:
            seq, digest = (last[0], last[1]) if last else (0, "0" * 64)
            anchor = data / bf.AUDIT_ANCHOR
            anchor.write_bytes(orjson.dumps({"seq": seq, "hash": digest}))
            os.chmod(anchor, bf.FILE_MODE)
        else:
            report.problems.append(
                "the live audit log does not contain the event its anchor names (run "
                "'imaging-gateway audit verify'); the backup keeps the live anchor as it is"
            )
            if live_anchor.exists():
                bf.copy_file(live_anchor, data / bf.AUDIT_ANCHOR)

    # ---------------------------------------------------------------- blobs

    def _copy_blobs(self, data: Path, refs: dict[str, tuple[str, int]],
                    copied: dict[str, tuple[str, int]], report: BackupReport) -> set[str]:  # fmt: skip
        todo = [k for k in refs if k not in copied]
        self.progress.phase("blobs", sum(refs[k][1] for k in todo))
        missing: set[str] = set()
        for key in todo:
            source = self._find_blob(key)
            if source is None:
                missing.add(key)
                continue
            target = data / _blob_rel(key)
            if self.link:
                digest, linked = bf.link_or_copy(source, target, self.progress.advance)
                report.blobs_linked += linked
            else:
                digest = bf.copy_file(source, target, self.progress.advance)
            if digest != refs[key][0]:
                report.problems.append(f"blob {key}: content does not match its sha256 (damaged)")
            copied[key] = (digest, target.stat().st_size)
        return missing

    def _find_blob(self, key: str) -> Path | None:
        path = self.data_dir / _blob_rel(key)
        if path.is_file():
            return path
        trash = self.data_dir / "trash"
        found = sorted(trash.glob(f"{key}.*")) if trash.is_dir() else []
        return found[0] if found else None

    def _drop_rows(self, data: Path, snap: _Round, missing: set[str]) -> None:
        if self.index_backend == "sqlite":
            index = SqliteIndex(data / "index.sqlite")
            try:
                index.remove_by_blob_keys(sorted(missing))
            finally:
                index.close()
            bf.snapshot_sqlite(data / "index.sqlite", data / "index.sqlite.tmp")
            os.replace(data / "index.sqlite.tmp", data / "index.sqlite")
            for suffix in ("-wal", "-shm"):
                (data / f"index.sqlite{suffix}").unlink(missing_ok=True)
        snap.memberships = [(k, d) for k, d in snap.memberships if k not in missing]

    # ---------------------------------------------------------------- manifest

    def _entries(self, stage: Path, copied: dict[str, tuple[str, int]], snap: _Round,
                 report: BackupReport) -> list[FileEntry]:  # fmt: skip
        entries: list[FileEntry] = []
        if self.index_backend == "elasticsearch":
            path = stage / ES_MEMBERSHIP
            with path.open("wb") as f:
                for key, dataset in snap.memberships:
                    f.write(orjson.dumps([key, dataset]) + b"\n")
            entries.append(
                FileEntry(ES_MEMBERSHIP, path.stat().st_size, bf.sha256_file(path), "membership")
            )
        data = stage / DATA
        for rel in bf.walk(data):
            path = data / rel
            kind = bf.classify(data, rel)
            if kind is bf.Kind.blob:
                digest, size = copied[rel.name]
            else:
                digest, size = bf.sha256_file(path), path.stat().st_size
            entries.append(FileEntry(f"{DATA}/{rel}", size, digest, str(kind)))
        return entries

    def _manifest_header(self, report: BackupReport) -> dict[str, Any]:
        return {
            "gateway_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "index_backend": self.index_backend,
            "instances": report.instances,
            "databases": report.databases,
            "rows_dropped": report.rows_dropped,
            "not_copied": {str(k): v for k, v in report.not_copied.items()},
            "unclassified": report.unclassified,
            "problems": report.problems,
            "external_signing_key": str(self.external_key) if self.external_key else None,
        }


def _db_order(rel: PurePosixPath) -> tuple[int, str]:
    name = str(rel)
    if name in bf.SNAPSHOT_ORDER:
        return bf.SNAPSHOT_ORDER.index(name), name
    return (len(bf.SNAPSHOT_ORDER) + (2 if name == bf.AUDIT_DB else 1)), name


def _blob_rel(key: str) -> PurePosixPath:
    if "/" in key or "\\" in key or key.startswith(".") or not key:
        raise ValueError(f"invalid blob key {key!r}")
    return PurePosixPath("blobs", key[:2], key[2:4], key)


def _index_refs(path: Path) -> dict[str, tuple[str, int]]:
    conn = sqlite3.connect(path)
    try:
        return {
            k: (s, n) for k, s, n in conn.execute("SELECT blob_key, sha256, size FROM instance")
        }
    finally:
        conn.close()


def es_membership(index: object) -> MembershipSource:
    """Dataset, sha256 and size of every instance the Elasticsearch index holds."""
    from server.core.attributes import Level
    from server.index.elasticsearch import ElasticsearchIndex

    if not isinstance(index, ElasticsearchIndex):
        raise TypeError("not an Elasticsearch index")

    def scan() -> Iterable[tuple[str, str | None, str, int]]:
        fields = ["blob_key", "dataset", "sha256", "size"]
        for hit in index._scan(Level.INSTANCE, {"match_all": {}}, fields):
            doc = hit["_source"]
            yield doc["blob_key"], doc.get("dataset"), doc["sha256"], int(doc.get("size") or 0)

    return scan
