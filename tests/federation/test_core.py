"""Pure parts of the federated search: the obfuscation algorithm and the age facts."""

from __future__ import annotations

import random
import statistics

import pytest

from server.core.federation import facts
from server.core.federation.datasets import age_range
from server.core.federation.obfuscation import Protection, laplace, protect, round_to_step

pytestmark = pytest.mark.index_independent  # not in the Elasticsearch pass


@pytest.mark.parametrize(
    ("count", "expected"), [(0, 0), (1, 10), (9, 10), (10, 10), (11, 11), (57, 57)]
)
def test_minimum_count(count: int, expected: int) -> None:
    assert protect(count, Protection(min_count=10), lambda: 0.0) == expected


@pytest.mark.parametrize(("count", "step", "expected"), [(12, 5, 10), (13, 5, 15), (12, 10, 10),
                                                         (15, 10, 20), (11, 20, 20), (29, 20, 20), (12, 25, 10), (57, 1, 57)])  # fmt: skip
def test_rounding_never_below_the_floor(count: int, step: int, expected: int) -> None:
    assert protect(count, Protection(min_count=10, rounding_step=step), lambda: 0.0) == expected


def test_noise_is_added_then_rounded_and_floored() -> None:
    p = Protection(min_count=10, rounding_step=10, noise=True)
    assert protect(57, p, lambda: 3.9) == 60
    assert protect(57, p, lambda: -2.1) == 50
    assert protect(57, p, lambda: -80.0) == 10  # a non-empty cohort never reads as empty
    assert protect(0, p, lambda: 40.0) == 0  # and an empty one stays 0 (OBFUSCATE_ZERO=false)
    assert protect(3, p, lambda: 40.0) == 10


def test_laplace_draws_have_the_right_scale() -> None:
    rng = random.Random(7)
    draws = [laplace(1 / 0.28, rng) for _ in range(20000)]
    assert abs(statistics.mean(draws)) < 0.2
    # Laplace(0, b): mean absolute deviation is b
    assert abs(statistics.mean(abs(x) for x in draws) - 1 / 0.28) < 0.15


def test_round_to_step_halves_away_from_zero() -> None:
    assert [round_to_step(x, 10) for x in (4.9, 5.0, 15.0, -3.0)] == [0, 10, 20, 0]


@pytest.mark.parametrize(
    ("age", "study", "birth", "expected"),
    [("061Y", "20200101", "19000101", 61), ("018M", None, None, 1), ("104W", None, None, 1),
     ("400D", None, None, 1), (None, "20200315", "19700316", 49), (None, "20200316", "19700316", 50),
     (None, "20200315", "19700101", 50), (None, "20200315", None, None), ("bad", None, None, None),
     (None, "2020", "1970", None), (None, "19600101", "19700101", None)],
)  # fmt: skip
def test_age_in_completed_years(age: str | None, study: str | None, birth: str | None,
                                expected: int | None) -> None:  # fmt: skip
    assert facts.age_years(age, study, birth) == expected


def test_age_range_is_an_object_widened_to_fives() -> None:
    assert age_range(None, 40) == {"min": 0, "max": 0}  # the reference's bug gives the integer 0
    assert age_range(43, 61) == {"min": 40, "max": 65}
    assert age_range(40, 65) == {"min": 40, "max": 65}


@pytest.mark.parametrize(
    ("status", "rights", "switch", "expected"),
    [("active", "PUBLIC", None, True), ("active", "RESTRICTED", None, True),
     ("active", None, True, True), ("active", "NON_PUBLIC", True, False),
     ("active", "RESTRICTED", False, False), ("completed", "PUBLIC", None, False),
     ("withdrawn", "RESTRICTED", True, False)],
)  # fmt: skip
def test_which_datasets_answer(status: str, rights: str | None, switch: bool | None,
                               expected: bool) -> None:  # fmt: skip
    from server.core.federation.datasets import ACCESS_RIGHTS_URL, OPT_IN_URL, answers

    ext = [{"url": ACCESS_RIGHTS_URL, "valueCode": rights}] if rights else []
    ext += [{"url": OPT_IN_URL, "valueBoolean": switch}] if switch is not None else []
    assert (
        answers({"resourceType": "ResearchStudy", "id": "x", "status": status, "extension": ext})
        is expected
    )
