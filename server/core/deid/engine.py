"""Apply a dataset's policy to one spooled Part-10 file (interface; see policy.py).

``deidentify_file(src, dst, policy, secret)`` reads ``src``, writes the de-identified
instance to ``dst`` (same transfer syntax; pixel data copied, never decoded unless a
cleaning step needs it) and returns its ``DeidRecord``. The output is a pure function
of (input bytes, policy, secret): the same input gives byte-identical output in every
process, so a re-sent instance is recognised as the same instance.

Raises ``BurnedInSuspected`` when the instance may carry burned-in text and the policy
does not clean it, ``UnreadableInstance`` when the input is not DICOM.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from server.core.deid.policy import DeidPolicy, DeidRecord, Profile

EDITION = "2025b"  # placeholder until the generated rule table names its edition


def deidentify_file(src: Path, dst: Path, policy: DeidPolicy, secret: str) -> DeidRecord:
    """PS3.15 Annex E: write the de-identified copy of ``src`` to ``dst``."""
    if policy.profile is Profile.none:
        shutil.copyfile(src, dst)
        return DeidRecord(profile="none", options=[], edition="")
    raise NotImplementedError("de-identification engine not built yet")
