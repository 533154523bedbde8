"""Shrinking a found row: fewer entries and simpler values, for as long as it keeps KEEP of its
score (a semantic difference or a failed call must stay one). Greedy and deterministic; every
step's variants are scored in one batch, and the best-scoring variant that holds is taken.

A row with a scale or a mask (suites.hunt.attention) keeps their meaning: an entry dropped goes with
its place in the mask, and the values simplified are the row's own (never the garbage under the
mask). Its first steps try it without the mask and the scale (a failure that survives without them
is simpler), with the row's own values under the mask instead of garbage, and its last step
unmasks blocks of entries.

An input of a loss op (suites.hunt.losses.Batch) shrinks the same way, by shrink_batch: first without
each of its options (label smoothing, class weights, the ignored rows with the ignore_index) and
with a simpler reduction ("none" is simpler than "sum", "sum" than "mean"), then with fewer rows and
fewer classes (never a kept row's target: the targets are renumbered), then with simpler logits
(each row's max moved to 0, then the RULES) and simpler weights. Besides LOSS_BUDGET evaluations it
has an oracle budget (LOSS_COST, in the units of fitness.LossEvaluator.cost), and a long input tries
at most LOSS_VARIANTS variants a step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.oracle.rounding import round_values
from softmax_suite.suites.hunt import losses
from softmax_suite.suites.hunt.attention import Row, as_row, asks
from softmax_suite.suites.hunt.fitness import Evaluator, LossEvaluator
from softmax_suite.suites.hunt.losses import Batch
from softmax_suite.suites.hunt.mutations import to_format

KEEP = 0.9
BUDGET = 3000  # evaluations per row
# Beyond this many entries a rule is tried on blocks of entries rather than on each one.
BLOCKS = 32
# An input of a loss op: evaluations, and the oracle's units (fitness.LossEvaluator.cost), per input;
# the variants a step tries of an input with rows longer than losses.LONG; the reductions, simplest first.
LOSS_BUDGET = 1000
LOSS_COST = 2.0**19
LOSS_VARIANTS = 4
REDUCTIONS = ("none", "sum", "mean")


@dataclass(frozen=True)
class Size:
    """How big a row is: its length and the significant bits of its finite entries; for a loss's
    input, its rows too (length: its classes)."""

    length: int
    bits: int
    rows: int | None = None

    @property
    def shape(self) -> str:
        """'7' for a row of 7 entries, '2x7' for 2 rows of 7 classes."""
        return str(self.length) if self.rows is None else f"{self.rows}x{self.length}"

    def __str__(self) -> str:
        return f"{self.shape} entries, {self.bits} bits"


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


def size(x: np.ndarray | Row | Batch) -> Size:
    """The length and significant bits of the input (garbage under a mask included; a loss's input:
    its classes, rows and the bits of its logits)."""
    if isinstance(x, Batch):
        bits = sum(significant_bits(v) for v in x.values.astype(np.float64).reshape(-1).tolist())
        return Size(x.classes, bits, x.rows)
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


def shrink(evaluate: Evaluator | LossEvaluator, x: np.ndarray | Row | Batch, score: float,
           budget: int = BUDGET) -> Shrunk:
    """x (an array, or a Row with its scale and mask) reduced while its score stays at least KEEP
    times score (at most budget evaluations); a loss's input by shrink_batch."""
    if isinstance(x, Batch):
        return shrink_batch(evaluate, x, score)
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

    def asks(self, variant: Row) -> bool:
        # A row with no finite entry kept is a special input (policy, not accuracy): not a shrink.
        return asks(variant)

    def affordable(self, fresh: list) -> list:
        """The variants the budget leaves room for."""
        return fresh[:max(0, self.budget - self.spent())]

    def attempt(self, variants: list[Row]) -> bool:
        """Score the variants new to this step; take the best-scoring one that holds, if any."""
        seen = {self.row.key}
        fresh = []
        for variant in variants:
            if self.asks(variant) and variant.key not in seen:
                seen.add(variant.key)
                fresh.append(variant)
        fresh = self.affordable(fresh)
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


def shrink_batch(evaluate: LossEvaluator, batch: Batch, score: float, budget: int = LOSS_BUDGET,
                 cost: float = LOSS_COST) -> Shrunk:
    """A loss's input reduced while its score stays at least KEEP times score (at most budget
    evaluations and cost of the oracle's units)."""
    shrinker = _BatchShrinker(evaluate, batch, score, budget, cost)
    fmt = evaluate.fmt
    while not shrinker.spent_all():
        before = shrinker.row.key
        shrinker.drop_options()
        shrinker.drop_rows()
        if shrinker.row.classes > losses.LONG:
            # Each variant of long rows costs much: the simplest logits (0, integers) first, then fewer
            # classes.
            shrinker.simplify(fmt)
        shrinker.drop_classes()
        shrinker.simpler_reduction()
        values = shrinker.row.values.astype(np.float64)
        finite = np.isfinite(values)
        tops = np.max(np.where(finite, values, -np.inf), axis=1, keepdims=True)
        tops = np.where(np.isfinite(tops), tops, 0.0)
        shifted = np.where(finite, values - tops, values)
        shrinker.attempt([_batch_values(shrinker.row, shifted, fmt)])
        shrinker.simplify(fmt)
        if shrinker.row.weight is not None:
            for rule in (np.ones_like, *RULES[1:]):
                weight = _rounded_weight(rule, shrinker.row.weight, fmt)
                shrinker.attempt([shrinker.row.replace(weight=weight)])
        if shrinker.row.key == before:
            break
    return Shrunk(shrinker.row, shrinker.score, size(batch), size(shrinker.row), shrinker.spent())


class _BatchShrinker(_Shrinker):
    """The input so far, its score, and what shrinking it has cost, evaluations and the oracle's units."""

    def __init__(self, evaluate: LossEvaluator, batch: Batch, score: float, budget: int, cost: float) -> None:
        super().__init__(evaluate, batch, score, budget)
        self.cost, self.cost_start = cost, evaluate.spent
        self.special = not np.isfinite(batch.values.astype(np.float64)).any()

    def spent_all(self) -> bool:
        return self.spent() >= self.budget or self.evaluate.spent - self.cost_start >= self.cost

    def asks(self, variant: Batch) -> bool:
        # Logits with no finite entry ask the policy only (every loss NaN): not a shrink of an input
        # that has one.
        return self.special or bool(np.isfinite(variant.values.astype(np.float64)).any())

    def affordable(self, fresh: list) -> list:
        left = self.cost - (self.evaluate.spent - self.cost_start)
        taken = []
        for variant in super().affordable(fresh):
            left -= self.evaluate.cost(variant, like=self.row)
            if left < 0:
                break
            taken.append(variant)
        return taken

    def drop_options(self) -> None:
        """Without the label smoothing (or with a simpler one), the class weights, the ignored rows (and
        the ignore_index), each kept when it holds."""
        if self.row.label_smoothing > 0 and not self.attempt([self.row.replace(label_smoothing=0.0)]):
            # A simpler smoothing where it holds: 1, 0.5, 0.25, then 0.1 (simplest first, none of them
            # simpler than the smoothing's own place in that order).
            simpler = (1.0, 0.5, 0.25, 0.1)
            for smoothing in simpler[:simpler.index(self.row.label_smoothing)
                                     if self.row.label_smoothing in simpler else len(simpler)]:
                if self.attempt([self.row.replace(label_smoothing=smoothing)]):
                    break
        if self.row.weight is not None:
            self.attempt([self.row.replace(weight=None)])
        if self.row.ignore_index is not None:
            kept = self.row.kept
            if kept.any():
                self.attempt([self.row.replace(values=self.row.values[kept], target=self.row.target[kept],
                                               ignore_index=None)])
            elif self.row.ignore_index not in range(self.row.classes):
                self.attempt([self.row.replace(target=np.zeros(self.row.rows, dtype=np.int64),
                                               ignore_index=None)])

    def simplify(self, fmt: Format) -> None:
        """The RULES on the logits while they hold (on long rows only the first three, on the whole
        input)."""
        long = self.row.classes > losses.LONG
        for rule in RULES[:3] if long else RULES:
            while self.attempt(_simpler_batch(self.row, rule, fmt, whole_only=long)):
                pass

    def simpler_reduction(self) -> None:
        """A simpler reduction where it holds: a loss per row, then their sum (than their mean)."""
        for reduction in REDUCTIONS[:REDUCTIONS.index(self.row.reduction)]:
            if self.attempt([self.row.replace(reduction=reduction)]):
                break

    def drop_rows(self) -> None:
        """Remove blocks of rows (with their targets), halving the block whenever no removal holds."""
        block = self.row.rows // 2
        while block >= 1 and not self.spent_all():
            starts = range(0, self.row.rows - block + 1, block)
            variants = [_without_rows(self.row, np.arange(s, s + block)) for s in starts]
            if self.attempt(variants):
                block = min(block, self.row.rows // 2)
            else:
                block //= 2

    def drop_classes(self) -> None:
        """Remove blocks of classes that no kept row aims at (the targets renumbered), halving the block
        whenever no removal holds; a long input tries LOSS_VARIANTS blocks a step."""
        block = self.row.classes // 2
        while block >= 1 and not self.spent_all():
            classes = self.row.classes
            starts = list(range(0, classes - block + 1, block))
            if classes > losses.LONG and len(starts) > LOSS_VARIANTS:
                starts = [starts[int(i)] for i in np.linspace(0, len(starts) - 1, LOSS_VARIANTS)]
            variants = [_without_classes(self.row, np.arange(s, s + block), self.evaluate.fmt)
                        for s in starts]
            if self.attempt([v for v in variants if v is not None]):
                block = min(block, self.row.classes // 2)
            else:
                block //= 2


def _without_rows(batch: Batch, rows: np.ndarray) -> Batch:
    keep = np.delete(np.arange(batch.rows), rows)
    return batch.replace(values=batch.values[keep], target=batch.target[keep])


def _without_classes(batch: Batch, classes: np.ndarray, fmt: Format) -> Batch | None:
    """batch without these classes but those a kept row aims at; None when nothing is left to drop."""
    aimed = batch.target[batch.kept]
    dropped = np.setdiff1d(classes, aimed)
    if not dropped.size or dropped.size == batch.classes:
        return None
    return losses.keep_columns(batch, np.setdiff1d(np.arange(batch.classes), dropped), fmt)


def _batch_values(batch: Batch, values: np.ndarray, fmt: Format) -> Batch:
    """batch with these float64 logits, each row rounded into the format (losses.loss_row); entries
    that it would clip (+inf) keep their bits."""
    formatted = np.stack([losses.loss_row(row, fmt) for row in values])
    special = np.isposinf(values) | np.isnan(values)
    return batch.replace(values=np.where(special, batch.values, formatted))


def _simpler_batch(batch: Batch, rule: Callable[[np.ndarray], np.ndarray], fmt: Format,
                   whole_only: bool = False) -> list[Batch]:
    """Variants of batch with rule applied to every finite logit, then to each row, then to blocks of
    classes in every row (but for whole_only)."""
    values = batch.values.astype(np.float64)
    finite = np.isfinite(values)
    with np.errstate(all="ignore"):
        simpler = np.where(finite, rule(np.where(finite, values, 0.0)), values)
    variants = [_batch_values(batch, simpler, fmt)]
    if whole_only:
        return variants
    if batch.rows > 1:
        for i in range(batch.rows):
            variant = values.copy()
            variant[i] = simpler[i]
            variants.append(_batch_values(batch, variant, fmt))
    for block in np.array_split(np.arange(batch.classes), min(batch.classes, BLOCKS)):
        variant = values.copy()
        variant[:, block] = simpler[:, block]
        variants.append(_batch_values(batch, variant, fmt))
    return variants


def _rounded_weight(rule: Callable[[np.ndarray], np.ndarray], weight: np.ndarray, fmt: Format) -> np.ndarray:
    """The class weights after rule, in the format, finite and >= 0."""
    with np.errstate(all="ignore"):
        simpler = np.abs(rule(weight.astype(np.float64)))
    simpler = np.where(np.isfinite(simpler), simpler, weight.astype(np.float64))
    return round_values(np.clip(simpler, 0.0, fmt.max), fmt)
