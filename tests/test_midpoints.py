"""Exact values that are a midpoint of the format plus a term no precision can resolve.

Where one entry (or a group of 2^k tied entries) leads a row by thousands of nats, the exact
value of some elements is a rational R (a midpoint of the format, here) plus a term of order
e^-B, B the gap: 2^-47274 for B = 32768, far below the oracle's last precision. The correctly
rounded value is R's neighbour on the side of that term, never R's even neighbour by default.
Each expected value below is derived by hand from the closed form of the op on rows
[0, -B, ...] or [0, 0, -B] (series in e = e^-B), independently of the oracle's formulas, and
the cases are chosen so that ties-to-even gives the wrong neighbour in half of them.

The class, op by op (every dtype; oracle.exact and oracle.gradients explain the split):
- log_softmax_j = (x_j - max) - log1p(t): x_j - max may be a midpoint; the term is -L < 0.
- log_softmax_vjp at a lone argmax k: (g_k - G) + G q, q = t/(1+t): g_k - G may be a midpoint.
- with m = 2^k tied maxima and a far tail t' (y0 = 1/(m + t'), deficit = 1/m - y0 > 0):
  log_softmax_vjp_j = (g_j - G/m) + G deficit, logsumexp_vjp_j = g/m - g deficit (a midpoint
  only among subnormals), softmax_vjp_j = (g_j - w0)/m + O(e), softmax_j = 1/m - deficit (a
  midpoint only for m = 2^25 in float16, checked on the rounding alone).
- logsumexp = max + log1p(t) is never one: max is a number of the format.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from mpmath.libmp import from_man_exp, fzero, mpf_neg

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # float8: tests/test_float8.py
from softmax_suite.oracle.exact import forward_references, initial_precision, near
from softmax_suite.oracle.gradients import vjp_references
from softmax_suite.oracle.rounding import round_interval
from tests.test_oracle import assert_same_bits, row_of

GAP = 32768.0  # a power of two: exact in every format; e^-GAP ~ 2^-47274


def neighbours(midpoint: Fraction, name: str) -> tuple[float, float]:
    """(smaller, larger magnitude) format values around midpoint, checked to be equally far."""
    dtype = FORMATS[name].np_dtype
    sign = -1 if midpoint < 0 else 1
    inner = np.array(float(abs(midpoint)), np.float64).astype(dtype)  # may round either way
    if Fraction(float(inner)) > abs(midpoint):
        inner = np.nextafter(inner, np.array(0, dtype))
    outer = np.nextafter(inner, np.array(np.inf, dtype))
    low, high = Fraction(float(inner)), Fraction(float(outer))
    assert abs(midpoint) - low == high - abs(midpoint) > 0, "not a midpoint of the format"
    return sign * float(inner), sign * float(outer)


def even(values: tuple[float, float], name: str) -> float:
    """The neighbour ties-to-even picks: the one whose encoding ends in a 0 bit."""
    dtype = FORMATS[name].np_dtype
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize]
    return next(v for v in values if int(np.array(abs(v), dtype).view(unsigned)) % 2 == 0)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("k", [1, 3])
def test_log_softmax_of_a_lone_far_maximum(name, k):
    # x = [2^s, -2^(p+s) - (k - 1) 2^s]: d_1 = x_1 - x_0 = -(2^p + k) 2^s, a midpoint (p + 1 bits,
    # the last one set), and log_softmax_1 = d_1 - log1p(e^d_1) lies a hair below it: the
    # neighbour of larger magnitude. For k = 1 that neighbour is odd (ties-to-even is wrong), for
    # k = 3 even. float32, s = 5, k = 1 is [32, -536870944]: -536870976, not -536870912.
    fmt = FORMATS[name]
    s = 4 if name == "float16" else 5
    d = -(2**fmt.p + k) * Fraction(2) ** s
    x = row_of([2.0**s, float(d + 2**s)], name)
    assert Fraction(float(x[1])) - Fraction(float(x[0])) == d  # both entries exact
    smaller, larger = neighbours(d, name)
    assert (even((smaller, larger), name) == larger) == (k == 3)
    refs = forward_references(x, -1)
    assert_same_bits(refs["log_softmax"].rounded, np.array([-0.0, larger]))
    # logsumexp = x_0 + log1p(e^d_1): x_0 is in the format, so it rounds to x_0.
    assert_same_bits(refs["logsumexp"].rounded, np.array(2.0**s))
    assert refs["log_softmax"].max_precision == initial_precision(fmt)  # no escalation needed


def _tied_midpoint(name: str, k: int, towards_larger: bool) -> tuple[Fraction, float]:
    """(M, expected): M = 1 + k 2^-p, a midpoint, and its neighbour on the side of the term."""
    fmt = FORMATS[name]
    midpoint = 1 + k * Fraction(2) ** -fmt.p
    smaller, larger = neighbours(midpoint, name)
    return midpoint, larger if towards_larger else smaller


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("k", "g0", "expected_larger"), [(1, 0.0, False), (1, -4.0, True),
                                                          (3, 0.0, False), (3, -4.0, True)])
def test_log_softmax_vjp_at_a_lone_far_maximum(name, k, g0, expected_larger):
    # x = [0, -B, -B], g = [g0, 1, k 2^-p]: log_softmax_vjp_0 = g0 - y_0 G = -(g1 + g2) + G q,
    # q = 2e/(1 + 2e): -M plus a term of G's sign. G = g0 + M > 0 (g0 = 0) shrinks the magnitude,
    # G < 0 (g0 = -4) grows it. Ties-to-even is wrong for (k=1, G<0) and (k=3, G>0).
    fmt = FORMATS[name]
    midpoint, want = _tied_midpoint(name, k, expected_larger)
    x = row_of([0.0, -GAP, -GAP], name)
    g = row_of([g0, 1.0, k * 2.0**-fmt.p], name)
    assert Fraction(float(g[1])) + Fraction(float(g[2])) == midpoint
    refs = vjp_references(x, g, row_of([1.0], name)[0], -1)
    got = refs["log_softmax_vjp"].rounded
    assert_same_bits(got[:1], np.array([-want]))
    # The far entries: g_j - y_j G with y_j ~ e: g_j itself.
    assert_same_bits(got[1:], g[1:])
    assert refs["log_softmax_vjp"].max_precision == initial_precision(fmt)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("k", "i"), [(1, 0), (1, 1), (3, 1), (3, 2)])
def test_log_softmax_vjp_of_two_tied_far_maxima(name, k, i):
    # x = [0, 0, -B]: y_0 = y_1 = y0 = 1/(2 + e), and log_softmax_vjp_0 = g0 - y0 G
    # = (g0 - G/2) + G e / (2 (2 + e)). With g = [1 + 2i 2^-p, g1, 0] and G = 2 (2i - k) 2^-p,
    # g0 - G/2 = M = 1 + k 2^-p; the term has G's sign: larger for 2i > k.
    fmt = FORMATS[name]
    u = Fraction(2) ** -fmt.p
    g0 = 1 + 2 * i * u
    total = 2 * (2 * i - k) * u
    midpoint, want = _tied_midpoint(name, k, total > 0)
    assert g0 - total / 2 == midpoint
    g = row_of([float(g0), float(total - g0), 0.0], name)
    assert sum(Fraction(float(v)) for v in g) == total  # every cotangent exact
    x = row_of([0.0, 0.0, -GAP], name)
    refs = vjp_references(x, g, row_of([1.0], name)[0], -1)
    assert_same_bits(refs["log_softmax_vjp"].rounded[:1], np.array([want]))
    assert refs["log_softmax_vjp"].max_precision == initial_precision(fmt)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("multiple", "expected"), [(3, 1), (-3, -1), (5, 2)])
def test_logsumexp_vjp_of_two_tied_far_maxima(name, multiple, expected):
    # x = [0, 0, -B], g = c 2^(emin - p + 1) (subnormal): logsumexp_vjp_j = g / (2 + e) for the
    # tied entries, g/2 less a hair in magnitude: c/2 units of the smallest subnormal. For c = 3
    # the midpoint 1.5 goes to 1 (odd; ties-to-even says 2), for c = 5 to 2 (even).
    fmt = FORMATS[name]
    x = row_of([0.0, 0.0, -GAP], name)
    g_row = row_of([multiple * fmt.min_subnormal], name)[0]
    refs = vjp_references(x, row_of([1.0, 1.0, 1.0], name), g_row, -1)
    want = expected * fmt.min_subnormal
    assert_same_bits(refs["logsumexp_vjp"].rounded, np.array([want, want, 0.0 if multiple > 0 else -0.0]))


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("g2", "expected_larger"), [(1.0, False), (-1.0, True)])
def test_softmax_vjp_of_two_tied_far_maxima(name, g2, expected_larger):
    # x = [0, 0, -B], g = [1, -2^-p, g2]: softmax_vjp_0 = y0 (g0 - <g, y>)
    # = [(g0 - g1) + e (g0 - g2)] / (2 + e)^2 = (g0 - g1)/4 + e (g1 - g2)/4 + O(e^2).
    # (g0 - g1)/4 = (1 + 2^-p)/4 is a midpoint; the term e (g1 - g2)/4 has the sign of -g2 - 2^-p.
    # g2 = -1 pushes it up to the odd neighbour, where ties-to-even would go down.
    fmt = FORMATS[name]
    x = row_of([0.0, 0.0, -GAP], name)
    g = row_of([1.0, -(2.0**-fmt.p), g2], name)
    midpoint = (1 + Fraction(2) ** -fmt.p) / 4
    smaller, larger = neighbours(midpoint, name)
    assert even((smaller, larger), name) == smaller  # 1/4: ties-to-even is wrong for g2 = -1
    refs = vjp_references(x, g, row_of([1.0], name)[0], -1)
    got = refs["softmax_vjp"].rounded
    assert_same_bits(got[:1], np.array([larger if expected_larger else smaller]))
    # softmax_vjp_1 = (g1 - g0)/4 + e (g0 - g2)/4: -(1 + 2^-p)/4 plus a term of g0 - g2's sign.
    smaller_1, larger_1 = neighbours(-midpoint, name)
    assert_same_bits(got[1:2], np.array([larger_1 if 1.0 - g2 < 0 else smaller_1]))
    assert refs["softmax_vjp"].max_precision == initial_precision(fmt)


@pytest.mark.parametrize("name", DTYPES)
def test_long_rows_take_the_fast_path_or_the_split_alike(name):
    # Rows of 16 (the fast path's minimum) with the far entries at 1000 nats, inside the fast
    # path's range: the fast path decides or hands the row on, and the answer is the same.
    fmt = FORMATS[name]
    s = 4 if name == "float16" else 5
    d = -(2**fmt.p + 1) * Fraction(2) ** s
    row = [2.0**s, float(d + 2**s)] + [2.0**s - 1000.0] * 14
    refs = forward_references(row_of(row, name), -1)
    assert_same_bits(refs["log_softmax"].rounded[1:2], np.array([neighbours(d, name)[1]]))


@pytest.mark.parametrize(("name", "beyond", "expected"), [
    # softmax of 2^25 tied maxima in float16 is 2^-25 - deficit: half the smallest subnormal less
    # a hair, which rounds to +0; a hair above it would round to 2^-24.
    ("float16", -1, 0.0), ("float16", 1, 2.0**-24),
    # the overflow threshold max + ulp/2 less a hair is max, not infinity
    ("float16", -1, 65504.0), ("bfloat16", -1, float(FORMATS["bfloat16"].max)),
])
def test_a_hair_beyond_a_boundary(name, beyond, expected):
    fmt = FORMATS[name]
    boundary = from_man_exp(1, -25) if expected in (0.0, 2.0**-24) else \
        from_man_exp(2 ** (fmt.p + 1) - 1, fmt.emax - fmt.p)  # max + ulp(max)/2
    tiny = from_man_exp(1, -100000)
    bound = near(boundary, tiny if beyond > 0 else mpf_neg(tiny), fzero, 64)
    assert bound.beyond == beyond and bound.value == boundary
    assert round_interval(bound.value, bound.err, fmt, 64, bound.beyond) == expected
