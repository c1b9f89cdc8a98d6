"""Cost of de-identification on ingest: STOW-RS throughput of 512x512 CT, with vs without.

One gateway (one worker), three datasets created with ``dataset create --deidentify
none|basic|eucaim`` and nothing else different. Each round generates fresh synthetic CT
instances (512x512, 16 bit; new UIDs, so nothing is a re-send) and sends the SAME
instances to all three datasets (``none`` stores the sent UIDs, the other two their
pseudonyms, so they never collide). Requests of ``--batch`` instances are interleaved
batch by batch, the order of the three rotating from one batch to the next, so a change
in the machine's load falls on all three alike. Request bodies are built before the clock
starts. One warm-up batch per dataset first.

Per round and profile: wall-clock throughput and the server process's CPU time per
instance (``/proc``; less sensitive to other load than wall time). Reported: the median
over rounds and the spread (min-max) of the throughput ratio to ``none``.

    .venv/bin/python bench/deid_overhead.py [--instances 100] [--rounds 5] [--batch 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402
from tests.helpers import multipart_body  # noqa: E402
from tests.live import LiveServer  # noqa: E402

PROFILES = ("none", "basic", "eucaim")
HEADERS = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
TICKS = os.sysconf("SC_CLK_TCK")


def _corpus(instances: int, seed: int) -> list[bytes]:
    cohort = generate_cohort(
        patients=max(1, instances // 50), series_per_study=1,
        instances_per_series=min(50, instances), rows=512, columns=512, seed=seed,
    )  # fmt: skip
    parts = []
    for ds in itertools.islice(cohort, instances):
        ds.BurnedInAnnotation = "NO"
        parts.append(to_part10_bytes(ds))
    return parts


def _bodies(parts: list[bytes], batch: int) -> list[bytes]:
    return [multipart_body(parts[s : s + batch], "b") for s in range(0, len(parts), batch)]


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of the server process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _post(client: httpx.Client, dataset: str, body: bytes) -> None:
    r = client.post(f"/datasets/{dataset}/dicom-web/studies", content=body, headers=HEADERS)
    if r.status_code != 200:
        raise SystemExit(f"{dataset}: STOW answered {r.status_code}: {r.text[:500]}")


def _round(client: httpx.Client, pid: int, bodies: list[bytes]) -> dict[str, tuple[float, float]]:
    """Send every body to every dataset, interleaved: {profile: (wall s, server CPU s)}."""
    wall = dict.fromkeys(PROFILES, 0.0)
    cpu = dict.fromkeys(PROFILES, 0.0)
    for n, body in enumerate(bodies):
        shift = n % len(PROFILES)
        for profile in PROFILES[shift:] + PROFILES[:shift]:
            cpu_before, started = _cpu_seconds(pid), time.perf_counter()
            _post(client, profile, body)
            wall[profile] += time.perf_counter() - started
            cpu[profile] += _cpu_seconds(pid) - cpu_before
    return {p: (wall[p], cpu[p]) for p in PROFILES}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=100, help="per profile and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10, help="instances per STOW request")
    args = parser.parse_args()
    rounds: list[dict[str, tuple[float, float]]] = []
    megabytes = 0.0
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveServer(Path(tmp) / "data", extra_env={"GATEWAY_WORKERS": "1"})
        for profile in PROFILES:
            extra = ["--provider-id", "BENCH-SITE"] if profile == "eucaim" else []
            done = live.cli(
                "dataset", "create", profile, "--title", profile, "--deidentify", profile, *extra
            )
            if done.returncode:
                raise SystemExit(done.stderr)
        live.start()
        assert live.process is not None
        pid = live.process.pid
        try:
            with httpx.Client(base_url=live.url, timeout=600) as client:
                warm = _bodies(_corpus(args.batch, seed=99), args.batch)
                _round(client, pid, warm)
                for r in range(args.rounds):
                    parts = _corpus(args.instances, seed=11 + r)
                    megabytes = sum(len(p) for p in parts) / 1e6
                    rounds.append(_round(client, pid, _bodies(parts, args.batch)))
                    print(f"round {r + 1}: " + ", ".join(
                        f"{p} {args.instances / w:.1f}/s {c / args.instances * 1e3:.2f} ms CPU"
                        for p, (w, c) in rounds[-1].items()
                    ), flush=True)  # fmt: skip
        finally:
            live.stop()
    report: dict[str, dict[str, float]] = {}
    print(f"\n{'profile':8} {'inst/s':>8} {'MB/s':>8} {'CPU ms/inst':>12}  throughput vs none")
    for profile in PROFILES:
        walls = [r[profile][0] for r in rounds]
        ratios = [r["none"][0] / r[profile][0] for r in rounds]
        cpu_ms = statistics.median(r[profile][1] / args.instances * 1e3 for r in rounds)
        wall = statistics.median(walls)
        report[profile] = {
            "instances_per_s": round(args.instances / wall, 1),
            "mb_per_s": round(megabytes / wall, 1),
            "server_cpu_ms_per_instance": round(cpu_ms, 2),
            "throughput_vs_none_median": round(statistics.median(ratios), 3),
            "throughput_vs_none_min": round(min(ratios), 3),
            "throughput_vs_none_max": round(max(ratios), 3),
        }
        row = report[profile]
        print(
            f"{profile:8} {row['instances_per_s']:8} {row['mb_per_s']:8} {cpu_ms:12.2f}  "
            + _spread(ratios)
        )
    print(
        json.dumps(
            {
                "instances": args.instances,
                "rounds": args.rounds,
                "batch": args.batch,
                "load_average_start_end": [load_at_start, os.getloadavg()[0]],
                "results": report,
            }
        )
    )


if __name__ == "__main__":
    main()
