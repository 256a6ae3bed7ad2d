"""A/B variants (sequences/variants.py): assignment by weights and the winner's z-test."""

from __future__ import annotations

import math
import uuid
from collections import Counter

import pytest

from sequences.variants import Outcome, assign, automatic_winner, two_proportion_z_test


def enrollments(n: int) -> list[uuid.UUID]:
    return [uuid.uuid5(uuid.NAMESPACE_URL, f"enrollment-{i}") for i in range(n)]


@pytest.mark.parametrize("weights", [(50, 50), (50, 30, 20), (1, 1, 1), (90, 10)])
def test_a_thousand_enrollments_split_by_the_weights_within_four_standard_deviations(weights):
    """Tolerance: each letter's count within 4 binomial standard deviations of n * share
    (for independent draws, a miss has a chance of about 6 in 100,000 per letter)."""
    n = 1000
    counts = Counter(assign("seed-1", e, weights) for e in enrollments(n))
    assert sum(counts.values()) == n and set(counts) == set("ABC"[:len(weights)])
    for letter, weight in zip("ABC", weights):
        share = weight / sum(weights)
        assert abs(counts[letter] - n * share) <= 4 * math.sqrt(n * share * (1 - share)), counts


def test_the_same_seed_and_enrollment_always_get_the_same_letter_another_seed_reshuffles():
    ids = enrollments(200)
    first = [assign("seed-1", e, (1, 1)) for e in ids]
    assert first == [assign("seed-1", e, (1, 1)) for e in ids]
    assert first != [assign("seed-2", e, (1, 1)) for e in ids]


def test_a_zero_weight_variant_gets_no_one_and_bad_weights_are_refused():
    assert {assign("s", e, (1, 0)) for e in enrollments(300)} == {"A"}
    for bad in ((), (0, 0), (-1, 2)):
        with pytest.raises(ValueError):
            assign("s", uuid.uuid4(), bad)


def test_the_z_test_matches_known_values():
    # statsmodels' proportions_ztest documentation example: count [5, 12], nobs [83, 99]
    test = two_proportion_z_test(5, 83, 12, 99)
    assert round(test.z, 4) == -1.4078 and round(test.p_value, 3) == 0.159
    assert not test.significant()
    # 30% against 20% of 200 each: z = 0.1 / sqrt(0.25 * 0.75 * 0.01) = 2.3094, p = 0.0209
    test = two_proportion_z_test(60, 200, 40, 200)
    assert round(test.z, 4) == 2.3094 and round(test.p_value, 4) == 0.0209
    assert test.significant()
    assert two_proportion_z_test(0, 10, 0, 10).p_value == 1.0


def test_an_automatic_winner_needs_the_minimum_deliveries_and_significance_against_every_other():
    assert automatic_winner({"A": Outcome(60, 200), "B": Outcome(40, 200)}) == "A"
    assert automatic_winner({"A": Outcome(60, 199), "B": Outcome(40, 200)}) is None
    assert automatic_winner({"A": Outcome(44, 200), "B": Outcome(40, 200)}) is None
    assert automatic_winner({"A": Outcome(60, 200), "B": Outcome(40, 200),
                             "C": Outcome(58, 200)}) is None
    assert automatic_winner({"A": Outcome(30, 100), "B": Outcome(20, 100)},
                            min_deliveries=100) is None  # z = 1.63: not significant
