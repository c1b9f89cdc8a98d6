"""Count protection of the federated search (the gateway's, since Focus does not obfuscate
answers of the ``omop`` endpoint type).

For a true count ``v`` (samply/laplace-rs ``get_from_cache_or_privatize`` and ``privatize``,
which Focus uses on its Blaze path):

1. ``v == 0`` stays 0 (absence is reported; Focus's default ``OBFUSCATE_ZERO=false``);
2. ``1 <= v < min_count`` is reported as ``min_count`` (Focus's below-10 mode 1, with the
   threshold configurable);
3. with noise on: ``v + Laplace(0, delta / epsilon)`` rounded to the nearest multiple of
   ``rounding_step``; the draw is made once per (dataset, measure, true count) and kept, so
   repeating the query (or asking it another way) returns the same number, as Focus's cache
   does; without noise: ``v`` rounded to the nearest multiple of ``rounding_step``;
4. a perturbed or rounded count of a non-empty cohort is never reported below
   ``min_count`` (Focus can report 0 there; 0 must keep meaning "none").
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Protection:
    min_count: int = 10
    rounding_step: int = 1
    noise: bool = False
    epsilon: float = 0.28
    delta: float = 1.0


def laplace(scale: float, rng: random.Random) -> float:
    """One draw of Laplace(0, scale) by inverse transform sampling."""
    u = rng.random() - 0.5
    while u == -0.5:  # log(0) is undefined; redraw
        u = rng.random() - 0.5
    return -scale * math.copysign(1.0, u) * math.log(1 - 2 * abs(u))


def round_to_step(value: float, step: int) -> int:
    """Nearest multiple of ``step`` (halves away from zero, as Rust's ``f64::round``)."""
    q = value / step
    rounded = math.floor(q + 0.5) if q >= 0 else -math.floor(-q + 0.5)
    return max(0, int(rounded) * step)


def protect(true_count: int, p: Protection, draw: Callable[[], float]) -> int:
    """The count to report; ``draw()`` returns the (cached) Laplace sample for this count."""
    if true_count <= 0:
        return 0
    if true_count < p.min_count:
        return p.min_count
    value = true_count + draw() if p.noise else float(true_count)
    return max(p.min_count, round_to_step(value, p.rounding_step))
