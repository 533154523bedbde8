"""What a loss case adds to its logits: the targets and the options of cross_entropy (the loss ops
of softmax_suite.ops), as data, and the generators of the loss cases' logits and targets.

A loss case's logits are (N, C), one row per sample, classes along the last axis. Its targets,
weights and logits are seeded by the case (targets one past the mask's seed, weights two past),
so every dtype and every backend sees the same question. docs/cross-entropy.md states the policy
for each special row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import Format, format_of
from softmax_suite.ops import REDUCTIONS
from softmax_suite.oracle.rounding import round_values

Targets = Callable[[np.random.Generator, np.ndarray], np.ndarray]  # (rng, float64 logits) -> (N,)
Weights = Callable[[np.random.Generator, int], np.ndarray]  # (rng, C) -> (C,)
LOSS_COTANGENTS = ("ones", "random")


@dataclass(frozen=True)
class Loss:
    """The loss's question beyond the logits. ignore_index None and label_smoothing 0 are not passed
    (torch's defaults: -100, which no target of such a case holds, and no smoothing); weight None
    is no class weights."""

    targets: Targets
    reduction: str = "mean"
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    weight: Weights | None = None

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction {self.reduction!r}: use one of {', '.join(REDUCTIONS)}")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing {self.label_smoothing!r}: use a number in [0, 1]")

    @property
    def options(self) -> tuple[str, ...]:
        """The optional keyword arguments its calls pass (softmax_suite.protocol.LOSS_OPTIONS)."""
        given = (("ignore_index", self.ignore_index is not None),
                 ("label_smoothing", self.label_smoothing > 0), ("weight", self.weight is not None))
        return tuple(name for name, passed in given if passed)

    def arguments(self, values: np.ndarray, seed: int, dtype: str) -> dict:
        """The keyword arguments of a call on logits of these float64 values, in dtype: target and
        reduction always, and the options given (weights rounded into dtype)."""
        targets = np.asarray(self.targets(np.random.default_rng(seed + 1), values), dtype=np.int64)
        if targets.shape != values.shape[:1]:
            raise ValueError(f"a loss case's targets have shape {targets.shape}: give one per row "
                             f"({values.shape[0]})")
        found = {"target": targets, "reduction": self.reduction}
        if self.ignore_index is not None:
            found["ignore_index"] = self.ignore_index
        if self.label_smoothing > 0:
            found["label_smoothing"] = self.label_smoothing
        if self.weight is not None:
            found["weight"] = round_values(self.weight(np.random.default_rng(seed + 2), values.shape[1]),
                                           format_of(dtype))
        return found


def summary(arguments: dict) -> dict:
    """What a record says of a loss call's arguments (the targets and weights by count, not in full)."""
    target = arguments["target"]
    summary = {"reduction": arguments["reduction"], "rows": int(target.size)}
    if "ignore_index" in arguments:
        summary["ignore_index"] = int(arguments["ignore_index"])
        summary["ignored_rows"] = int(np.sum(target == arguments["ignore_index"]))
    if "label_smoothing" in arguments:
        summary["label_smoothing"] = float(arguments["label_smoothing"])
    if "weight" in arguments:
        summary["zero_weights"] = int(np.sum(arguments["weight"] == 0))
    return summary


# Targets.

def random_targets(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    return rng.integers(0, values.shape[1], size=values.shape[0])


def argmax_targets(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """The largest logit of each row: a correct prediction."""
    return np.argmax(values, axis=1)


def argmin_targets(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """The smallest finite logit of each row: the most wrong prediction."""
    return np.argmin(np.where(np.isfinite(values), values, np.inf), axis=1)


def every_row(index: int) -> Targets:
    return lambda rng, values: np.full(values.shape[0], index)


def with_ignored(index: int, every: int) -> Targets:
    """Random targets, every `every`-th row (from the first) set to index (the ignore_index)."""
    def targets(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
        found = random_targets(rng, values)
        found[::every] = index
        return found
    return targets


def on_masked(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    """A -inf logit's class where the row has one (a probability of 0: the loss is +inf), else random."""
    found = random_targets(rng, values)
    for row, logits in enumerate(values):
        masked = np.flatnonzero(np.isneginf(logits))
        if masked.size:
            found[row] = masked[0]
    return found


# Weights.

def some_zero_weights(rng: np.random.Generator, classes: int) -> np.ndarray:
    """Weights in [0.5, 2], every third class's 0."""
    weights = rng.uniform(0.5, 2.0, size=classes)
    weights[::3] = 0.0
    return weights


# Logits.

def confident(rows_per_gap: int, classes: int) -> Callable[[np.random.Generator, Format], np.ndarray]:
    """Rows whose first logit leads every other by a gap from 1 to past where exp(-gap) rounds to 0 in
    the format (the loss of a correct prediction, about (C - 1) e^-gap, goes from normal to subnormal
    and to an exact log1p(0) = 0 in the format's own arithmetic)."""
    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        gaps = np.linspace(1.0, -fmt.exp_zero_below + 4.0, rows_per_gap)
        spread = rng.uniform(0.0, 0.25, size=(rows_per_gap, classes - 1))
        return np.concatenate([np.zeros((rows_per_gap, 1)), -(gaps[:, None] + spread)], axis=1)
    return generate


def wrong_by(gaps: tuple[float, ...], classes: int) -> Callable[[np.random.Generator, Format], np.ndarray]:
    """Rows whose last logit (the target's, argmin_targets) trails the others, N(0, 1), by each gap,
    capped at the format's largest finite distance: losses of about the gap."""
    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        values = rng.normal(size=(len(gaps), classes))
        values[:, -1] = -np.minimum(np.asarray(gaps), fmt.max / 2)
        return values
    return generate


def with_special_rows(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Rows of 8 holding a NaN, a +inf, only -inf, one -inf among finite logits, and a plain row."""
    values = rng.normal(scale=2.0, size=(5, 8))
    values[0, 3] = np.nan
    values[1, 5] = np.inf
    values[2] = -np.inf
    values[3, 2] = -np.inf
    return values


def with_masked(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Rows of 16 N(0, 2^2) logits, a quarter of them -inf (a vocabulary mask); the last row has none."""
    values = rng.normal(scale=2.0, size=(8, 16))
    masked = rng.random(values.shape) < 0.25
    masked[:, 0] = False
    masked[-1] = False
    return np.where(masked, -np.inf, values)
