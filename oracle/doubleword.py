"""Double-word (double-double) arithmetic on numpy float64 arrays, with proven error bounds.

A double-word x = (xh, xl) is the unevaluated sum xh + xl with xh = fl(xh + xl). u = 2^-53 is
float64's unit roundoff. Without an FMA (numpy has none), products are made exact with
Veltkamp's split and Dekker's TwoProd. Every bound holds without underflow and overflow; the
callers keep values near 1 and carry binary exponents separately (softmax_suite.oracle.exponential).

* two_sum (Knuth), fast_two_sum (Dekker, needs |a| >= |b|), two_prod (Dekker): exact,
  s + e = a + b, p + e = a * b.
* add (AccurateDWPlusDW, Joldes, Muller and Popescu, ACM TOMS 44(2), 2017, Algorithm 6 and
  Theorem 3.1): relative error at most 3u^2 + 13u^3 < ADD_ERROR.
* mul: (ph, pl) = two_prod(xh, yh) exactly; the cross terms xh yl and xl yh each round with
  error at most u^2 |xh yh| (|xl| <= u |xh|, |yl| <= u |yh|), their sum rounds with at most
  2u^2 |xh yh|, the dropped xl yl is at most u^2 |xh yh|, and pl + cross (at most 3.01u |ph|)
  rounds with at most 3.01u^2 |xh yh|; fast_two_sum is exact. In all <= 8.01u^2 |xh yh|, and
  |xh yh| <= (1 + 2.01u) |x y|: relative error below MUL_ERROR = 8.1u^2.
* tree_sum: pairwise sums of double-words, depth ceil(log2 n); every addition errs by at most
  ADD_ERROR times its result, itself at most the sum of |terms| below it, so the whole sum errs
  by at most depth * ADD_ERROR * (1 + ADD_ERROR)^depth * sum |terms| < depth * 3.01u^2 * sum |terms|.
"""

from __future__ import annotations

import math

import numpy as np

U = 2.0**-53
ADD_ERROR = 3 * U**2 + 13 * U**3
MUL_ERROR = 8.1 * U**2
SPLITTER = 134217729.0  # 2^27 + 1: Veltkamp's split of a 53-bit significand into 26 + 27 bits


def tree_error(length: int) -> float:
    """Relative bound (to sum |terms|) of tree_sum over length terms (module docstring)."""
    return max(1, math.ceil(math.log2(max(length, 2)))) * 3.01 * U**2


def float_tree_error(length: int) -> float:
    """Relative bound (to sum |values|) of float_tree_sum: gamma_depth = depth u / (1 - depth u)."""
    depth = max(1, math.ceil(math.log2(max(length, 2))))
    return depth * U / (1 - depth * U)


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    return s, b - (s - a)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = SPLITTER * a
    high = c - (c - a)
    return high, a - high


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add(xh: np.ndarray, xl: np.ndarray, yh: np.ndarray, yl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sh, sl = two_sum(xh, yh)
    th, tl = two_sum(xl, yl)
    vh, vl = fast_two_sum(sh, sl + th)
    return fast_two_sum(vh, tl + vl)


def mul(xh: np.ndarray, xl: np.ndarray, yh: np.ndarray, yl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph, pl = two_prod(xh, yh)
    return fast_two_sum(ph, pl + (xh * yl + xl * yh))


def tree_sum(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise double-word sums along the last axis (module docstring for the bound). Each level
    adds entry i to entry i + ceil(w / 2); an odd width's middle entry goes up unchanged, as if
    added to a zero: ceil(log2 n) levels."""
    while high.shape[-1] > 1:
        width = high.shape[-1]
        half = (width + 1) // 2
        pairs = width - half
        summed = add(high[..., :pairs], low[..., :pairs], high[..., half:], low[..., half:])
        if pairs < half:
            summed = tuple(np.concatenate([part, word[..., pairs:half]], axis=-1)
                           for part, word in zip(summed, (high, low), strict=True))
        high, low = summed
    return high[..., 0], low[..., 0]


def float_tree_sum(values: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Pairwise float64 sums along the last axis: error at most depth * u * sum |values|
    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2), depth =
    ceil(log2 n). Levels as tree_sum's, in place: in values where overwrite (the caller's
    scratch), else in one buffer of half the width."""
    width = values.shape[-1]
    half = (width + 1) // 2
    if overwrite:
        work = values
        work[..., :width - half] += values[..., half:width]
    else:
        work = values[..., :half].copy()
        work[..., :width - half] += values[..., half:]
    while half > 1:
        width, half = half, (half + 1) // 2
        work[..., :width - half] += work[..., half:width]
    return work[..., 0].copy()
