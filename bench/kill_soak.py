"""kill -9 soak: concurrent STOW clients while the whole server is killed and restarted.

    .venv/bin/python -m bench.kill_soak --kills 20 --clients 4 --workers 2

Each round starts ``imaging-gateway serve`` (all its worker processes in one process
group), lets ``--clients`` threads STOW small studies into two datasets for a random
0.5..``--max-uptime`` seconds, then sends SIGKILL to the whole group. After the last
round the server starts once more (start-up recovery is the only repair) and the
soak proves:

* every acknowledged instance is retrievable byte-for-byte;
* nothing listed by QIDO (all studies, series and instances) fails to retrieve;
* ``imaging-gateway check`` (no ``--repair``) exits 0 with an empty plan.

Exit status 0 if all three hold. Add ``--index-backend elasticsearch --es-url URL``
to run on Elasticsearch.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.synthetic import generate_cohort, to_part10_bytes
from tests.live import LiveServer, free_port

DATASETS = ("soak-a", "soak-b")
BIG_SIDE = 1700  # 16-bit: about 5.5 MiB per instance, above the smallest S3 multipart part
RAW = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Ledger:
    """Instances the server acknowledged (200/202 and listed as stored)."""

    acked: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    requests: int = 0
    failed_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _body(parts: list[bytes], boundary: str) -> bytes:
    out = bytearray()
    for data in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


def _client(
    live: LiveServer, ledger: Ledger, stop: threading.Event, seed: int, big_share: float = 0.0
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        seed += 7919
        side = BIG_SIDE if rng.random() < big_share else 32
        instances = generate_cohort(
            seed=seed, patients=1, series_per_study=1, instances_per_series=rng.randint(1, 4),
            rows=side, columns=side,
        )  # fmt: skip
        parts = {str(ds.SOPInstanceUID): (ds, to_part10_bytes(ds)) for ds in instances}
        boundary = uuid.uuid4().hex
        dataset = rng.choice(DATASETS)
        try:
            answer = httpx.post(
                f"{live.url}/datasets/{dataset}/dicom-web/studies",
                content=_body([data for _, data in parts.values()], boundary),
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                timeout=30,
            )  # fmt: skip
        except httpx.HTTPError:
            with ledger.lock:
                ledger.requests += 1
                ledger.failed_requests += 1
            continue
        with ledger.lock:
            ledger.requests += 1
            if answer.status_code not in (200, 202):
                ledger.failed_requests += 1
                continue
            for item in answer.json().get("00081199", {}).get("Value", []):
                sop = item["00081155"]["Value"][0]
                ds, data = parts[sop]
                ledger.acked[(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop)] = data


def _start(live: LiveServer, workers: int) -> subprocess.Popen[bytes]:
    """``serve`` in a process group of its own, so one killpg reaches every worker."""
    live.port = free_port()
    env = {**live.env(), "GATEWAY_WORKERS": str(workers)}
    log = live.log_path.open("ab")
    args = [sys.executable, "-m", "server.cli.main", "serve", "--port", str(live.port)]
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(live.log_path.read_text()[-3000:])
        try:
            if httpx.get(f"{live.url}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _retrieve(live: LiveServer, study: str, series: str, sop: str) -> bytes | None:
    url = f"{live.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    r = httpx.get(url, headers={"Accept": RAW}, timeout=60)
    if r.status_code != 200:
        return None
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = r.content.split(f"--{boundary}".encode())
    return parts[1].split(b"\r\n\r\n", 1)[1][:-2] if len(parts) >= 3 else None


def _listed(live: LiveServer) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    offset = 0
    while True:
        page = httpx.get(f"{live.dicomweb}/instances", params={"limit": 500, "offset": offset},
                         timeout=60)  # fmt: skip
        rows = page.json() if page.status_code == 200 else []
        out += [(r["0020000D"]["Value"][0], r["0020000E"]["Value"][0], r["00080018"]["Value"][0])
                for r in rows]  # fmt: skip
        if len(rows) < 500:
            return out
        offset += 500


def soak(args: argparse.Namespace) -> int:
    parent = getattr(args, "data_dir", None) or Path(tempfile.mkdtemp(prefix="kill-soak-"))
    data_dir = Path(parent) / "data"
    extra = {"GATEWAY_LOG_LEVEL": "warning", **(getattr(args, "extra_env", None) or {})}
    if args.index_backend == "elasticsearch":
        os.environ["GATEWAY_TEST_ES_URL"] = args.es_url
    live = LiveServer(data_dir, extra_env=extra)
    for dataset in DATASETS:
        done = live.cli("dataset", "create", dataset, "--title", dataset, "--cancer-type", "lung")
        if done.returncode != 0:
            raise SystemExit(done.stderr)
    ledger, rng, started = Ledger(), random.Random(args.seed), time.monotonic()
    for round_no in range(args.kills):
        proc = _start(live, args.workers)
        stop = threading.Event()
        big = getattr(args, "big_share", 0.0)
        threads = [threading.Thread(target=_client, args=(live, ledger, stop, args.seed + 1000 * (round_no * args.clients + n), big))
                   for n in range(args.clients)]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, args.max_uptime))
        _kill(proc)
        stop.set()
        for t in threads:
            t.join()
        print(
            f"kill {round_no + 1}/{args.kills}: {len(ledger.acked)} acknowledged so far", flush=True
        )
    proc = _start(live, args.workers)  # start-up recovery is the only repair
    try:
        lost = [key for key, data in ledger.acked.items() if _retrieve(live, *key) != data]
        listed = _listed(live)
        broken = [key for key in listed if _retrieve(live, *key) is None]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    check = live.cli("check")
    count_blobs = getattr(args, "count_blobs", None)
    if count_blobs is not None:  # a store that is not a folder (S3)
        blobs, quarantined = count_blobs()
    else:
        blobs = sum(1 for p in (data_dir / "blobs").rglob("*") if p.is_file())
        quarantined = sum(
            1 for p in (data_dir / "quarantine").iterdir() if not p.name.endswith(".reason")
        )
    print(f"kills: {args.kills}, clients: {args.clients}, workers: {args.workers}, "
          f"backend: {args.index_backend}, seconds: {time.monotonic() - started:.0f}")  # fmt: skip
    print(f"STOW requests: {ledger.requests} ({ledger.failed_requests} failed or cut off)")
    print(f"acknowledged instances: {len(ledger.acked)}; lost or altered: {len(lost)}")
    print(f"listed by QIDO: {len(listed)}; listed but not retrievable: {len(broken)}")
    print(f"blobs on disk: {blobs}; quarantined: {quarantined}")
    print(f"check without --repair: exit {check.returncode}")
    print("\n".join(line for line in check.stdout.splitlines() if line.strip()))
    ok = not lost and not broken and check.returncode == 0 and blobs == len(listed)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-uptime", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--index-backend", choices=("sqlite", "elasticsearch"), default="sqlite")
    parser.add_argument("--es-url", default="http://127.0.0.1:9231")
    sys.exit(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
