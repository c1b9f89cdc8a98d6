"""Blob store micro-benchmark: the filesystem store and the S3 store side by side.

    .venv/bin/python -m bench.s3_store [--rounds 3] [--blobs 100]

Starts SeaweedFS (tests/s3/start.sh; or uses S3_URL, S3_ACCESS_KEY, S3_SECRET_KEY) and,
per round and store: puts ``--blobs`` 512 KiB blobs (then ``sync``), reads a 128 KiB range
of each (a frame), puts one 24 MiB blob (multipart on S3: one part at a time, and
``upload_concurrency`` 4 parts at once), and on S3 reads every 512 KiB blob the way ``check``
and ``reindex`` do: hashed through ranged reads and then downloaded for the parser (two
reads, as before), or downloaded once and hashed locally (now). Prints medians over the
rounds and the load average (the machine is shared: compare the lines, not absolute numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from server.services.recovery import _sha256_file, sha256_of
from server.storage.base import BlobStore
from server.storage.filesystem import FilesystemBlobStore
from server.storage.s3 import S3BlobStore
from tests.s3_server import ensure_s3

SMALL, FRAME, BIG = 512 * 1024, 128 * 1024, 24 * 1024 * 1024


def key(n: int) -> str:
    return f"{n:064x}.{n:016x}.{os.urandom(6).hex()}.bench.dcm"


def index_reads(store: S3BlobStore, keys: list[str]) -> tuple[float, float]:
    """Seconds per blob: (hash by ranged reads + download, download + local hash)."""
    timings = []
    for once in (False, True):
        for k in keys:
            store._uncache(k)  # a cold read cache, as for a reindex
        started = time.perf_counter()
        for k in keys:
            if once:
                _sha256_file(store.path(k))
            else:
                sha256_of(store, k)
                store.path(k)
        timings.append((time.perf_counter() - started) / len(keys))
    return timings[0], timings[1]


def one_round(store: BlobStore, work: Path, blobs: int) -> tuple[float, float, float, float, float]:
    data, keys = os.urandom(SMALL), []
    started = time.perf_counter()
    for n in range(blobs):
        spool = work / f"spool-{n}"
        spool.write_bytes(data)
        keys.append(key(n))
        store.put_file(keys[-1], spool)
    store.sync()
    put = (time.perf_counter() - started) / blobs
    started = time.perf_counter()
    for k in keys:
        with store.open(k) as f:
            f.seek(100_000)
            assert len(f.read(FRAME)) == FRAME
    frame = (time.perf_counter() - started) / blobs
    twice, once = index_reads(store, keys) if isinstance(store, S3BlobStore) else (0.0, 0.0)
    spool = work / "big"
    spool.write_bytes(os.urandom(BIG))
    started = time.perf_counter()
    big_key = key(10**6)
    store.put_file(big_key, spool)
    store.sync()
    big = time.perf_counter() - started
    for k in [*keys, big_key]:
        store.delete(k)
    return put, frame, big, twice, once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blobs", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3-bench-"))
    endpoint, stop = ensure_s3(work / "seaweedfs")
    try:
        stores: dict[str, BlobStore] = {
            "filesystem": FilesystemBlobStore(work / "fs"),
            "s3 1 part": S3BlobStore(
                replace(endpoint.config(endpoint.new_bucket()), upload_concurrency=1), work / "c1"
            ),
            "s3 4 parts": S3BlobStore(
                replace(endpoint.config(endpoint.new_bucket()), upload_concurrency=4), work / "c4"
            ),
        }
        results: dict[str, list[tuple[float, float, float, float, float]]] = {n: [] for n in stores}
        for _ in range(args.rounds):
            for name, store in stores.items():  # interleaved: the same load for both
                results[name].append(one_round(store, work, args.blobs))
    finally:
        stop()
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, rows in results.items():
        put = statistics.median(r[0] for r in rows) * 1000
        frame = statistics.median(r[1] for r in rows) * 1000
        big = statistics.median(r[2] for r in rows)
        print(f"{name:>10}: put 512 KiB {put:6.1f} ms | 128 KiB range {frame:6.2f} ms | "
              f"put 24 MiB {big:5.2f} s ({BIG / 2**20 / big:4.0f} MiB/s)")  # fmt: skip
        if rows[0][3]:
            twice = statistics.median(r[3] for r in rows) * 1000
            once = statistics.median(r[4] for r in rows) * 1000
            print(f"{'':>10}  check/reindex read of 512 KiB: hash by range + download "
                  f"{twice:6.1f} ms, download + local hash {once:6.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
