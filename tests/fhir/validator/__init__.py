"""The HL7 FHIR validator (HAPI FHIR instance validator, offline) as a long-running process.

``build.sh`` builds the Java wrapper once per version of its sources (cached under
``~/.cache/imaging-gateway-validator``); :func:`hl7_validator` starts it once per test
session, loaded with ``profiles/`` and ``terminology/``, and validates one resource per
line over stdin/stdout. Without Java or Maven the tests that need it skip, except in CI
(``CI=true``), where a missing validator is a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ERROR = ("error", "fatal")


@dataclass(frozen=True)
class Issue:
    severity: str
    location: str
    message: str
    id: str

    def __str__(self) -> str:
        return f"{self.severity} at {self.location}: {self.message}"


class HL7Validator:
    """One validator process; :meth:`validate` is safe to call from several threads."""

    def __init__(self, jar: Path) -> None:
        folders = [str(ROOT / "profiles"), str(ROOT / "terminology")]
        self._process = subprocess.Popen(
            ["java", "-Xss4m", "-jar", str(jar), *folders],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lock = threading.Lock()
        ready = self._line()
        assert ready.get("ready"), ready
        self.loaded = int(ready["loaded"])

    def _line(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the FHIR validator exited ({self._process.poll()})")
        return dict(orjson.loads(line))

    def validate(self, resource: dict[str, Any]) -> list[Issue]:
        """Every issue the HL7 validator reports for ``resource`` (and what it contains)."""
        assert self._process.stdin is not None
        with self._lock:
            self._process.stdin.write(orjson.dumps(resource) + b"\n")
            self._process.stdin.flush()
            answer = self._line()
        return [Issue(**i) for i in answer["issues"]]

    def errors(self, resource: dict[str, Any]) -> list[Issue]:
        return [i for i in self.validate(resource) if i.severity in ERROR]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the HL7 FHIR validator is required in CI: {reason}")
    pytest.skip(f"the HL7 FHIR validator is not available: {reason}")


@cache
def _started() -> HL7Validator | str:
    if shutil.which("java") is None:
        return "no java on PATH"
    built = subprocess.run(
        ["bash", str(HERE / "build.sh")], capture_output=True, text=True, timeout=900
    )
    if built.returncode != 0:
        return f"build failed: {built.stderr[-2000:]}"
    validator = HL7Validator(Path(built.stdout.strip().splitlines()[-1]))
    atexit.register(validator.close)
    return validator


def hl7_validator() -> HL7Validator:
    """The shared validator process (started on first use), or a skip/failure without one."""
    found = _started()
    if isinstance(found, str):
        _unavailable(found)
        raise AssertionError("unreachable")
    return found
