"""Whole WADO-RS bodies kept as one file each: a series asked for again goes out in one send.

A series retrieved as stored is framing bytes around every stored file of it. Sent part
by part, each part costs an open, a header write and a ``sendfile`` (and the request a
``stat`` per file to learn its length), so a series of many small instances is paid per
part. Kept as one file, the next answer is a single ``sendfile`` of that file, as a
static-file server would give it.

What is kept
    The exact body (its boundary is in its first line), under ``<data_dir>/bodies/<key>``,
    where ``key`` is a hash of the ordered blob keys and stored transfer syntaxes of its
    instances. Blob keys name their content (SOP Instance UID and SHA-256), so the key
    names the body's bytes: a series that gained, lost or replaced an instance has another
    key, and an old body is never sent for it. The caller's access is checked before any
    of this (the route authorises first); the cache holds only what the blob store holds.
When
    A body is written the second time one process misses it within ``REMEMBER`` keys
    (one-off downloads never cost a copy), by a background thread: written to a temporary
    file, ``fsync``'d and renamed, so a reader finds a whole body or none, and a crash
    leaves only a temporary file, removed at the next start of any process (or by a delete
    of one of its blobs before that); a write in progress in another process at that start
    is abandoned, and made again at a later miss.
Erasure
    Every blob delete or quarantine of the store calls :meth:`BodyCache.forget`: each body
    holding one of those blobs is removed (the map of bodies to blobs is a small SQLite
    file beside them, shared by the processes of one data directory), so deleted instances
    do not live on in the cache. A reader that opened a body just before keeps its open
    file; one that had not yet opened it finds it gone and its response is abandoned.
Size
    At most ``limit`` bytes in all: the least recently sent bodies (file modification time,
    touched on every hit) are removed first; a body larger than a quarter of the limit,
    or one that would leave less than ``min_free`` of the volume free (10%), is not kept.
    ``limit`` 0 turns the cache off and removes what an earlier run kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from server.metrics import observe_body_cache

log = logging.getLogger("gateway.bodies")
REMEMBER = 4096  # missed keys a process remembers, to write a body on its second miss
_KEY = re.compile(r"[0-9a-f]{64}")  # a body's file name
_SCHEMA = """
CREATE TABLE IF NOT EXISTS body_blob (body TEXT NOT NULL, blob TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_body_blob_blob ON body_blob (blob);
CREATE INDEX IF NOT EXISTS ix_body_blob_body ON body_blob (body);
"""

Piece = bytes | tuple[str, int]  # framing bytes, or (path, size) of a whole stored file


class Body(NamedTuple):
    path: str
    size: int
    boundary: str


def body_files(root: Path) -> list[Path]:
    """The whole kept bodies in ``root`` (not the map, its journal, or writes in progress)."""
    if not root.is_dir():
        return []
    return [root / e.name for e in os.scandir(root) if _KEY.fullmatch(e.name)]


def body_key(parts: Iterable[tuple[str, str]]) -> str:
    """The key of the body made of ``parts`` ((blob key, stored transfer syntax), in order)."""
    text = "".join(f"\n{blob_key} {transfer_syntax}" for blob_key, transfer_syntax in parts)
    return hashlib.sha256(b"wado-body-1" + text.encode()).hexdigest()


class BodyCache:
    def __init__(self, root: Path, limit: int, min_free: float = 0.1) -> None:
        self.root = root
        self.limit = limit
        self.min_free = min_free  # share of the volume a write must leave free
        self._missed: OrderedDict[str, None] = OrderedDict()
        self._building: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._db_path = root / "bodies.sqlite"
        if limit <= 0:  # off: what an earlier run kept goes (it would escape erasure)
            shutil.rmtree(root, ignore_errors=True)
            return
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in root.glob("*.tmp"):  # a write cut short by a crash
            leftover.unlink(missing_ok=True)
        conn = self._connect()
        conn.executescript(_SCHEMA)
        # rows whose body file is gone (removed by hand, or a crash between the two)
        known = {row[0] for row in conn.execute("SELECT DISTINCT body FROM body_blob")}
        gone = [k for k in known if not (root / k).exists()]
        conn.executemany("DELETE FROM body_blob WHERE body = ?", [(k,) for k in gone])

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection to the map (autocommit; ``with`` is not a transaction)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # -- reading -----------------------------------------------------------------------
    def get(self, key: str) -> Body | None:
        """The kept body named ``key``, or None (a miss is remembered, see :meth:`want`)."""
        if not self.enabled:
            return None
        path = f"{self.root}/{key}"
        try:
            with open(path, "rb") as f:
                first = f.readline(200)
                size = os.fstat(f.fileno()).st_size
            os.utime(path)  # recently sent: evicted last
        except FileNotFoundError:
            observe_body_cache("miss")
            return None
        if not first.startswith(b"--") or not first.endswith(b"\r\n"):
            log.error("kept body %s has no delimiter line; removed", key)
            self._remove([key])
            return None
        observe_body_cache("hit")
        return Body(path, size, first[2:-2].decode("latin-1"))

    def want(self, key: str) -> bool:
        """True when ``key`` was missed before by this process (time to keep its body)."""
        if not self.enabled:
            return False
        with self._lock:
            if key in self._missed:
                del self._missed[key]
                return key not in self._building
            self._missed[key] = None
            while len(self._missed) > REMEMBER:
                self._missed.popitem(last=False)
            return False

    # -- writing -----------------------------------------------------------------------
    def put_later(self, key: str, pieces: Sequence[Piece], blobs: Sequence[str]) -> None:
        """Write the body ``pieces`` as ``key`` in the background (``blobs``: its blob keys)."""
        size = sum(len(p) if isinstance(p, bytes) else p[1] for p in pieces)
        if not self.enabled or size > self.limit // 4:
            return
        with self._lock:
            if key in self._building:
                return
            self._building.add(key)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="gateway-bodies")
        self._pool.submit(self._put, key, list(pieces), list(blobs), size)

    def _put(self, key: str, pieces: list[Piece], blobs: list[str], size: int) -> None:
        try:
            self._write(key, pieces, blobs, size)
        except FileNotFoundError:  # a blob deleted meanwhile: nothing kept
            observe_body_cache("abandoned")
        except Exception:
            log.exception("could not keep a WADO-RS body")
            observe_body_cache("abandoned")
        finally:
            with self._lock:
                self._building.discard(key)

    def _write(self, key: str, pieces: list[Piece], blobs: list[str], size: int) -> None:
        free = os.statvfs(self.root)
        if (free.f_bavail * free.f_frsize - size) < self.min_free * free.f_blocks * free.f_frsize:
            observe_body_cache("skipped")
            return
        self._make_room(size)
        conn = self._connect()  # the map first: a delete from now on finds the body
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO body_blob VALUES (?, ?)", [(key, b) for b in blobs])
        conn.execute("COMMIT")
        partial = self.root / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                for piece in pieces:
                    if isinstance(piece, bytes):
                        os.write(fd, piece)
                    else:
                        _copy_file(piece[0], piece[1], fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, self.root / key)
        except BaseException:
            partial.unlink(missing_ok=True)
            self._remove([key])
            raise
        if not self._mapped(key):  # a delete of one of its blobs ran while we copied
            self._remove([key])
            observe_body_cache("abandoned")
            return
        observe_body_cache("kept")

    def _mapped(self, key: str) -> bool:
        conn = self._connect()
        row = conn.execute("SELECT 1 FROM body_blob WHERE body = ? LIMIT 1", (key,)).fetchone()
        return row is not None

    def _make_room(self, size: int) -> None:
        """Remove the least recently sent bodies until ``size`` more fit in the limit."""
        kept = []
        for path in body_files(self.root):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                kept.append((st.st_mtime, st.st_size, path.name))
        total = sum(k[1] for k in kept)
        kept.sort()
        evict = []
        while kept and total + size > self.limit:
            _, bytes_, name = kept.pop(0)
            total -= bytes_
            evict.append(name)
        if evict:
            self._remove(evict)
            observe_body_cache("evicted", len(evict))

    # -- erasure -------------------------------------------------------------------------
    def forget(self, blobs: Sequence[str]) -> int:
        """Remove every kept body that holds one of ``blobs``; how many were removed."""
        if not self.enabled or not blobs or not self._db_path.exists():
            return 0
        conn = self._connect()
        bodies = {
            row[0]
            for i in range(0, len(blobs), 500)
            for row in conn.execute(
                "SELECT DISTINCT body FROM body_blob WHERE blob IN "
                f"({','.join('?' * len(blobs[i : i + 500]))})",
                list(blobs[i : i + 500]),
            )
        }
        if bodies:
            self._remove(sorted(bodies))
            for key in bodies:  # and a write of one in progress (or left by a killed process)
                for partial in self.root.glob(f"{key}.*.tmp"):
                    partial.unlink(missing_ok=True)
            observe_body_cache("purged", len(bodies))
        return len(bodies)

    def _remove(self, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / key)
        conn = self._connect()
        conn.executemany("DELETE FROM body_blob WHERE body = ?", [(k,) for k in keys])


def _copy_file(path: str, size: int, out: int) -> None:
    """``size`` bytes of the file at ``path`` to ``out`` (FileNotFoundError if it is gone or
    shorter: the body is not kept)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while offset < size:
            n = os.sendfile(out, fd, offset, size - offset)
            if n <= 0:
                raise FileNotFoundError(path)
            offset += n
    finally:
        os.close(fd)
