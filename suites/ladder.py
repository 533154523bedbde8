"""The length ladder: rows straddling the lengths where a narrow accumulator gives out (a float16
sum of ones stalls at 2048 and overflows at 65520, a bfloat16 one stalls at 256), so that a report
can say how long a row each backend gets right in each dtype (docs/low-precision.md)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from softmax_suite.formats import Format

Generator = Callable[[np.random.Generator, Format], np.ndarray]

# Each length and the one past it where an accumulator's limit lies between them: 256 and 2048
# (bfloat16's and float16's sums of ones stall there), 65504 (float16's max), 65519/65520 (65520
# rounds to inf in float16), 65536 = 2^16, then 2^17 and 2^20 for wider accumulators.
LENGTHS: tuple[int, ...] = (256, 257, 2048, 2049, 4096, 8192, 65504, 65519, 65520, 65536, 2**17, 2**20)
# 2^24 + 1: a float32 sum of ones stalls at 2^24 (tagged slow: 2^24 entries per dtype).
SLOW_LENGTHS: tuple[int, ...] = (2**24 + 1,)


def uniform(n: int) -> Generator:
    """n equal logits (0): every exponential is 1, and the sum is n exactly."""
    return lambda rng, fmt: np.zeros((1, n))


def near_uniform(n: int) -> Generator:
    """n logits N(0, 0.02^2), as a language model's at initialisation: exponentials near 1 that
    are not equal, so a sum that stalls or rounds each term shows."""
    return lambda rng, fmt: rng.normal(scale=0.02, size=(1, n))


def random(n: int) -> Generator:
    """n logits N(0, 1)."""
    return lambda rng, fmt: rng.normal(size=(1, n))


# The kinds of ladder row, by the name cases and records give them: (generator, description).
ROWS: dict[str, tuple[Callable[[int], Generator], str]] = {
    "uniform": (uniform, "equal logits (0)"),
    "near_uniform": (near_uniform, "logits N(0, 0.02^2)"),
    "random": (random, "logits N(0, 1)"),
}
