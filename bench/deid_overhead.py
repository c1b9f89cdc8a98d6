"""Cost of de-identification on ingest: STOW-RS throughput of 512x512 CT, with vs without.

One gateway, three datasets created with ``dataset create --deidentify none|basic|eucaim``.
Each gets its own synthetic CT instances of the same size (512x512, 16 bit, generated and
encoded up front), sent over HTTP in requests of ``--batch`` instances. Each dataset's
instances are split in two halves sent in the order none, basic, eucaim and then
eucaim, basic, none, so that drift in the machine's load affects all three alike.
Reported: instances/s and MB/s per profile and the throughput ratio to ``none``.

    .venv/bin/python bench/deid_overhead.py [--instances 300] [--batch 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
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


def _send(client: httpx.Client, dataset: str, parts: list[bytes], batch: int) -> float:
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    started = time.perf_counter()
    for start in range(0, len(parts), batch):
        r = client.post(f"/datasets/{dataset}/dicom-web/studies",
                        content=multipart_body(parts[start : start + batch], "b"), headers=headers)  # fmt: skip
        if r.status_code != 200:
            raise SystemExit(f"{dataset}: STOW answered {r.status_code}: {r.text[:500]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="per profile")
    parser.add_argument("--batch", type=int, default=10, help="instances per STOW request")
    args = parser.parse_args()
    corpora = {p: _corpus(args.instances, seed=11 + i) for i, p in enumerate(PROFILES)}
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
        seconds = dict.fromkeys(PROFILES, 0.0)
        try:
            with httpx.Client(base_url=live.url, timeout=600) as client:
                _send(client, "none", _corpus(args.batch, seed=99), args.batch)  # warm-up
                half = args.instances // 2
                for order, part in (
                    (PROFILES, slice(0, half)),
                    (PROFILES[::-1], slice(half, None)),
                ):
                    for profile in order:
                        seconds[profile] += _send(
                            client, profile, corpora[profile][part], args.batch
                        )
        finally:
            live.stop()
    report = {}
    for profile in PROFILES:
        megabytes = sum(len(p) for p in corpora[profile]) / 1e6
        report[profile] = {
            "instances_per_s": round(args.instances / seconds[profile], 1),
            "mb_per_s": round(megabytes / seconds[profile], 1),
            "throughput_vs_none": round(seconds["none"] / seconds[profile], 3),
        }
    print(f"{'profile':8} {'inst/s':>8} {'MB/s':>8} {'vs none':>8}")
    for profile, row in report.items():
        print(
            f"{profile:8} {row['instances_per_s']:8} {row['mb_per_s']:8} {row['throughput_vs_none']:8}"
        )
    print(json.dumps({"instances": args.instances, "batch": args.batch, "results": report}))


if __name__ == "__main__":
    main()
