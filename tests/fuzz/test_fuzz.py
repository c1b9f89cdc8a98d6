"""A bounded atheris pass over every fuzz target, inside the test suite (about 12 s each).

Longer runs: ``make fuzz FUZZ_SECONDS=3600`` (or ``python -m tests.fuzz.run TARGET ...``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import seeds
from tests.fuzz.run import TARGETS

SECONDS = int(os.environ.get("FUZZ_SECONDS", "12"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_never_crashes(tmp_path: Path, target: str) -> None:
    corpus = seeds.write(target, tmp_path / "corpus")
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, f"-max_total_time={SECONDS}",
         "-rss_limit_mb=2048", "-timeout=20", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=SECONDS + 120, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert done.returncode == 0 and runs, done.stderr[-4000:]
    assert int(runs[1]) > 100, done.stderr[-2000:]
    print(f"{target}: {runs[1]} runs in {SECONDS} s, 0 crashes")
