"""Shrinking a found row: fewer entries and simpler values, for as long as it keeps KEEP of its
score (a semantic difference or a failed call must stay one). Greedy and deterministic; every
step's variants are scored in one batch, and the best-scoring variant that holds is taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.suites.hunt.fitness import Evaluator
from softmax_suite.suites.hunt.mutations import to_format

KEEP = 0.9
BUDGET = 3000  # evaluations per row
# Beyond this many entries a rule is tried on blocks of entries rather than on each one.
BLOCKS = 32


@dataclass(frozen=True)
class Size:
    """How big a row is: its length and the significant bits of its finite entries."""

    length: int
    bits: int

    def __str__(self) -> str:
        return f"{self.length} entries, {self.bits} bits"


@dataclass(frozen=True)
class Shrunk:
    x: np.ndarray
    score: float
    before: Size
    after: Size
    evaluations: int


def significant_bits(value: float) -> int:
    """Bits of the binary significand of a finite value up to its last 1 (0 for 0)."""
    if value == 0 or not math.isfinite(value):
        return 0
    mantissa = math.frexp(abs(value))[0]
    bits = 0
    while mantissa:
        mantissa = mantissa * 2 - int(mantissa * 2)
        bits += 1
    return bits


def size(x: np.ndarray) -> Size:
    return Size(int(x.size), sum(significant_bits(v) for v in x.astype(np.float64).tolist()))


def _to_bits(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def rounded(v: np.ndarray) -> np.ndarray:
        mantissa, exponent = np.frexp(v)
        return np.ldexp(np.rint(np.ldexp(mantissa, k)), exponent - k)

    return rounded


# Simpler values, simplest first: 0, integers, then fewer significant bits.
RULES: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    np.zeros_like, np.rint, *(_to_bits(k) for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)))


def shrink(evaluate: Evaluator, x: np.ndarray, score: float, budget: int = BUDGET) -> Shrunk:
    """x reduced while its score stays at least KEEP times score (at most budget evaluations)."""
    shrinker = _Shrinker(evaluate, x, score, budget)
    while shrinker.spent() < budget:
        before = shrinker.x.tobytes()
        shrinker.drop_entries()
        values = shrinker.x.astype(np.float64)
        finite = np.isfinite(values)
        shrinker.attempt([to_format(np.where(finite, values - values[finite].max(), values), evaluate.fmt)])
        for rule in RULES:
            while shrinker.attempt(_simpler(shrinker.x, rule, evaluate.fmt)):
                pass
        if shrinker.x.tobytes() == before:
            break
    return Shrunk(shrinker.x, shrinker.score, size(x), size(shrinker.x), shrinker.spent())


class _Shrinker:
    """The row so far, its score, and what shrinking it has cost."""

    def __init__(self, evaluate: Evaluator, x: np.ndarray, score: float, budget: int) -> None:
        self.evaluate, self.x, self.score, self.budget = evaluate, x, score, budget
        self.threshold = score * KEEP if math.isfinite(score) else score
        self.start = evaluate.evaluations

    def spent(self) -> int:
        return self.evaluate.evaluations - self.start

    def attempt(self, variants: list[np.ndarray]) -> bool:
        """Score the variants new to this step; take the best-scoring one that holds, if any."""
        seen = {self.x.tobytes()}
        fresh = []
        for variant in variants:
            # A row with no finite entry is a special input (policy, not accuracy): not a shrink.
            if np.isfinite(variant.astype(np.float64)).any() and variant.tobytes() not in seen:
                seen.add(variant.tobytes())
                fresh.append(variant)
        fresh = fresh[:max(0, self.budget - self.spent())]
        if not fresh:
            return False
        scores = self.evaluate(fresh)
        holding = [i for i, score in enumerate(scores) if score >= self.threshold]
        if not holding:
            return False
        best = max(holding, key=lambda i: scores[i])
        self.x, self.score = fresh[best], scores[best]
        return True

    def drop_entries(self) -> None:
        """Remove blocks of entries, halving the block size whenever no removal holds."""
        block = self.x.size // 2
        while block >= 1:
            starts = range(0, self.x.size - block + 1, block)
            if self.attempt([np.delete(self.x, np.arange(s, s + block)) for s in starts]):
                block = min(block, self.x.size // 2)
            else:
                block //= 2


def _simpler(row: np.ndarray, rule: Callable[[np.ndarray], np.ndarray], fmt: Format) -> list[np.ndarray]:
    """Variants of row with rule applied to every finite entry, then to each (to blocks of entries
    in a long row)."""
    values = row.astype(np.float64)
    finite = np.isfinite(values)
    with np.errstate(all="ignore"):
        simpler = np.where(finite, rule(np.where(finite, values, 0.0)), values)
    variants = [to_format(simpler, fmt)]
    for block in np.array_split(np.arange(row.size), min(row.size, BLOCKS)):
        variant = values.copy()
        variant[block] = simpler[block]
        variants.append(to_format(variant, fmt))
    return variants
