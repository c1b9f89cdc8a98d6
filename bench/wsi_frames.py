"""Random frames of a 100,000-frame whole-slide instance: WADO-RS frame latency.

wsidicom writes one VL Whole Slide Microscopy level of ``--size`` x ``--size`` pixels in
``--tile`` x ``--tile`` JPEG tiles (the defaults give 317 x 317 = 100,489 frames, about
66 MB) and, for comparison, a 10 x 10-tile level (100 frames) of the same tiles. Both go
into one gateway (one worker, fresh data directory) by STOW-RS. Then ``--requests``
random frames of each are fetched, alternating between the instances and clients, with ``transfer-syntax=*`` over a
kept-alive connection (httpx) and through dicomweb-client; the report gives p50 and p95
latency per frame, the ratio of the two instances (1.0 means the frame count costs
nothing) and the load average.

    .venv/bin/python bench/wsi_frames.py [--size 5072] [--tile 16] [--requests 500]
    ES_URL=http://127.0.0.1:9200 .venv/bin/python bench/wsi_frames.py --es   # Elasticsearch
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomweb_client.api import DICOMwebClient  # noqa: E402

from tests.live import LiveServer  # noqa: E402
from tests.wsi import write_slide  # noqa: E402

ACCEPT = "multipart/related; type=image/jpeg; transfer-syntax=*"


def _interleaved(
    fetchers: tuple[Callable[[tuple[str, str, str], int], object], ...],
    instances: list[tuple[int, float, tuple[str, str, str]]],
    requests: int,
) -> list[list[list[float]]]:
    """Seconds per request, [fetcher][instance][i]: requests alternate between the
    instances and the clients, so that the load of other jobs hits all alike."""
    rng = random.Random(len(instances))
    out = [[[] for _ in instances] for _ in fetchers]
    for round_ in range(requests + 20):  # the first 20: warm-up (connections, page cache)
        for f, fetch in enumerate(fetchers):
            for i, (frames, _, uids) in enumerate(instances):
                number = rng.randint(1, frames)
                start = time.perf_counter()
                fetch(uids, number)
                if round_ >= 20:
                    out[f][i].append(time.perf_counter() - start)
    return out


def _ms(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=20)
    return f"p50 {statistics.median(values) * 1000:6.2f} ms  p95 {cuts[18] * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=5072)
    parser.add_argument("--tile", type=int, default=16)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--es", action="store_true", help="index in Elasticsearch at $ES_URL")
    args = parser.parse_args()
    if args.es:
        os.environ["GATEWAY_TEST_ES_URL"] = os.environ["ES_URL"]
    with tempfile.TemporaryDirectory(prefix="wsi-bench-") as tmp:
        started = time.perf_counter()
        (big,) = write_slide(Path(tmp) / "big", args.size, args.tile, levels=False)
        (small,) = write_slide(Path(tmp) / "small", 10 * args.tile, args.tile, levels=False)
        print(f"wrote {big.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s")
        live = LiveServer(Path(tmp) / "data", extra_env={"GATEWAY_LOG_LEVEL": "warning"})
        live.start()
        try:
            instances = []
            for path in (small, big):
                data = path.read_bytes()
                body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
                started = time.perf_counter()
                response = httpx.post(
                    f"{live.dicomweb}/studies",
                    content=body,
                    headers={
                        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'
                    },
                    timeout=600,
                )
                response.raise_for_status()
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
                instances.append((int(ds.NumberOfFrames), time.perf_counter() - started, uids))
            client = DICOMwebClient(live.dicomweb)
            with httpx.Client(timeout=30) as http:

                def by_httpx(uids: tuple[str, str, str], n: int) -> object:
                    url = f"{live.dicomweb}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
                    r = http.get(f"{url}/frames/{n}", headers={"Accept": ACCEPT})
                    r.raise_for_status()
                    return r.content

                def by_client(uids: tuple[str, str, str], n: int) -> object:
                    return client.retrieve_instance_frames(
                        *uids, [n], media_types=(("image/jpeg", "*"),)
                    )

                times = _interleaved((by_httpx, by_client), instances, args.requests)
        finally:
            live.stop()
    backend = "elasticsearch" if args.es else "sqlite"
    print(f"index {backend}; load average {os.getloadavg()}; {args.requests} random frames each")
    for i, (frames, stow_s, _) in enumerate(instances):
        print(f"{frames:>7} frames (STOW {stow_s:5.1f} s): httpx {_ms(times[0][i])} | "
              f"dicomweb-client {_ms(times[1][i])}")  # fmt: skip
    ratio = statistics.median(times[0][1]) / statistics.median(times[0][0])
    print(f"p50 ratio {instances[1][0]} / {instances[0][0]} frames: {ratio:.2f}")


if __name__ == "__main__":
    main()
