"""Statistical disclosure control for aggregate answers (minimum cell count).

A caller who may only count (an agreement for remote processing, or a catalogue
reader) must not learn a small number exactly: "1 study of this patient in that
dataset" is a disclosure. Counts from 1 to ``minimum - 1`` are reported as
``minimum``; 0 stays 0 (absence is reported, as k-anonymity thresholds in research
data portals commonly do); counts at or above ``minimum`` are exact.
"""

from __future__ import annotations


def floor_count(count: int, minimum: int) -> int:
    """``count`` as a caller without row-level access may see it."""
    return minimum if 0 < count < minimum else count
