"""Shrinking a found row: fewer entries and simpler values, for as long as it keeps KEEP of its
score (a semantic difference or a failed call must stay one). Greedy and deterministic; every
step's variants are scored in one batch, and the best-scoring variant that holds is taken.

A row with a scale or a mask (suites.hunt.attention) keeps their meaning: an entry dropped goes with
its place in the mask, and the values simplified are the row's own (never the garbage under the
mask). Its first steps try it without the mask and the scale (a failure that survives without them
is simpler), with the row's own values under the mask instead of garbage, and its last step
unmasks blocks of entries.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.suites.hunt.attention import Row, as_row, asks
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
    """The shrunk row (its input x, and the row with its scale and mask), its score, its size before and
    after, and the evaluations shrinking took."""

    row: Row
    score: float
    before: Size
    after: Size
    evaluations: int

    @property
    def x(self) -> np.ndarray:
        return self.row.x


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


def size(x: np.ndarray | Row) -> Size:
    """The length and significant bits of the input (garbage under a mask included)."""
    x = as_row(x).x
    return Size(int(x.size), sum(significant_bits(v) for v in x.astype(np.float64).tolist()))


def _to_bits(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def rounded(v: np.ndarray) -> np.ndarray:
        mantissa, exponent = np.frexp(v)
        return np.ldexp(np.rint(np.ldexp(mantissa, k)), exponent - k)

    return rounded


# Simpler values, simplest first: 0, integers, then fewer significant bits.
RULES: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    np.zeros_like, np.rint, *(_to_bits(k) for k in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)))


def shrink(evaluate: Evaluator, x: np.ndarray | Row, score: float, budget: int = BUDGET) -> Shrunk:
    """x (an array, or a Row with its scale and mask) reduced while its score stays at least KEEP
    times score (at most budget evaluations)."""
    row = as_row(x)
    shrinker = _Shrinker(evaluate, row, score, budget)
    while shrinker.spent() < budget:
        before = shrinker.row.key
        shrinker.drop_options()
        shrinker.drop_entries()
        values = shrinker.row.values.astype(np.float64)
        finite = np.isfinite(values)
        shrinker.attempt([shrinker.row.with_values(
            to_format(np.where(finite, values - values[finite].max(), values), evaluate.fmt))])
        for rule in RULES:
            while shrinker.attempt(_simpler(shrinker.row, rule, evaluate.fmt)):
                pass
        while shrinker.attempt(_unmasked(shrinker.row)):
            pass
        if shrinker.row.key == before:
            break
    return Shrunk(shrinker.row, shrinker.score, size(row), size(shrinker.row), shrinker.spent())


class _Shrinker:
    """The row so far, its score, and what shrinking it has cost."""

    def __init__(self, evaluate: Evaluator, row: Row, score: float, budget: int) -> None:
        self.evaluate, self.row, self.score, self.budget = evaluate, row, score, budget
        self.threshold = score * KEEP if math.isfinite(score) else score
        self.start = evaluate.evaluations

    def spent(self) -> int:
        return self.evaluate.evaluations - self.start

    def attempt(self, variants: list[Row]) -> bool:
        """Score the variants new to this step; take the best-scoring one that holds, if any."""
        seen = {self.row.key}
        fresh = []
        for variant in variants:
            # A row with no finite entry kept is a special input (policy, not accuracy): not a shrink.
            if asks(variant) and variant.key not in seen:
                seen.add(variant.key)
                fresh.append(variant)
        fresh = fresh[:max(0, self.budget - self.spent())]
        if not fresh:
            return False
        scores = self.evaluate(fresh)
        holding = [i for i, score in enumerate(scores) if score >= self.threshold]
        if not holding:
            return False
        best = max(holding, key=lambda i: scores[i])
        self.row, self.score = fresh[best], scores[best]
        return True

    def drop_options(self) -> None:
        """Without the mask and the scale, without either, and with the row's own values under the
        mask instead of garbage, each kept when it holds (nothing to try for a plain row)."""
        if self.row.scale is not None and self.row.mask is not None:
            self.attempt([Row(self.row.values)])
        if self.row.mask is not None:
            self.attempt([dataclasses.replace(self.row, mask=None, garbage=None)])
        if self.row.scale is not None:
            self.attempt([dataclasses.replace(self.row, scale=None)])
        if self.row.masked and self.row.garbage is not None:
            self.attempt([dataclasses.replace(self.row, garbage=None)])

    def drop_entries(self) -> None:
        """Remove blocks of entries (and their places in the mask), halving the block size whenever no
        removal holds."""
        block = self.row.values.size // 2
        while block >= 1:
            size = self.row.values.size
            starts = range(0, size - block + 1, block)
            if self.attempt([_deleted(self.row, np.arange(s, s + block)) for s in starts]):
                block = min(block, self.row.values.size // 2)
            else:
                block //= 2


def _deleted(row: Row, entries: np.ndarray) -> Row:
    mask = None if row.mask is None else np.delete(row.mask, entries)
    return dataclasses.replace(row, values=np.delete(row.values, entries), mask=mask)


def _unmasked(row: Row) -> list[Row]:
    """Variants of row with blocks of its masked entries kept again (showing the row's own values)."""
    if not row.masked:
        return []
    dropped = np.flatnonzero(~row.mask)
    variants = []
    for block in np.array_split(dropped, min(dropped.size, BLOCKS)):
        mask = row.mask.copy()
        mask[block] = True
        variants.append(dataclasses.replace(row, mask=mask))
    return variants


def _simpler(row: Row, rule: Callable[[np.ndarray], np.ndarray], fmt: Format) -> list[Row]:
    """Variants of row with rule applied to every finite value, then to each (to blocks of values
    in a long row)."""
    values = row.values.astype(np.float64)
    finite = np.isfinite(values)
    with np.errstate(all="ignore"):
        simpler = np.where(finite, rule(np.where(finite, values, 0.0)), values)
    variants = [row.with_values(to_format(simpler, fmt))]
    for block in np.array_split(np.arange(values.size), min(values.size, BLOCKS)):
        variant = values.copy()
        variant[block] = simpler[block]
        variants.append(row.with_values(to_format(variant, fmt)))
    return variants
