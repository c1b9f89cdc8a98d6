"""Damaged input never crashes the engine and never echoes a value in its error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from server.core.deid import ctp
from server.core.deid.engine import deidentify
from server.core.deid.policy import BurnedInSuspected, DeidPolicy, Profile
from server.core.records import UnreadableInstance
from tests.core.deid import builders

SECRET = ctp.generate_secret()


def _variants(raw: bytes) -> list[bytes]:
    rng = random.Random(9)
    out = [raw[:n] for n in range(0, len(raw), max(1, len(raw) // 40))]
    for _ in range(60):
        data = bytearray(raw)
        for _ in range(3):
            data[rng.randrange(132, len(data))] = rng.randrange(256)
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("profile", [Profile.basic, Profile.eucaim])
def test_truncated_and_corrupted_files(tmp_path: Path, profile: Profile) -> None:
    ds = builders.base(builders.new_uid())
    # eucaim keeps SeriesDescription (LETHE): only the instance's own name is cleaned from
    # it, and a truncated copy may have lost the name; keep the planted name elsewhere
    ds.SeriesDescription = "Axial"
    raw = builders.write(ds, tmp_path / "ok.dcm").read_bytes()
    outcomes: set[str] = set()
    for i, data in enumerate(_variants(raw)):
        src, dst = tmp_path / f"{i}.dcm", tmp_path / f"{i}.out.dcm"
        src.write_bytes(data)
        try:
            deidentify(src, dst, DeidPolicy(profile=profile), SECRET)
            outcomes.add("ok")
            assert b"Kowalski" not in dst.read_bytes()
        except (UnreadableInstance, BurnedInSuspected) as exc:
            outcomes.add(type(exc).__name__)
            assert "Kowalski" not in str(exc) and "PAT-001" not in str(exc)
            assert not dst.exists()
    assert {"ok", "UnreadableInstance"} <= outcomes
