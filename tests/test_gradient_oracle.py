"""softmax_suite.oracle.gradients.vjp_references: correct rounding checked bit for bit against the plain VJP
formulas in mpmath and an independent rounding (tests/reference_rounding.py), the exact zeros of
the Lindemann-Weierstrass grouping, exact rational rows (ties on a midpoint), the special-value
policy, Ziv's loop, axes, shape errors, and the error budgets and a-priori bounds of the VJPs.

With y = softmax(x) along the axis, cotangent g (x's shape) and g_row (one per row):

    softmax_vjp_j     = y_j (g_j - <g, y>)
    log_softmax_vjp_j = g_j - y_j sum_i g_i
    logsumexp_vjp_j   = g_row y_j
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # float8: tests/test_float8.py
from softmax_suite.ops import SOFTMAX_VJP_OPS as VJP_OPS
from softmax_suite.oracle import exact, fastpath, gradients, theory
from softmax_suite.oracle.budget import BudgetConstants, budget, natural_scale, summation_depth
from softmax_suite.oracle.exact import initial_precision
from softmax_suite.oracle.gradients import vjp_references
from softmax_suite.oracle.metrics import compare
from softmax_suite.oracle.rounding import round_interval
from tests.reference_rounding import UNSIGNED, reference_round

NAN, INF = math.nan, math.inf

@pytest.fixture
def mpmath_only():
    """The mpmath row evaluation alone (no fast path): the tests of Ziv's loop itself."""
    with fastpath.disabled():
        yield



def row_of(values, name: str) -> np.ndarray:
    """values rounded into the dtype: the oracle and the references see these exact bits."""
    return np.array(values, dtype=np.float64).astype(FORMATS[name].np_dtype)


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(UNSIGNED[a.dtype.itemsize])


def assert_same_bits(got: np.ndarray, want: np.ndarray, context=None) -> None:
    """Bitwise equality for finite values, infinities and zeros (signs count); NaN matches NaN."""
    got, want = np.asarray(got), np.asarray(want).astype(got.dtype)
    assert got.shape == want.shape, (got.shape, want.shape, context)
    nan = np.isnan(got.astype(np.float64))
    assert np.array_equal(nan, np.isnan(want.astype(np.float64))), (got, want, context)
    assert np.array_equal(bits(got)[~nan], bits(want)[~nan]), (got, want, context)


def vjps(x, g, g_row, name: str, axis: int = -1) -> dict:
    """The oracle's references for rows given as lists (or arrays) of values, rounded into name."""
    return vjp_references(row_of(x, name), row_of(g, name), row_of(g_row, name), axis)


def rtol(name: str) -> float:
    """A correct rounding is within u relative; float64 expectations written as float64 formulas
    carry a few ulps of their own."""
    return max(FORMATS[name].u, 1e-14)


def carried(ref, index) -> Fraction:
    """The oracle's unrounded value (mant + mant_lo) * 2^scale, exactly."""
    mant, lo, scale = float(ref.mant[index]), float(ref.mant_lo[index]), int(ref.scale[index])
    return (Fraction(mant) + Fraction(lo)) * Fraction(2) ** scale


# -- an independent evaluation: the plain formulas in mpmath -----------------------------------

def policy_nan(xs: list[float], gs: list[float], g_scalar: float) -> bool:
    """The documented policy: a NaN or +inf entry, only -inf entries (or none), or a non-finite
    cotangent make the whole row NaN in all three VJPs."""
    return (any(math.isnan(v) or v == INF for v in xs) or all(v == -INF for v in xs)
            or not all(math.isfinite(v) for v in gs) or not math.isfinite(g_scalar))


def working_precision(finite: list[float], gs: list[float]) -> int:
    """600 bits plus what the plain formulas cancel: g_j - <g, y> (and g_j - y_j sum g) can be
    as small as e^-(x_max - x_min) times the smallest difference of two cotangents (2^-53 of the
    largest, times the spread of their binades), next to terms of size max |g|."""
    spread = max(finite) - min(finite)
    binades = [math.frexp(v)[1] for v in gs if v != 0]
    g_span = max(binades) - min(binades) if binades else 0
    return 600 + math.ceil(spread / math.log(2)) + g_span + 64


def plain_vjps(x, g, g_scalar) -> tuple[dict[str, list], dict[str, list[float]]]:
    """(values, natural scales) of the three VJPs of one row. Values are exact Fractions where
    the exact value is rational (rows whose finite entries are all equal, masked entries, exact
    zeros), mpmath numbers at working_precision otherwise, NaN by the policy.

    Exact zeros of softmax_vjp in rows of two or more distinct values (Lindemann-Weierstrass,
    derived here on its own): sum_i (g_j - g_i) e^(x_i - a) = sum_D e^(d_D) (n_D g_j - s_D) over
    the groups D of equal finite entries (n_D entries, cotangent sum s_D); the e^(d_D) of distinct
    rationals d_D are linearly independent over the rationals, so the sum vanishes exactly when
    g_j = s_D / n_D for every group."""
    xs = [float(v) for v in np.asarray(x, np.float64)]
    gs = [float(v) for v in np.asarray(g, np.float64)]
    g_scalar = float(g_scalar)
    n = len(xs)
    if policy_nan(xs, gs, g_scalar):
        return {op: [NAN] * n for op in VJP_OPS}, {op: [NAN] * n for op in VJP_OPS}
    finite = [v for v in xs if math.isfinite(v)]
    total = sum(map(Fraction, gs), Fraction(0))
    if len(set(finite)) == 1:  # y_j = 1/m on the m finite entries: everything is rational
        m = len(finite)
        ys = [Fraction(1, m) if math.isfinite(v) else Fraction(0) for v in xs]
        inner = sum((Fraction(gi) * yi for gi, yi in zip(gs, ys, strict=True)), Fraction(0))
        values = {
            "softmax_vjp": [yj * (Fraction(gj) - inner) for gj, yj in zip(gs, ys, strict=True)],
            "log_softmax_vjp": [Fraction(gj) - yj * total for gj, yj in zip(gs, ys, strict=True)],
            "logsumexp_vjp": [Fraction(g_scalar) * yj for yj in ys],
        }
        ys_float = [float(yj) for yj in ys]
    else:
        groups: dict[float, list[Fraction]] = {}
        for v, gi in zip(xs, gs, strict=True):
            if math.isfinite(v):
                groups.setdefault(v, []).append(Fraction(gi))
        means = {sum(members, Fraction(0)) / len(members) for members in groups.values()}
        with mpmath.workprec(working_precision(finite, gs)):
            a = mpmath.mpf(max(finite))
            es = [mpmath.exp(mpmath.mpf(v) - a) if math.isfinite(v) else mpmath.mpf(0) for v in xs]
            s = mpmath.fsum(es)
            ys = [e / s for e in es]
            inner = mpmath.fsum(mpmath.mpf(gi) * yi for gi, yi in zip(gs, ys, strict=True))
            g_total = mpmath.mpf(total.numerator) / total.denominator  # a power of two: exact
            softmax_vjp, log_softmax_vjp, logsumexp_vjp = [], [], []
            for v, gj, yj in zip(xs, gs, ys, strict=True):
                masked = not math.isfinite(v)
                zero = masked or (len(means) == 1 and Fraction(gj) in means)
                softmax_vjp.append(Fraction(0) if zero else yj * (gj - inner))
                log_softmax_vjp.append(Fraction(gj) if masked or total == 0 else gj - yj * g_total)
                logsumexp_vjp.append(Fraction(0) if masked or g_scalar == 0 else g_scalar * yj)
        values = {"softmax_vjp": softmax_vjp, "log_softmax_vjp": log_softmax_vjp,
                  "logsumexp_vjp": logsumexp_vjp}
        ys_float = [float(yj) for yj in ys]
    weight = math.fsum(abs(gi) * yi for gi, yi in zip(gs, ys_float, strict=True))
    abs_total = math.fsum(abs(gi) for gi in gs)
    natural = {"softmax_vjp": [yj * (abs(gj) + weight) for gj, yj in zip(gs, ys_float, strict=True)],
               "log_softmax_vjp": [abs(gj) + yj * abs_total for gj, yj in zip(gs, ys_float, strict=True)],
               "logsumexp_vjp": [abs(g_scalar) * yj for yj in ys_float]}
    return values, natural


def as_fraction(value) -> Fraction:
    if isinstance(value, Fraction):
        return value
    sign, man, exp, _ = value._mpf_
    return (-1) ** sign * Fraction(man) * Fraction(2) ** exp


def correctly_rounded(value, dtype) -> float:
    if isinstance(value, float):  # NaN by the policy
        return NAN
    return 0.0 if isinstance(value, Fraction) and value == 0 else reference_round(value, dtype)


def check_against_plain_formulas(x: np.ndarray, g: np.ndarray, g_row: np.ndarray, name: str) -> dict:
    """The oracle's references of a batch (rows along the last axis) against plain_vjps, row by
    row: rounded bit for bit; the unrounded value within the oracle's proven error bound."""
    dtype = FORMATS[name].np_dtype
    refs = vjp_references(x, g, g_row, -1)
    # The oracle's error bound (oracle/gradients.py) is at most 48 eps natural_j at the row's
    # working precision P >= 2p + 64 (2^-86 for float16, 2^-80 for bfloat16, 2^-112 for float32,
    # 2^-170 for float64), with natural_j = y_j (|g_j| + A), |g_j| + y_j sum |g_i| and |g| y_j;
    # the float pair mant + mant_lo adds 2^-106 relative. For an element without cancellation
    # (|v| ~ natural) that is a relative 1e-24 (float16) to 1e-50 (float64).
    eps = Fraction(1, 2 ** initial_precision(FORMATS[name]))
    counts = {"elements": 0, "zeros": 0, "nan": 0}
    for index in np.ndindex(x.shape[:-1]):
        values, natural = plain_vjps(x[index], g[index], g_row[index])
        for op in VJP_OPS:
            ref = refs[op]
            want = np.array([correctly_rounded(v, dtype) for v in values[op]]).astype(dtype)
            assert_same_bits(ref.rounded[index], want, (op, name, x[index], g[index], g_row[index]))
            for j, (value, scale) in enumerate(zip(values[op], natural[op], strict=True)):
                at = (*index, j)
                if isinstance(value, float):  # NaN by the policy
                    assert math.isnan(ref.mant[at])
                    counts["nan"] += 1
                    continue
                exact_value = as_fraction(value)
                if exact_value == 0 and isinstance(value, Fraction):
                    assert ref.mant[at] == 0 and ref.mant_lo[at] == 0, (op, at)  # an exact zero
                    counts["zeros"] += 1
                # Rows the fast path decides carry its bounds (softmax_suite.oracle.fastpath): below 2^-95 of
                # the same scale on the double-word tier; on the float64 tier (24-bit outputs)
                # eps_y + 2u + depth u of it, about 20u = 2^-48.7 for these short rows.
                bound = 64 * eps
                if ref.certificate.get("double_double"):
                    bound = max(bound, Fraction(1, 2**95))
                if ref.certificate.get("float64"):
                    bound = max(bound, Fraction(1, 2**44))
                tolerance = bound * Fraction(scale) * (1 + Fraction(1, 10**9)) + abs(exact_value) / 2**100
                assert abs(carried(ref, at) - exact_value) <= tolerance, (op, name, at, float(value))
                # the natural scale is what the budgets and reports normalise by
                at_element = {term: array[at] for term, array in ref.terms.items()}
                assert natural_scale(op, at_element) == pytest.approx(scale, rel=1e-12, abs=1e-300)
            counts["elements"] += len(values[op])
    return counts


def mixed(rng: np.random.Generator, name: str, shape) -> np.ndarray:
    """Random signs and magnitudes over 2^-k .. 2^k, k = min(24, (emax - 2) // 2) (as
    suites/cotangents.py): 2^+-6 in float16, 2^+-24 elsewhere."""
    k = min(24, (FORMATS[name].emax - 2) // 2)
    return rng.choice([-1.0, 1.0], size=shape) * np.exp2(rng.uniform(-k, k, size=shape))


def batches(name: str, lengths=(1, 2, 7, 300), scales=(1.0, 10.0)):
    """(x, g, g_row, label) batches of 3 rows: logits N(0, scale^2), with and without -inf masks
    over about 30% of the entries (every row keeps a finite entry), and cotangents N(0, 1),
    mixed magnitudes and the constant 0.75."""
    rng = np.random.default_rng([sum(map(ord, name)), 7])
    for n in lengths:
        for scale in scales:
            for masks in (False, True):
                x = scale * rng.standard_normal((3, n))
                if masks and n > 1:
                    mask = rng.random((3, n)) < 0.3
                    mask[:, 0] = False
                    x[mask] = -INF
                for kind in ("normal", "mixed", "constant"):
                    if kind == "normal":
                        g, g_row = rng.standard_normal((3, n)), rng.standard_normal(3)
                    elif kind == "mixed":
                        g, g_row = mixed(rng, name, (3, n)), mixed(rng, name, 3)
                    else:
                        g, g_row = np.full((3, n), 0.75), np.full(3, 0.75)
                    yield row_of(x, name), row_of(g, name), row_of(g_row, name), (n, scale, masks, kind)


@pytest.mark.parametrize("name", DTYPES)
def test_correctly_rounded_against_plain_formulas(name):
    totals = {"elements": 0, "zeros": 0, "nan": 0}
    for x, g, g_row, _ in batches(name):
        for key, count in check_against_plain_formulas(x, g, g_row, name).items():
            totals[key] += count
    # 3 rows x (1 + 2 + 7 + 300) entries x 2 scales x 2 mask settings x 3 cotangents, per op
    assert totals["elements"] == 3 * 3 * 310 * 12 == 33480
    # The constant cotangent makes every softmax_vjp element an exact zero (plus the masked
    # entries and single entries of the other cotangents): at least 3 * 310 * 4 of them.
    assert totals["zeros"] >= 3720
    assert totals["nan"] == 0


@pytest.mark.usefixtures("mpmath_only")
@pytest.mark.parametrize("name", DTYPES)
def test_ordinary_rows_are_decided_at_the_first_precision(name):
    # The loop is the exception: 2p + 64 bits decide every element of N(0, 1) rows.
    for x, g, g_row, (n, *_) in batches(name, lengths=(7, 300), scales=(1.0,)):
        refs = vjp_references(x, g, g_row, -1)
        assert {r.max_precision for r in refs.values()} == {2 * FORMATS[name].p + 64}, n


# -- exact zeros (Lindemann-Weierstrass grouping) ----------------------------------------------

E = math.e
# x = [0, 0, -1, -1]: y = [y0, y0, y2, y2] with y0 = 1 / (2 (1 + e^-1)), y2 = 1 / (2 (1 + e)).
Y0, Y2 = 1 / (2 * (1 + 1 / E)), 1 / (2 * (1 + E))
# (g, softmax_vjp): with group means m_0 (of g_0, g_1) and m_1 (of g_2, g_3), <g, y> =
# 2 y0 m_0 + 2 y2 m_1, and softmax_vjp_j = y_j (g_j - <g, y>) is exactly 0 where g_j equals both.
TIED = [
    # means 2 and 2, <g, y> = 2: [y0 (1 - 2), y0 (3 - 2), y2 (2 - 2), y2 (2 - 2)]
    ([1.0, 3.0, 2.0, 2.0], [-Y0, Y0, 0.0, 0.0]),
    # means 2 and 2, but no g_j is 2: [-y0, y0, 3 y2, -3 y2], no zero
    ([1.0, 3.0, 5.0, -1.0], [-Y0, Y0, 3 * Y2, -3 * Y2]),
    # means 2 and 2, zeros at the first group: [0, 0, -y2, y2]
    ([2.0, 2.0, 1.0, 3.0], [0.0, 0.0, -Y2, Y2]),
    # means 2 and 2.5: <g, y> = 4 y0 + 5 y2 = 2 + y2 (2 y0 + 2 y2 = 1), so no zero:
    # [-y0 y2, -y0 y2, y2 (1 - 2 - y2), y2 (4 - 2 - y2)]
    ([2.0, 2.0, 1.0, 4.0], [-Y0 * Y2, -Y0 * Y2, -Y2 * (1 + Y2), Y2 * (2 - Y2)]),
]


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("g", "expected"), TIED)
def test_tied_groups_zero_exactly_where_g_equals_every_group_mean(name, g, expected):
    ref = vjps([0.0, 0.0, -1.0, -1.0], g, 1.0, name)["softmax_vjp"]
    zero = np.array(expected) == 0
    assert_same_bits(ref.rounded[zero], np.zeros(int(zero.sum())))  # +0.0
    assert np.all(ref.mant[zero] == 0)  # exact zeros, not tiny values
    assert np.all(ref.rounded[~zero] != 0) and np.all(ref.mant[~zero] != 0)
    np.testing.assert_allclose(ref.rounded.astype(np.float64), expected, rtol=rtol(name), atol=0)
    # and bit for bit against the plain formulas
    x, gg = row_of([[0.0, 0.0, -1.0, -1.0]], name), row_of([g], name)
    check_against_plain_formulas(x, gg, row_of([1.0], name), name)


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("x", [[0.5, -1.0, 2.0, 0.25, -3.0], [0.0, 0.0, -1.0, -INF, 7.0], [1.0, -INF]])
@pytest.mark.parametrize("c", [0.75, -3.0, 0.0])
def test_constant_cotangent_gives_exact_positive_zeros(name, x, c):
    # g = c: softmax_vjp = y (c - c sum y) = 0 (shift invariance); log_softmax_vjp = c - y n c.
    refs = vjps(x, [c] * len(x), c, name)
    ref = refs["softmax_vjp"]
    assert_same_bits(ref.rounded, np.zeros(len(x)))
    assert np.all(ref.mant == 0) and np.all(ref.mant_lo == 0)
    for other in refs.values():
        assert not np.isnan(other.rounded.astype(np.float64)).any()


@pytest.mark.parametrize("name", DTYPES)
def test_singleton_groups_need_one_common_cotangent(name):
    # Distinct entries: softmax_vjp_j = 0 only if every g_i (i finite) equals g_j. Here g_2 = 5
    # differs, so nothing is zero: softmax_vjp = y (g - <g, y>) with y = softmax([0, -1, -2]).
    ref = vjps([0.0, -1.0, -2.0], [1.0, 1.0, 5.0], 1.0, name)["softmax_vjp"]
    assert np.all(ref.mant != 0) and np.all(ref.rounded != 0)
    e = np.exp([0.0, -1.0, -2.0])
    y = e / e.sum()  # [0.665, 0.245, 0.090]
    expected = y * (np.array([1.0, 1.0, 5.0]) - (y[0] + y[1] + 5 * y[2]))  # [-0.240, -0.088, 0.328]
    np.testing.assert_allclose(ref.rounded.astype(np.float64), expected, rtol=rtol(name))


@pytest.mark.parametrize("name", DTYPES)
def test_masked_entries(name):
    # x = [0, -1, -inf, -inf], g = [5, 5, 7, -2], g_row = 3: the masked entries have y = 0, so
    # softmax_vjp and logsumexp_vjp are exact zeros there and log_softmax_vjp = g_j exactly;
    # the finite entries share g = 5 = every group's mean (masked cotangents do not count), so
    # softmax_vjp is 0 on them too, and log_softmax_vjp_j = 5 - y_j * 15, logsumexp_vjp = 3 y_j.
    refs = vjps([0.0, -1.0, -INF, -INF], [5.0, 5.0, 7.0, -2.0], 3.0, name)
    assert_same_bits(refs["softmax_vjp"].rounded, np.zeros(4))
    assert np.all(refs["softmax_vjp"].mant == 0)
    log_softmax = refs["log_softmax_vjp"]
    assert_same_bits(log_softmax.rounded[2:], np.array([7.0, -2.0]))
    assert [carried(log_softmax, j) for j in (2, 3)] == [7, -2]  # exact, not within a bound
    assert_same_bits(refs["logsumexp_vjp"].rounded[2:], np.zeros(2))
    assert np.all(refs["logsumexp_vjp"].mant[2:] == 0)
    y = 1 / (1 + np.exp(-1.0))  # 0.7311
    u = rtol(name)
    np.testing.assert_allclose(log_softmax.rounded[:2].astype(np.float64),
                               [5 - 15 * y, 5 - 15 * (1 - y)], rtol=u)  # [-5.966, 1.034]
    np.testing.assert_allclose(refs["logsumexp_vjp"].rounded[:2].astype(np.float64),
                               [3 * y, 3 * (1 - y)], rtol=u)  # [2.193, 0.807]
    for ref in refs.values():
        assert not np.isnan(ref.rounded.astype(np.float64)).any()
    check_against_plain_formulas(row_of([[0.0, -1.0, -INF, -INF]], name),
                                 row_of([[5.0, 5.0, 7.0, -2.0]], name), row_of([3.0], name), name)


@pytest.mark.parametrize("name", DTYPES)
def test_zero_cotangent_sum_and_zero_row_cotangent(name):
    # sum g = 0: log_softmax_vjp = g exactly (y_j sum g = 0); g_row = 0: logsumexp_vjp = +0.
    refs = vjps([0.3, -1.2, 2.0], [1.5, -2.5, 1.0], 0.0, name)
    assert_same_bits(refs["log_softmax_vjp"].rounded, row_of([1.5, -2.5, 1.0], name))
    assert np.all(refs["log_softmax_vjp"].mant_lo == 0)
    assert_same_bits(refs["logsumexp_vjp"].rounded, np.zeros(3))
    assert np.all(refs["logsumexp_vjp"].mant == 0)


# -- rational rows: all finite entries equal ---------------------------------------------------

RATIONAL = [
    # x, g, g_row, (softmax_vjp, log_softmax_vjp, logsumexp_vjp) as exact rationals
    # m = 3, y = 1/3, <g, y> = 3, sum g = 9: y (g - 3), g - 3, g_row / 3
    ([5.0, 5.0, 5.0], [1.0, 3.0, 5.0], 2.0,
     ([Fraction(-2, 3), 0, Fraction(2, 3)], [-2, 0, 2], [Fraction(2, 3)] * 3)),
    # m = 3 of 4 (one masked), y = [1/3, 1/3, 0, 1/3], <g, y> = 8/3, sum g = 11:
    # softmax_vjp = [-5/9, -2/9, 0, 7/9], log_softmax_vjp = g - y 11 = [-8/3, -5/3, 3, 4/3]
    ([2.0, 2.0, -INF, 2.0], [1.0, 2.0, 3.0, 5.0], 1.5,
     ([Fraction(-5, 9), Fraction(-2, 9), 0, Fraction(7, 9)],
      [Fraction(-8, 3), Fraction(-5, 3), 3, Fraction(4, 3)],
      [Fraction(1, 2), Fraction(1, 2), 0, Fraction(1, 2)])),
    # one element: y = 1, softmax_vjp = g - g = 0, log_softmax_vjp = g - g = 0, logsumexp_vjp = g_row
    ([3.0], [7.0], -2.0, ([0], [0], [-2])),
    # one finite entry among masks: y = [0, 1, 0], sum g = 3
    ([-INF, 1.5, -INF], [4.0, -3.0, 2.0], 0.5, ([0, 0, 0], [4, -6, 2], [0, Fraction(1, 2), 0])),
    # m = 7: y = 1/7, <g, y> = 1/7 (one-hot), softmax_vjp = [6/49, -1/49, ...]
    ([-1.0] * 7, [1.0] + [0.0] * 6, 1.0,
     ([Fraction(6, 49)] + [Fraction(-1, 49)] * 6, [Fraction(6, 7)] + [Fraction(-1, 7)] * 6,
      [Fraction(1, 7)] * 7)),
]


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("x", "g", "g_row", "expected"), RATIONAL)
def test_rational_rows(name, x, g, g_row, expected):
    dtype = FORMATS[name].np_dtype
    refs = vjps(x, g, g_row, name)
    for op, values in zip(VJP_OPS, expected, strict=True):
        ref = refs[op]
        want = np.array([reference_round(Fraction(v), dtype) for v in values]).astype(dtype)
        assert_same_bits(ref.rounded, want, op)
        for j, v in enumerate(values):
            exact_value = Fraction(v)
            if exact_value.denominator & (exact_value.denominator - 1) == 0:
                assert carried(ref, j) == exact_value  # dyadic: carried exactly
            else:  # 1/3, 1/7, ...: within the oracle's 2 eps relative
                assert abs(carried(ref, j) - exact_value) <= abs(exact_value) / 2**80
            if exact_value == 0:
                assert ref.mant[j] == 0
    check_against_plain_formulas(row_of([x], name), row_of([g], name), row_of([g_row], name), name)


def midpoint_case(name: str, up: bool) -> tuple[list, list, float, dict]:
    """x = [c, c] (y = 1/2) with g = [2^(p-1) + up, -1/2] and g_row = 3 * min_subnormal:

        softmax_vjp_0 = (g_0 - g_1) / 4 = (2^(p-1) + up + 1/2) / 4
        log_softmax_vjp_0 = g_0 - (g_0 + g_1) / 2 = 2^(p-2) + up / 2 + 1/4
        logsumexp_vjp_j = g_row / 2 = 1.5 * min_subnormal

    and the negations (softmax_vjp_1 = -softmax_vjp_0, log_softmax_vjp_1 = -log_softmax_vjp_0).
    2^(p-1) + 1/2 needs p + 1 bits: each value lies halfway between two neighbours of the format.
    float16 (p = 11): 256.125 between 256 and 256.25 -> 256 (even); 512.25 between 512 and
    512.5 -> 512; with up = 1: 256.375 -> 256.5 and 512.75 -> 513. 1.5 * 2^-24 -> 2^-23.
    """
    fmt = FORMATS[name]
    g0 = 2.0 ** (fmt.p - 1) + up
    softmax = Fraction(int(g0 * 2) + 1, 8)
    log_softmax = Fraction(2 ** (fmt.p - 2)) + Fraction(up, 2) + Fraction(1, 4)
    lse = Fraction(3, 2) * Fraction(fmt.min_subnormal)
    return [1.0, 1.0], [g0, -0.5], 3 * fmt.min_subnormal, {
        "softmax_vjp": [softmax, -softmax], "log_softmax_vjp": [log_softmax, -log_softmax],
        "logsumexp_vjp": [lse, lse]}


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("up", [0, 1])
def test_exact_values_on_rounding_midpoints_round_to_even(name, up):
    fmt = FORMATS[name]
    dtype = fmt.np_dtype
    x, g, g_row, exact_values = midpoint_case(name, up)
    refs = vjps(x, g, g_row, name)
    # The even neighbour: significand ...0. Without up it is the one below, with up the one above.
    expected = {
        "softmax_vjp": 2.0 ** (fmt.p - 3) + (0.5 if up else 0.0),
        "log_softmax_vjp": 2.0 ** (fmt.p - 2) + (1.0 if up else 0.0),
        "logsumexp_vjp": 2 * fmt.min_subnormal,
    }
    if name == "float16":
        assert expected == {"softmax_vjp": 256.5 if up else 256.0, "log_softmax_vjp": 513.0 if up else 512.0,
                            "logsumexp_vjp": 2.0**-23}
    for op, values in exact_values.items():
        v = values[0]
        # a midpoint: the two neighbours in the format are equally far, and the chosen one is even
        below = np.array(float(v), np.float64).astype(dtype)
        if Fraction(float(below)) > v:
            below = np.nextafter(below, np.array(-INF, dtype))
        above = np.nextafter(below, np.array(INF, dtype))
        assert v - Fraction(float(below)) == Fraction(float(above)) - v, op
        even = below if int(bits(below)[0]) % 2 == 0 else above
        assert float(even) == expected[op], op
        assert reference_round(v, dtype) == expected[op]
        assert_same_bits(refs[op].rounded, np.array([expected[op], -expected[op]] if op != "logsumexp_vjp"
                                                    else [expected[op]] * 2), op)
        assert [carried(refs[op], j) for j in (0, 1)] == values  # the exact midpoint is carried


# -- the special-value policy ------------------------------------------------------------------

# A batch of rows of 3: (x, g, g_row, the policy makes the row NaN)
SPECIAL_BATCH = [
    ([1.0, NAN, 2.0], [1.0, 2.0, 3.0], 1.0, True),  # NaN entry
    ([1.0, INF, 2.0], [1.0, 2.0, 3.0], 1.0, True),  # +inf entry: inf / inf
    ([-INF, -INF, -INF], [1.0, 2.0, 3.0], 1.0, True),  # nothing left: 0 / 0
    ([0.5, -1.0, 2.0], [1.0, -2.0, 0.5], -1.5, False),  # an ordinary row
    ([0.5, -1.0, 2.0], [1.0, INF, 0.5], -1.5, True),  # a non-finite cotangent
    ([0.5, -1.0, 2.0], [NAN, 1.0, 0.5], -1.5, True),
    ([0.5, -1.0, 2.0], [1.0, -2.0, 0.5], NAN, True),  # a non-finite logsumexp cotangent
    ([0.5, -INF, -INF], [1.0, -2.0, 0.5], 2.0, False),  # masks alone are fine
    ([-INF, 3.0, 3.0], [-INF, -2.0, 0.5], 2.0, True),  # an infinite cotangent on a masked entry
]


@pytest.mark.parametrize("name", DTYPES)
def test_special_rows_are_nan_and_leave_other_rows_alone(name):
    x = row_of([row[0] for row in SPECIAL_BATCH], name)
    g = row_of([row[1] for row in SPECIAL_BATCH], name)
    g_row = row_of([row[2] for row in SPECIAL_BATCH], name)
    nan_rows = np.array([row[3] for row in SPECIAL_BATCH])
    refs = vjp_references(x, g, g_row, -1)
    for op in VJP_OPS:
        ref = refs[op]
        values = ref.rounded.astype(np.float64)
        assert ref.shape == x.shape and ref.rounded.dtype == x.dtype
        assert np.isnan(values[nan_rows]).all() and np.isnan(ref.mant[nan_rows]).all()
        assert not np.isnan(values[~nan_rows]).any()
        for i in np.flatnonzero(~nan_rows):  # each ordinary row as if alone
            alone = vjp_references(x[i:i + 1], g[i:i + 1], g_row[i:i + 1], -1)[op]
            assert_same_bits(ref.rounded[i], alone.rounded[0])
            assert np.array_equal(ref.mant[i], alone.mant[0])
    check_against_plain_formulas(x, g, g_row, name)


@pytest.mark.parametrize("name", DTYPES)
def test_empty_rows(name):
    dtype = FORMATS[name].np_dtype
    x, g = np.zeros((3, 0), dtype), np.zeros((3, 0), dtype)
    refs = vjp_references(x, g, np.zeros(3, dtype), axis=1)
    for op in VJP_OPS:
        assert refs[op].shape == (3, 0) and refs[op].rounded.dtype == dtype
        assert refs[op].mant.shape == refs[op].scale.shape == (3, 0)
        assert refs[op].row_length == 0
    refs = vjp_references(x.T, g.T, np.zeros(3, dtype), axis=0)  # shape (0, 3), rows of length 0
    assert all(refs[op].shape == (0, 3) for op in VJP_OPS)


# -- Ziv's loop --------------------------------------------------------------------------------

def ziv_batches(name: str) -> list[tuple]:
    """N(0, 1) rows (gaps below 16 ln 2 = 11.1, where 16 bits still see every y_i next to 1),
    a tied row, a masked row, a constant cotangent and a NaN row."""
    chosen = [b[:3] for b in batches(name, lengths=(2, 7, 300), scales=(1.0,))
              if b[3][2] is False or b[3][0] == 7]
    special = (row_of([[0.0, 0.0, -1.0, -1.0], [1.0, NAN, 0.0, 0.0], [2.0, 2.0, -INF, 2.0]], name),
               row_of([[1.0, 3.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 5.0]], name),
               row_of([1.0, 1.0, 1.5], name))
    return [*chosen, special]


@pytest.mark.usefixtures("mpmath_only")
@pytest.mark.parametrize("name", DTYPES)
def test_forced_ziv_loop_gives_identical_results(name, monkeypatch):
    default = [vjp_references(x, g, g_row, -1) for x, g, g_row in ziv_batches(name)]
    precisions: list[int] = []
    evaluate = gradients._evaluate_vjp_row

    def recording(rows, precision):
        precisions.append(precision)
        return evaluate(rows, precision)

    # _decided_row looks initial_precision up in softmax_suite.oracle.exact's globals at each call, and
    # vjp_references looks _evaluate_vjp_row up in softmax_suite.oracle.gradients' globals.
    monkeypatch.setattr(exact, "initial_precision", lambda fmt: 16)
    monkeypatch.setattr(gradients, "_evaluate_vjp_row", recording)
    forced = [vjp_references(x, g, g_row, -1) for x, g, g_row in ziv_batches(name)]
    for a, b in zip(default, forced, strict=True):
        for op in VJP_OPS:
            assert_same_bits(b[op].rounded, a[op].rounded, op)
            assert np.array_equal(b[op].mant == 0, a[op].mant == 0)
            nonzero = a[op].mant != 0
            assert np.array_equal(b[op].scale[nonzero], a[op].scale[nonzero])
    # The first evaluation of every row ran at 16 bits; undecided rows doubled: 16, 32, 64, ...
    assert precisions.count(16) == sum(math.prod(x.shape[:-1]) for x, _, _ in ziv_batches(name))
    assert {16, 32} <= set(precisions)
    assert max(r["softmax_vjp"].max_precision for r in forced) > 16
    # A bound of 32 eps |v| (logsumexp_vjp) decides a p-bit rounding only when 2^(5-P) is below
    # the distance to the midpoint: never for float64 (half-ulp 2^-54 relative) below P = 64.
    if name == "float64":
        assert all(r["logsumexp_vjp"].max_precision >= 64 for r in forced[:-1])


@pytest.mark.parametrize("name", DTYPES)
def test_sixteen_bits_leave_many_elements_undecided(name):
    # Guard for the test above: at 16 bits the loop has real work in every format.
    fmt = FORMATS[name]
    x, g, g_row = ziv_batches(name)[-2]  # 3 rows of 300, the constant cotangent
    undecided = 0
    for i in range(x.shape[0]):
        rows = [x[i].astype(np.float64), g[i].astype(np.float64), np.float64(g_row[i])]
        values = gradients._evaluate_vjp_row(rows, 16)["values"]
        undecided += sum(round_interval(v, e, fmt, 16, b) is None for op in VJP_OPS for v, e, b in values[op])
    assert undecided >= 30


# -- axes and shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_non_last_axis_equals_moving_the_axis_last(axis):
    rng = np.random.default_rng(5)
    x = (4 * rng.standard_normal((3, 4, 5))).astype(np.float32)
    g = rng.standard_normal((3, 4, 5)).astype(np.float32)
    reduced = tuple(s for i, s in enumerate(x.shape) if i != axis % 3)
    g_row = rng.standard_normal(reduced).astype(np.float32)
    refs = vjp_references(x, g, g_row, axis)
    last = vjp_references(np.moveaxis(x, axis, -1), np.moveaxis(g, axis, -1), g_row, -1)
    for op in VJP_OPS:
        a, b = refs[op], last[op]
        assert a.shape == x.shape and a.row_length == x.shape[axis]
        assert set(a.terms) == set(b.terms) >= {"y", "g_abs", "sum_abs_g_y", "gap"}
        fields = {name: getattr(a, name) for name in ("rounded", "mant", "mant_lo", "scale")}
        for field, got in {**fields, **a.terms}.items():
            want = np.moveaxis(b.terms[field] if field in b.terms else getattr(b, field), -1, axis)
            assert got.shape == want.shape and np.array_equal(got, want), (op, field)
    # logsumexp_vjp's g_row really is per row: its j-th element along the axis is g_row y_j
    y = refs["logsumexp_vjp"].terms["y"]
    np.testing.assert_allclose(refs["logsumexp_vjp"].rounded,
                               np.expand_dims(g_row.astype(np.float64), axis) * y, rtol=2.0**-23)


def test_cotangent_of_the_wrong_shape_is_an_error():
    x = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match=re.escape("cotangent shape (3, 4) differs from the input's (3, 5)")):
        vjp_references(x, np.zeros((3, 4), np.float32), np.zeros(3, np.float32), -1)
    with pytest.raises(ValueError, match=re.escape("cotangent shape (5, 3) differs from the input's (3, 5)")):
        vjp_references(x, np.zeros((5, 3), np.float32), np.zeros(3, np.float32), -1)
    with pytest.raises(ValueError, match=re.escape("logsumexp cotangent shape (5,), expected (3,)")):
        vjp_references(x, np.zeros((3, 5), np.float32), np.zeros(5, np.float32), -1)
    with pytest.raises(ValueError, match=re.escape("logsumexp cotangent shape (3,), expected (5,)")):
        vjp_references(x, np.zeros((3, 5), np.float32), np.zeros(3, np.float32), 0)
    with pytest.raises(ValueError, match=re.escape("logsumexp cotangent shape (3, 1), expected (3,)")):
        vjp_references(x, np.zeros((3, 5), np.float32), np.zeros((3, 1), np.float32), 1)


# -- the budget and the a-priori bound ---------------------------------------------------------

def budget_ratio(ref, got: np.ndarray) -> np.ndarray:
    """error / budget per element, as suites/accuracy.py's judge computes it."""
    comparison = compare(ref, got)
    budgets = budget(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(comparison.measured, comparison.in_units(budgets.exponent) / budgets.units, np.nan)


def budget_cases(name: str) -> list[tuple]:
    return [b[:3] for b in batches(name, lengths=(2, 7, 300), scales=(1.0, 10.0))] + [
        tuple(row_of(v, name) for v in ([[0.0, 0.0, -1.0, -1.0]], [[1.0, 3.0, 2.0, 2.0]], [1.0]))]


@pytest.mark.parametrize("name", DTYPES)
def test_correctly_rounded_answers_are_within_budget_and_a_large_error_is_not(name):
    fmt = FORMATS[name]
    perturbed_ratios = []
    for x, g, g_row in budget_cases(name):
        for op, ref in vjp_references(x, g, g_row, -1).items():
            ratio = budget_ratio(ref, ref.rounded)
            finite = np.isfinite(ref.mant)
            assert np.isfinite(budget(ref).units[finite]).all()
            assert np.all(ratio[finite] <= 1), (op, np.nanmax(ratio))
            # One element off by 1e6 u * natural: its budget is u * natural times at most
            # rho + 2 + c0 + W + 2 c_sum sigma(n) + max gap < 200 here (gaps < 60, sigma <= 9).
            natural = natural_scale(op, ref.terms)
            candidates = np.flatnonzero(finite & (natural > 1e3 * fmt.min_normal) & (natural < 1))
            if not candidates.size:
                continue
            at = np.unravel_index(candidates[0], ref.shape)
            got = ref.rounded.copy()
            got[at] = (got[at].astype(np.float64) + 1e6 * fmt.u * natural[at]).astype(got.dtype)
            ratio = budget_ratio(ref, got)
            assert ratio[at] > 1, (op, ratio[at])
            perturbed_ratios.append(float(ratio[at]))
            others = np.ones(ref.shape, bool)
            others[at] = False
            assert np.all(ratio[others & finite] <= 1)
    assert len(perturbed_ratios) >= 40 and min(perturbed_ratios) > 1e6 / 200


@pytest.mark.parametrize("name", DTYPES)
def test_cancellation_to_zero_is_within_budget_at_the_natural_scale(name):
    # Constant cotangent: the exact softmax VJP is 0, and a backward-stable implementation returns
    # about u * natural instead (y (c - c sum y^)). 4 u y_j (|g_j| + A) is within the allowance,
    # which is at least u y_j (rho_j + 2)(|g_j| + A), rho_j >= c0 = 3; though it is many ULPs of 0.
    fmt = FORMATS[name]
    x = row_of([[0.5, -1.0, 2.0, 0.25, -3.0, 1.0, 0.0]], name)
    ref = vjp_references(x, row_of(np.full((1, 7), 0.75), name), row_of([0.75], name), -1)["softmax_vjp"]
    assert np.all(ref.mant == 0)
    got = (4 * fmt.u * natural_scale("softmax_vjp", ref.terms)).astype(ref.rounded.dtype)
    assert np.all(got != 0)
    ratio = budget_ratio(ref, got)
    assert np.all(ratio <= 5 / 6), ratio
    assert np.all(compare(ref, got).ulp > 100)  # ULPs of the exact zero: min_subnormal units


@pytest.mark.parametrize("name", DTYPES)
def test_theory_bound_holds_for_correctly_rounded_answers(name):
    # The bounds of softmax_suite.oracle.theory all exceed u |v| + min_subnormal (1 + multiplier) >= the error
    # of a correct rounding (half an ulp of v, at most u |v|, or half the smallest subnormal):
    # |softmax_vjp| <= y (|g| + A), |log_softmax_vjp| <= |g| + y sum |g|, |logsumexp_vjp| = |g| y.
    fmt = FORMATS[name]
    ratios = []
    for x, g, g_row in budget_cases(name):
        for ref in vjp_references(x, g, g_row, -1).values():
            bound = theory.bound(ref, -1)
            finite = np.isfinite(ref.mant)
            assert np.all(np.isfinite(bound[finite])) and np.all(bound[finite] > 0)
            assert np.all(np.isinf(bound[~finite]))
            comparison = compare(ref, ref.rounded)
            measured = theory.measured_over_bound(ref, comparison.abs, -1)
            assert np.all(measured[comparison.measured] <= 1)
            ratios.extend(measured[comparison.measured].tolist())
            # and an answer 1e6 u * natural off is outside it: the bound is u natural times at
            # most 2 rho + 2n + 5 (rho = n + 3 + 2 max gap), below 1e4 here.
            natural = natural_scale(ref.op, ref.terms)
            off = np.where(finite, comparison.abs + 1e6 * fmt.u * natural, np.nan)
            positive = finite & (natural > 1e3 * fmt.min_normal)
            assert np.all(theory.measured_over_bound(ref, off, -1)[positive] > 1)
    assert max(ratios) > 0  # some answers are not exact


def allowance(ref) -> np.ndarray:
    """The budget's absolute allowance without the half ulp of the final rounding."""
    b = budget(ref)
    return np.ldexp(b.units - np.ldexp(0.5, b.ulp_exponent - b.exponent), b.exponent)


@pytest.mark.parametrize("name", DTYPES)
def test_theory_bound_exceeds_the_budget_allowance_for_rows_of_ten_or_more(name):
    # From the formulas (default constants c0 = 3, c_exp = 1, c_sum = 2, sigma = ceil(log2 n),
    # M = max gap, W = sum y_i gap_i <= M, L = log1p(t), W + L = entropy of y <= ln n), the
    # theory bound minus the budget allowance is u y_j times at least
    #   softmax_vjp:      (n - 2 sigma + M - W)(|g_j| + A) + (2n - 4 sigma + M - W) A
    #   log_softmax_vjp:  (2n - 4 sigma - (W + L) + (M - gap_j)) sum |g_i|
    #   logsumexp_vjp:    (n - 2 sigma + M - W) |g|
    # all >= 0 once 2n - 4 sigma(n) >= ln n, i.e. n >= 10 (and for every n >= 17).
    assert all(2 * n - 4 * summation_depth(n) >= math.log(n) for n in range(10, 2000))
    assert BudgetConstants() == BudgetConstants(c0=3.0, c_exp=1.0, c_sum=2.0)
    for x, g, g_row in budget_cases(name)[-7:-1]:  # rows of 300
        assert x.shape[-1] == 300
        for ref in vjp_references(x, g, g_row, -1).values():
            finite = np.isfinite(ref.mant)
            assert np.all(theory.bound(ref, -1)[finite] >= allowance(ref)[finite] * (1 - 1e-12))


@pytest.mark.parametrize("name", DTYPES)
def test_theory_bound_is_below_the_budget_allowance_for_some_short_rows(name):
    # Not an ordering for every n: nine equal entries (M = W = 0, L = ln 9, sigma = 4) give
    # log_softmax_vjp the theory coefficient rho + n + 2 = 12 + 11 = 23 of y sum |g| but the budget
    # rho + 2 sigma + 2 = (3 + 8 + ln 9) + 10 = 23.197; and three equal entries (sigma = 2) give
    # softmax_vjp (6 + 2)(|g| + A) + 9 A against (7 + 2)(|g| + A) + 11 A.
    u = FORMATS[name].u
    ref = vjps([0.0] * 9, [1.0] + [0.0] * 8, 1.0, name)["log_softmax_vjp"]
    # |g| = [1, 0, ...], y = 1/9, sum |g| = 1: bound u (|g_j| + 23/9) + min_subnormal (2); the
    # budget's ln 9 is exp's argument error, taken as expm1(u ln 9) / u (oracle.budget).
    expected_theory = u * (np.array([1.0] + [0.0] * 8) + 23 / 9)
    expected_budget = u * (np.array([1.0] + [0.0] * 8) + (21 + math.expm1(u * math.log(9)) / u) / 9)
    tiny = 2 * FORMATS[name].min_subnormal
    np.testing.assert_allclose(theory.bound(ref, -1), expected_theory + tiny, rtol=1e-12)
    np.testing.assert_allclose(allowance(ref), expected_budget + tiny, rtol=1e-9)
    ref = vjps([0.0] * 3, [1.0, 0.0, 0.0], 1.0, name)["softmax_vjp"]
    # y = 1/3, A = 1/3: theory u/3 [8 (|g_j| + 1/3) + 3], budget u/3 [9 (|g_j| + 1/3) + 11/3]
    g_abs = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(theory.bound(ref, -1) - FORMATS[name].min_subnormal * (4 / 3 + g_abs),
                               u / 3 * (8 * (g_abs + 1 / 3) + 3), rtol=1e-12)
    assert np.all(theory.bound(ref, -1) < allowance(ref))


# -- cancellation against a dominant entry -----------------------------------------------------

# x = [0, -gap], g = [1, 0], g_row = 1: y_1 = e^-gap / (1 + e^-gap), y_0 = 1 - y_1, and
#   softmax_vjp     = [y_0 y_1, -y_0 y_1]   (y_0 (1 - y_0) and y_1 (0 - y_0))
#   log_softmax_vjp = [y_1, -y_1]           (1 - y_0 and 0 - y_1)
#   logsumexp_vjp   = [y_0, y_1]
# With the gap beyond (2p + 64) ln 2, y_0 is 1 at the first working precision: computed as
# g_0 - <g, y> and g_0 - y_0 sum g these cancel to exactly 0, though the exact values are normal
# numbers of the format. The oracle never forms 1 - y_0 (softmax_suite.oracle.gradients), and a computed 0
# with a non-zero error bound is never taken as exact (softmax_suite.oracle.rounding.round_interval).
DOMINANT = {"float16": 12.0, "bfloat16": 60.0, "float32": 80.0, "float64": 200.0}


def dominant_expectation(name: str, gap: float) -> dict[str, np.ndarray]:
    dtype = FORMATS[name].np_dtype
    with mpmath.workprec(800):
        t = mpmath.exp(-gap)
        y1 = t / (1 + t)
        y0 = 1 / (1 + t)
        values = {"softmax_vjp": [y0 * y1, -y0 * y1], "log_softmax_vjp": [y1, -y1],
                  "logsumexp_vjp": [y0, y1]}
        return {op: np.array([reference_round(v, dtype) for v in vs]).astype(dtype)
                for op, vs in values.items()}


def check_dominant(name: str, gap: float) -> None:
    refs = vjps([0.0, -gap], [1.0, 0.0], 1.0, name)
    expected = dominant_expectation(name, gap)
    if gap > 12:  # float32: softmax_vjp_0 = 1.8048514e-35, log_softmax_vjp_0 = the same
        assert expected["softmax_vjp"][0] != 0 and expected["log_softmax_vjp"][0] != 0
    for op in VJP_OPS:
        assert_same_bits(refs[op].rounded, expected[op], op)
        assert np.all(refs[op].mant != 0), op


@pytest.mark.parametrize("name", DTYPES)
def test_dominant_entry_cancellation(name):
    check_dominant(name, DOMINANT[name])


def test_dominant_entry_cancellation_at_a_low_first_precision(monkeypatch):
    # The same with 16 first bits and a gap of only 14 in bfloat16 (e^-14 = 2^-20.2, so y_0 = 1 at
    # 16 bits): the answer must not depend on where the loop starts. softmax_vjp =
    # [8.3074e-07, -8.3074e-07] and log_softmax_vjp the same.
    check_dominant("bfloat16", 14.0)
    monkeypatch.setattr(exact, "initial_precision", lambda fmt: 16)
    check_dominant("bfloat16", 14.0)
