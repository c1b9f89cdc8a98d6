"""Study download as application/zip: throughput and the server's peak memory.

One gateway (one worker) on a fresh data directory; a synthetic CT study of
``--instances`` 512x512 16-bit slices (about 0.5 MiB each: 2,000 make 1 GiB) is written
as Part-10 files and loaded with ``imaging-gateway import``. The gateway's peak resident
memory (VmHWM) is read from ``/proc`` after start-up and after the downloads; each
layout (flat, dicomdir) is downloaded ``--rounds`` times by curl to /dev/null, and the
multipart WADO-RS retrieval of the same study (``transfer-syntax=*``) for comparison.

    .venv/bin/python bench/zip_download.py [--instances 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402
from tests.live import LiveServer  # noqa: E402


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _curl(url: str, accept: str) -> tuple[float, int]:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-H", f"Accept: {accept}", "-w",
         "%{time_total} %{size_download} %{http_code}", url],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out[2] == "200", out
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zip-bench-") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        study = ""
        for n, ds in enumerate(generate_cohort(patients=1, series_per_study=4, rows=512,
                                               columns=512, seed=7,
                                               instances_per_series=args.instances // 4)):  # fmt: skip
            (files / f"{n:06d}.dcm").write_bytes(to_part10_bytes(ds))
            study = str(ds.StudyInstanceUID)
        live = LiveServer(Path(tmp) / "data")
        started = time.monotonic()
        done = live.cli("import", str(files))
        assert done.returncode == 0, done.stderr[-2000:]
        print(f"import: {time.monotonic() - started:.1f} s")
        live.start()
        try:
            assert live.process is not None
            pid = live.process.pid
            print(f"peak RSS after start: {_peak_rss_mib(pid):.0f} MiB")
            url = f"{live.dicomweb}/studies/{study}"
            cases = {
                "zip flat": (url, "application/zip"),
                "zip dicomdir": (url + "?layout=dicomdir", "application/zip"),
                "multipart *": (url, 'multipart/related; type="application/dicom"; transfer-syntax=*'),
            }  # fmt: skip
            for name, (target, accept) in cases.items():
                _curl(target, accept)  # warm the page cache
                runs = [_curl(target, accept) for _ in range(args.rounds)]
                seconds = statistics.median(t for t, _ in runs)
                size = runs[0][1]
                print(f"{name}: {size / 2**20:.0f} MiB in {seconds:.2f} s = "
                      f"{size / 2**20 / seconds:.0f} MiB/s (median of {args.rounds})")  # fmt: skip
            print(f"peak RSS after downloads: {_peak_rss_mib(pid):.0f} MiB")
        finally:
            live.stop()


if __name__ == "__main__":
    main()
