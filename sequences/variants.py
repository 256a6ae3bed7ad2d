"""A/B variants: which letter an enrollment gets, and when one variant has won. Pure.

Assignment is deterministic: a hash (SHA-256) of the sequence's seed and the enrollment id,
read as a number in [0, 1), falls into one variant's share of the weights. The same enrollment
always gets the same letter (a redelivery or a rebuild assigns it again identically), and over
many enrollments the letters split by the weights like independent draws.

The winner test is the two-proportion z-test with a pooled proportion (two-sided): for reply
counts x1, x2 of n1, n2 deliveries, p = (x1 + x2) / (n1 + n2),
z = (x1/n1 - x2/n2) / sqrt(p (1 - p) (1/n1 + 1/n2)); significant at 95% when |z| > 1.96
(p-value = 2 (1 - Phi(|z|)) < 0.05). With three variants the best is tested against each
other one, and wins only if every test is significant."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from typing import Mapping, Sequence

LETTERS = "ABC"
MIN_DELIVERIES = 200  # per variant, before an automatic winner is considered
CONFIDENCE = 0.95


def draw(seed: str, enrollment_id: uuid.UUID) -> float:
    """A number in [0, 1), the same for the same seed and enrollment."""
    digest = hashlib.sha256(f"{seed}:{enrollment_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(seed: str, enrollment_id: uuid.UUID, weights: Sequence[float]) -> str:
    """The letter of the variant whose share of `weights` the enrollment's draw falls in."""
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative and add up to more than 0")
    point, cumulative = draw(seed, enrollment_id) * sum(weights), 0.0
    for letter, weight in zip(LETTERS, weights):
        cumulative += weight
        if point < cumulative:
            return letter
    return LETTERS[len(weights) - 1]  # (float rounding at the very top)


@dataclass(frozen=True)
class ZTest:
    z: float
    p_value: float

    def significant(self, confidence: float = CONFIDENCE) -> bool:
        return self.p_value < 1 - confidence


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """Two-sided two-proportion z-test with a pooled proportion."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("each group needs at least one delivery")
    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return ZTest(0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / spread
    return ZTest(z, math.erfc(abs(z) / math.sqrt(2)))  # = 2 (1 - Phi(|z|))


@dataclass(frozen=True)
class Outcome:
    replies: int
    deliveries: int

    @property
    def rate(self) -> float:
        return self.replies / self.deliveries if self.deliveries else 0.0


def automatic_winner(outcomes: Mapping[str, Outcome], min_deliveries: int = MIN_DELIVERIES,
                     confidence: float = CONFIDENCE) -> str | None:
    """The letter with the best reply rate, once every variant has `min_deliveries` and its
    difference from every other is significant; else None (keep splitting)."""
    if len(outcomes) < 2 or any(o.deliveries < min_deliveries for o in outcomes.values()):
        return None
    best = max(sorted(outcomes), key=lambda letter: outcomes[letter].rate)
    top = outcomes[best]
    for letter, other in outcomes.items():
        if letter == best:
            continue
        test = two_proportion_z_test(top.replies, top.deliveries, other.replies,
                                     other.deliveries)
        if not (test.z > 0 and test.significant(confidence)):
            return None
    return best
