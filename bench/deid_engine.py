"""Engine-only CPU per 512x512 CT instance: what ingest does to one spooled file, per profile.

For each profile the same synthetic 512x512 16-bit CT files are prepared the way
ingest prepares a spooled part: ``none`` reads the sent UIDs and parses the file for its
index record; ``basic`` and ``eucaim`` de-identify a copy of it in place (the copy, like
the spooling, is not timed; the rewrite is hashed as it is written) and build the index
record from the engine's header. The three are
interleaved instance by instance; reported: process CPU ms per instance (median over
rounds) and the cost relative to ``none``.

    .venv/bin/python bench/deid_engine.py [--instances 50] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.core.deid.engine import deidentify  # noqa: E402
from server.core.deid.policy import DeidPolicy, Profile  # noqa: E402
from server.core.records import read_instance, record_from_parsed  # noqa: E402
from server.core.stow import PartOutcome  # noqa: E402
from server.services.backup_files import sha256_file  # noqa: E402
from server.services.ingest import _sent_uids  # noqa: E402
from server.synthetic import generate_cohort, to_part10_bytes  # noqa: E402

SECRET = "bench-secret"
KEY = b"k" * 32
POLICIES = {
    "basic": DeidPolicy(profile=Profile.basic),
    "eucaim": DeidPolicy(profile=Profile.eucaim, provider_id="BENCH-SITE"),
}


def _files(folder: Path, instances: int) -> list[Path]:
    cohort = generate_cohort(
        patients=max(1, instances // 50), series_per_study=1,
        instances_per_series=min(50, instances), rows=512, columns=512, seed=7,
    )  # fmt: skip
    paths = []
    for n, ds in enumerate(itertools.islice(cohort, instances)):
        ds.BurnedInAnnotation = "NO"
        path = folder / f"{n}.dcm"
        path.write_bytes(to_part10_bytes(ds))
        paths.append(path)
    return paths


def _none(src: Path, dst: Path) -> None:
    _sent_uids(src, PartOutcome())
    read_instance(src, "0" * 64, patient_secret=KEY)


def _deid(policy: DeidPolicy) -> Callable[[Path, Path], None]:
    def run(src: Path, dst: Path) -> None:  # dst: a copy of src, rewritten in place
        done = deidentify(dst, dst, policy, SECRET, on_read=lambda sent: None)
        digest, written = done.sha256, done.written
        sha = digest or sha256_file(dst)
        if written is None:
            read_instance(dst, sha, patient_secret=KEY)
        else:
            record_from_parsed(dst, written.ds, written.pixel_offset, sha, patient_secret=KEY)
        dst.unlink()

    return run


RUNS: dict[str, Callable[[Path, Path], None]] = {"none": _none}
RUNS |= {name: _deid(policy) for name, policy in POLICIES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=list(RUNS), help="cProfile this profile instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = _files(Path(tmp), args.instances)
        dst = Path(tmp) / "out.dcm"
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.rounds):
                for src in paths:
                    shutil.copyfile(src, dst)
                    RUNS[args.profile](src, dst)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
            return
        for src in paths[:3]:  # warm caches
            for run in RUNS.values():
                shutil.copyfile(src, dst)
                run(src, dst)
        per: dict[str, list[float]] = {name: [] for name in RUNS}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            spent = dict.fromkeys(RUNS, 0.0)
            for n, src in enumerate(paths):
                names = list(RUNS)
                names = names[n % 3 :] + names[: n % 3]
                for name in names:
                    shutil.copyfile(src, dst)  # the spooled part (not timed)
                    started = time.process_time()
                    RUNS[name](src, dst)
                    spent[name] += time.process_time() - started
            for name in RUNS:
                per[name].append(spent[name] / len(paths) * 1e3)
    result = {}
    for name, ms in per.items():
        extra = [m - n for m, n in zip(ms, per["none"], strict=True)]
        result[name] = {
            "cpu_ms_median": round(statistics.median(ms), 2),
            "cpu_ms_min": round(min(ms), 2),
            "cpu_ms_max": round(max(ms), 2),
            "extra_vs_none_ms_median": round(statistics.median(extra), 2),
        }
        print(f"{name:7} {statistics.median(ms):6.2f} ms/instance ({min(ms):.2f}-{max(ms):.2f})")
    print(
        json.dumps(
            {
                "instances": args.instances,
                "rounds": args.rounds,
                "load_average_start_end": [load, os.getloadavg()[0]],
                "results": result,
            }
        )
    )


if __name__ == "__main__":
    main()
