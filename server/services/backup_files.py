"""What a gateway's data directory holds, and the file-level steps backup and restore share.

Every file under the data directory falls in one :class:`Kind`. Backup copies the
kinds that are state (SQLite databases through SQLite's online backup API, signing
keys, the audit anchor, blobs) and names why it leaves the others out: SQLite
sidecars (``-wal``/``-shm``: their content is inside the snapshot), lock files
(recreated on demand) and unfinished writes (``spool/`` uploads not yet
acknowledged, ``trash/`` blobs being deleted, ``*.partial``/``*.tmp`` files that
are renamed into place when complete). A file that matches no rule is
``unclassified``: it is copied byte for byte and reported, so new state is never
silently dropped, and the backup test fails until someone decides how it is
backed up consistently.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path, PurePosixPath

from server.security.pseudonym_secrets import SECRET_DIR, is_secret_file
from server.services.quarantine import HELD_FILE, INSTANCE_FILE, QUARANTINE_DIR

SQLITE_MAGIC = b"SQLite format 3\x00"
AUDIT_ANCHOR = "audit.head"
FILE_MODE = 0o600
DIR_MODE = 0o700
CHUNK = 1 << 20

# Databases in snapshot order: what a later one references already exists in the earlier
# ones' snapshots (instances name datasets, agreements name datasets and clients) only if
# the referencing store is taken first, so a restored reference never dangles.
SNAPSHOT_ORDER = ("index.sqlite", "fhir.sqlite", "security.sqlite")
AUDIT_DB = "audit.sqlite"  # last: it records everything the others did


class Kind(StrEnum):
    sqlite = "sqlite"  # online snapshot (sqlite3.Connection.backup)
    blob = "blob"  # content-addressed DICOM file, copied and sha256-checked
    anchor = "audit-anchor"  # written to match the audit snapshot's last event
    key = "signing-key"  # keys/*.json, pseudonym-secrets/*: replaced atomically by the gateway
    held = "deid-quarantine"  # an instance held for burned-in text: written once, then renamed
    unclassified = "unclassified"  # copied as is, reported
    sidecar = "sqlite-sidecar"  # not copied: inside the snapshot
    lock = "lock"  # not copied: recreated on demand
    transient = "transient"  # not copied: unfinished or unacknowledged writes


NOT_COPIED = frozenset({Kind.sidecar, Kind.lock, Kind.transient})


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def classify(data_dir: Path, rel: PurePosixPath) -> Kind:
    """The kind of the file ``data_dir/rel`` (see the module docstring)."""
    top, name = rel.parts[0], rel.name
    # metrics: per-process Prometheus values; bodies: WADO-RS bodies made of blobs (derived)
    if top in ("spool", "trash", "metrics", "bodies"):
        return Kind.transient
    if top == "blobs":
        return Kind.blob if len(rel.parts) == 4 else Kind.unclassified
    for suffix in ("-wal", "-shm", "-journal"):
        if name.endswith(suffix) and (data_dir / rel).with_name(name[: -len(suffix)]).exists():
            return Kind.sidecar
    if name == ".lock" or name.endswith(".lock"):
        return Kind.lock
    if name.endswith((".partial", ".tmp")):
        return Kind.transient
    if top == QUARANTINE_DIR and len(rel.parts) == 3:
        if rel.parts[1].startswith("."):  # being written (renamed into place when complete)
            return Kind.transient
        if name in (HELD_FILE, INSTANCE_FILE):
            return Kind.held
    if str(rel) == AUDIT_ANCHOR:
        return Kind.anchor
    if (
        top == "keys"
        and len(rel.parts) == 2
        and (name.endswith(".json") or name == "installation-secret")
    ):
        return Kind.key
    if top == SECRET_DIR and len(rel.parts) == 2 and is_secret_file(name):
        return Kind.key
    if is_sqlite(data_dir / rel):
        return Kind.sqlite
    return Kind.unclassified


def walk(root: Path) -> Iterator[PurePosixPath]:
    """Every regular file under ``root`` (symlinks not followed), relative, sorted."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            if path.is_file() and not path.is_symlink():
                yield PurePosixPath(path.relative_to(root).as_posix())


def sha256_file(path: Path, progress: Callable[[int], object] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()


def private_dir(path: Path) -> None:
    """``path`` and its missing parents as 0700 folders (whatever the umask)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE)
        folder.chmod(DIR_MODE)


def copy_file(
    source: Path, target: Path, progress: Callable[[int], object] = lambda n: None
) -> str:
    """Copy ``source`` to ``target`` (mode 0600, fsynced) and return the sha256 of what was read."""
    private_dir(target.parent)
    digest = hashlib.sha256()
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
                progress(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(partial, FILE_MODE)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def link_or_copy(
    source: Path, target: Path, progress: Callable[[int], object] = lambda n: None
) -> tuple[str, bool]:
    """Hard-link ``source`` at ``target`` when both are on one filesystem, else copy.

    Returns (sha256 of the content, linked?). A linked file is read once to check its hash.
    """
    private_dir(target.parent)
    try:
        os.link(source, target)
    except OSError:
        return copy_file(source, target, progress), False
    return sha256_file(target, progress), True


def snapshot_sqlite(source: Path, target: Path) -> None:
    """A transactionally consistent copy of a live SQLite database (online backup API).

    The whole copy runs in one read transaction (``pages=-1``), which in WAL mode
    never blocks the gateway's writers; the copy is switched to rollback-journal mode
    so it is one self-contained file.
    """
    private_dir(target.parent)
    target.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        src = sqlite3.connect(source)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            problem = dst.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"{source.name}: snapshot fails quick_check: {problem}")
        finally:
            dst.close()
    finally:
        src.close()
    os.chmod(target, FILE_MODE)
    _fsync(target)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seal_tree(root: Path) -> None:
    """Modes 0600/0700 under ``root`` and every folder fsynced, so a rename publishes it durably."""
    for folder, dirs, files in os.walk(root, topdown=False):
        base = Path(folder)
        for name in files:
            os.chmod(base / name, FILE_MODE)
        for name in dirs:
            os.chmod(base / name, DIR_MODE)
        _fsync(base)
    os.chmod(root, DIR_MODE)


def fsync_dir(path: Path) -> None:
    _fsync(path)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
