"""An independent round-to-nearest-even for the self-tests: exact Fraction distances to neighbours.

It shares no code with softmax_suite.oracle.rounding: candidates come from numpy's nextafter in the target
dtype, distances are exact Fractions, and a tie goes to the candidate whose encoding is even.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np

# How far (in steps of the target dtype) to look on each side of a first guess: the guess is a
# float64 cast, off by at most one step (double rounding), so two steps always bracket the answer.
STEPS = 2
UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def exact(value) -> tuple[Fraction, bool]:
    """(|value| as an exact Fraction, value is negative) for an mpf, float, int or Fraction."""
    if isinstance(value, mpmath.mpf):
        sign, man, exp, _ = value._mpf_
        if not man and exp:  # mpmath's nan/inf have man = 0 and a nonzero exp code
            raise ValueError(f"not a finite value: {value}")
        return Fraction(man) * Fraction(2) ** exp, bool(sign)
    fraction = Fraction(value)
    negative = fraction < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0)
    return abs(fraction), negative


def _step(c: np.ndarray, toward: float, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # max -> inf is a wanted step
        return np.nextafter(c, np.array(toward, dtype))


def _is_even(c: np.ndarray, dtype: np.dtype) -> bool:
    """The last bit of the encoding is the last bit of the integer significand (inf's is 0)."""
    return int(c.view(UNSIGNED[dtype.itemsize])) & 1 == 0


def reference_round(value, dtype) -> float:
    """value rounded to nearest, ties to even, into dtype; returned as an exact Python float."""
    dtype = np.dtype(dtype)
    if isinstance(value, mpmath.mpf) and not mpmath.isfinite(value):
        return float(value)
    magnitude, negative = exact(value)
    biggest = Fraction(float(ml_dtypes.finfo(dtype).max))
    below_biggest = Fraction(float(_step(np.array(float(biggest), dtype), 0.0, dtype)))
    # IEEE 754: beyond max, round as if the next value max + ulp(max) = 2^(emax+1) existed;
    # landing on it (it is even) means infinity.
    overflow_value = 2 * biggest - below_biggest
    guess = np.array(float(min(magnitude, biggest)), np.float64).astype(dtype)
    candidates = {float(guess): guess}
    for toward in (math.inf, 0.0):
        c = guess
        for _ in range(STEPS):
            if c == toward:
                break
            c = _step(c, toward, dtype)
            candidates[float(c)] = c

    def distance(point: float) -> Fraction:
        return abs(magnitude - (overflow_value if math.isinf(point) else Fraction(point)))

    best = min(distance(point) for point in candidates)
    nearest = [point for point in candidates if distance(point) == best]
    if len(nearest) == 2:
        nearest = [point for point in nearest if _is_even(candidates[point], dtype)]
    assert len(nearest) == 1, (value, dtype, nearest)
    result = nearest[0]
    # The window must bracket the answer: the chosen value's neighbours were compared too.
    for toward in (math.inf, 0.0):
        if result != toward:
            assert float(_step(candidates[result], toward, dtype)) in candidates, (value, dtype)
    return -result if negative else result
