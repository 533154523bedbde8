"""softmax_suite.oracle.exact.forward_references: worked examples, exact cases, the special-value policy, and
correct rounding checked bit for bit against plain mpmath formulas and an independent rounding."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # the float8 formats: tests/test_float8.py
from softmax_suite.ops import SOFTMAX_FORWARD_OPS as FORWARD_OPS
from softmax_suite.oracle import exact, fastpath
from softmax_suite.oracle.exact import forward_references, initial_precision
from softmax_suite.oracle.rounding import round_interval
from tests.reference_rounding import UNSIGNED, reference_round


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


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Bitwise equality for finite values, infinities and zeros (signs count); NaN matches NaN."""
    got, want = np.asarray(got), np.asarray(want).astype(got.dtype)
    assert got.shape == want.shape
    nan = np.isnan(got.astype(np.float64))
    assert np.array_equal(nan, np.isnan(want.astype(np.float64))), (got, want)
    assert np.array_equal(bits(got)[~nan], bits(want)[~nan]), (got, want)


def plain_reference(row: np.ndarray) -> tuple[dict[str, list], int]:
    """The three ops on one row from the plain formulas, unshifted, in mpmath:
    softmax_j = exp(x_j) / fsum(exp(x)), logsumexp = log(fsum(exp(x))), log_softmax_j = x_j - lse.

    The precision is 400 bits plus what the plain formulas lose: a tail as small as e^-spread
    must survive next to 1 inside log(sum), and x_j - lse cancels the bits of |max x|.
    """
    values = [float(v) for v in row.astype(np.float64)]
    finite = [v for v in values if math.isfinite(v)]
    spread = max(finite) - min(finite)
    precision = 400 + math.ceil(spread / math.log(2)) + math.frexp(max(abs(v) for v in finite))[1]
    with mpmath.workprec(precision):
        xs = [mpmath.mpf(v) for v in values]
        exps = [mpmath.exp(x) for x in xs]
        total = mpmath.fsum(exps)
        lse = mpmath.log(total)
        return {
            "softmax": [e / total for e in exps],
            "log_softmax": [x - lse for x in xs],
            "logsumexp": [lse],
        }, precision


def check_against_plain_reference(row: np.ndarray, name: str) -> None:
    refs = forward_references(row, -1)
    exact_values, precision = plain_reference(row)
    dtype = FORMATS[name].np_dtype
    for op in FORWARD_OPS:
        ref = refs[op]
        values = exact_values[op]
        want = np.array([reference_round(v, dtype) for v in values]).astype(dtype)
        assert_same_bits(ref.rounded.reshape(-1), want)
        # The unrounded value the metrics measure against carries the oracle's own error bound,
        # 16 * 2^-P at working precision P (2p + 64 bits at first: 2^-82 for float16, 2^-76 for
        # bfloat16, far below 2^-60 ULP), and at best the 2^-105 of a float pair.
        tolerance = mpmath.mpf(2) ** max(-100, 4 - ref.max_precision)
        with mpmath.workprec(precision):
            for mant, lo, scale, v in zip(ref.mant.reshape(-1), ref.mant_lo.reshape(-1),
                                          ref.scale.reshape(-1), values, strict=True):
                if not mpmath.isfinite(v):
                    assert mant == v
                    continue
                # |mant| may round up to 2 (1 - 4e-18 in float64 is mant 2.0 at scale -1).
                assert 1 <= abs(mant) <= 2 or (mant == 0 and v == 0)
                carried = mpmath.ldexp(mpmath.mpf(float(mant)) + mpmath.mpf(float(lo)), int(scale))
                assert abs(carried - v) <= abs(v) * tolerance, (op, row, v, carried)


# -- worked examples ---------------------------------------------------------------------------

def test_worked_example_float64():
    x = np.array([1.5, 2.2, -0.3, 0.8])
    refs = forward_references(x, -1)
    # e^x = [4.4817, 9.0250, 0.7408, 2.2255], sum 16.4731
    np.testing.assert_allclose(refs["softmax"].rounded, [0.2721, 0.5479, 0.04497, 0.1351], atol=5e-5)
    with mpmath.workprec(300):
        xs = [mpmath.mpf(v) for v in x]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
        softmax = [reference_round(mpmath.exp(v - lse), np.float64) for v in xs]
        log_softmax = [reference_round(v - lse, np.float64) for v in xs]
        assert refs["logsumexp"].rounded == reference_round(lse, np.float64)
    assert_same_bits(refs["softmax"].rounded, np.array(softmax))
    assert_same_bits(refs["log_softmax"].rounded, np.array(log_softmax))
    # conditioning: gap = |x_j - 2.2|, log_tail = lse - 2.2, tail = 1 - softmax(argmax)
    np.testing.assert_allclose(refs["softmax"].terms["gap"], [0.7, 0.0, 2.5, 1.4], rtol=1e-15, atol=1e-15)
    assert refs["logsumexp"].terms["log_tail"] == pytest.approx(float(lse) - 2.2, rel=1e-14)
    assert refs["logsumexp"].terms["tail"] == pytest.approx(1 - softmax[1], rel=1e-14)
    assert all(r.row_length == 4 for r in refs.values())


def test_logsumexp_of_a_dominant_entry():
    # docs/numerics.md: lse([0, -40]) = log1p(e^-40) = 4.248354255291589e-18 in fp64 (log(sum) gives 0),
    # and log_softmax_0 = -log1p(e^-40) is its negation; log_softmax_1 = -40 - 4.2e-18 -> -40.
    refs = forward_references(np.array([0.0, -40.0]), -1)
    assert refs["logsumexp"].rounded == 4.248354255291589e-18
    assert_same_bits(refs["log_softmax"].rounded, np.array([-4.248354255291589e-18, -40.0]))
    # softmax = [1/(1 + e^-40), e^-40/(1 + e^-40)] = [1 - 4.2e-18 -> 1.0, 4.248354255291589e-18]
    assert_same_bits(refs["softmax"].rounded, np.array([1.0, 4.248354255291589e-18]))


# -- exact results -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("value", [0.0, 7.0, -2.5])
def test_ties(name, k, value):
    # k equal entries: softmax = 1/k (exact for k = 2, 4; 1/3 correctly rounded),
    # log_softmax = -ln k, logsumexp = x + ln k.
    refs = forward_references(row_of([value] * k, name), -1)
    dtype = FORMATS[name].np_dtype
    assert_same_bits(refs["softmax"].rounded, np.full(k, reference_round(Fraction(1, k), dtype)))
    if k != 3:
        assert np.all(refs["softmax"].rounded.astype(np.float64) == 1 / k)
    with mpmath.workprec(300):
        log_k = mpmath.log(k)
        assert_same_bits(refs["log_softmax"].rounded, np.full(k, reference_round(-log_k, dtype)))
        assert_same_bits(refs["logsumexp"].rounded, np.array(reference_round(value + log_k, dtype)))


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("which", ["zero", "positive", "negative", "max", "-max", "min_subnormal"])
def test_single_element(name, which):
    fmt = FORMATS[name]
    value = {"zero": 0.0, "positive": 2.5, "negative": -3.0, "max": fmt.max, "-max": -fmt.max,
             "min_subnormal": fmt.min_subnormal}[which]
    x = row_of([value], name)
    refs = forward_references(x, -1)
    # softmax = e^x / e^x = 1, log_softmax = x - x = +0.0, logsumexp = log(e^x) = x
    assert_same_bits(refs["softmax"].rounded, np.array([1.0]))
    assert_same_bits(refs["log_softmax"].rounded, np.array([0.0]))
    assert_same_bits(refs["logsumexp"].rounded, x[0])
    assert refs["log_softmax"].mant[0] == 0  # an exact zero, not a tiny value


@pytest.mark.parametrize("name", DTYPES)
def test_masked_entries(name):
    # -inf entries drop out: softmax +0.0, log_softmax -inf; the rest equals the unmasked row.
    refs = forward_references(row_of([1.0, -np.inf, 0.5, -np.inf], name), -1)
    unmasked = forward_references(row_of([1.0, 0.5], name), -1)
    softmax, log_softmax = refs["softmax"].rounded, refs["log_softmax"].rounded
    assert_same_bits(softmax[[1, 3]], np.array([0.0, 0.0]))
    assert_same_bits(log_softmax[[1, 3]], np.array([-np.inf, -np.inf]))
    assert_same_bits(softmax[[0, 2]], unmasked["softmax"].rounded)
    assert_same_bits(log_softmax[[0, 2]], unmasked["log_softmax"].rounded)
    assert_same_bits(refs["logsumexp"].rounded, unmasked["logsumexp"].rounded)
    # One finite entry among masks is the single-element case.
    refs = forward_references(row_of([-np.inf, 3.0, -np.inf], name), -1)
    assert_same_bits(refs["softmax"].rounded, np.array([0.0, 1.0, 0.0]))
    assert_same_bits(refs["log_softmax"].rounded, np.array([-np.inf, 0.0, -np.inf]))
    assert_same_bits(refs["logsumexp"].rounded, np.array(3.0))


# -- the special-value policy ------------------------------------------------------------------

NAN, INF = math.nan, math.inf
# row, expected softmax/log_softmax (every element), expected logsumexp
POLICY = [
    ([1.0, NAN, 2.0], NAN, NAN),  # any NaN: all NaN
    ([NAN, INF, -INF], NAN, NAN),  # NaN wins over +inf
    ([1.0, INF, 2.0], NAN, INF),  # +inf: inf/inf in softmax, but logsumexp is +inf
    ([INF, INF], NAN, INF),
    ([INF, -INF], NAN, INF),
    ([-INF, -INF, -INF], NAN, -INF),  # nothing left: 0/0, and log(0) = -inf
    ([-INF], NAN, -INF),
]


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize(("row", "elementwise", "reduced"), POLICY)
def test_special_value_policy(name, row, elementwise, reduced):
    refs = forward_references(row_of(row, name), -1)
    for op in ("softmax", "log_softmax"):
        assert_same_bits(refs[op].rounded, np.full(len(row), elementwise))
        assert_same_bits(refs[op].mant, np.full(len(row), elementwise))
    assert_same_bits(refs["logsumexp"].rounded, np.array(reduced))


@pytest.mark.parametrize("name", DTYPES)
def test_empty_rows(name):
    # logsumexp of nothing is log(0) = -inf; softmax and log_softmax are empty.
    refs = forward_references(row_of([], name), -1)
    assert refs["softmax"].shape == refs["log_softmax"].shape == (0,)
    assert_same_bits(refs["logsumexp"].rounded, np.array(-np.inf))
    refs = forward_references(np.zeros((3, 0), FORMATS[name].np_dtype), axis=1)
    assert refs["softmax"].shape == refs["log_softmax"].shape == (3, 0)
    assert_same_bits(refs["logsumexp"].rounded, np.full(3, -np.inf))
    assert refs["softmax"].rounded.dtype == FORMATS[name].np_dtype


# -- correct rounding against plain formulas at high precision ---------------------------------

def random_rows(name: str) -> list[np.ndarray]:
    rng = np.random.default_rng(sum(map(ord, name)))
    return [row_of(scale * rng.standard_normal(n), name)
            for n in (2, 5, 16, 33) for scale in (1, 10, 100)]


def underflow_rows(name: str) -> list[np.ndarray]:
    """Rows whose outputs are subnormal, zero, or on the edge between (neighbours, in the dtype,
    of (emin - p) ln 2, where exp crosses half the smallest subnormal)."""
    fmt = FORMATS[name]
    dtype = fmt.np_dtype
    middle = (fmt.exp_subnormal_below + fmt.exp_zero_below) / 2  # exp(middle) is subnormal
    edge = np.array(fmt.exp_zero_below, dtype)
    edge_below = np.nextafter(edge, np.array(-np.inf, dtype))
    edge_above = np.nextafter(edge, np.array(np.inf, dtype))
    gaps = [middle, float(edge_below), float(edge), float(edge_above), 1.5 * fmt.exp_zero_below,
            fmt.exp_subnormal_below + 1, fmt.exp_subnormal_below - 1]
    return [row_of([0.0, *gaps], name), row_of([3.0, *[3.0 + g for g in gaps]], name),
            row_of([0.0, middle, middle], name), row_of([-1.0, -1.0 + middle], name)]


def overflow_rows(name: str) -> list[np.ndarray]:
    """Rows at the edge of exp's range and at the format's max (the oracle shifts; a naive
    exp(x) would overflow). Distinct values near max are 2^(emax-p+1) apart, too far for the
    plain formulas: see test_huge_gaps."""
    fmt = FORMATS[name]
    top = fmt.exp_overflow
    return [row_of([top, top - 1, 0.0], name), row_of([top] * 4, name), row_of([top, -top], name),
            row_of([fmt.max, fmt.max], name), row_of([fmt.max] * 3, name),
            row_of([-fmt.max, -fmt.max], name)]


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("kind", ["random", "underflow", "overflow"])
def test_correctly_rounded(name, kind):
    rows = {"random": random_rows, "underflow": underflow_rows, "overflow": overflow_rows}[kind](name)
    for row in rows:
        check_against_plain_reference(row, name)


@pytest.mark.parametrize("name", DTYPES)
def test_underflow_rows_reach_subnormal_and_zero(name):
    # Guard for the rows above: they do produce subnormal and zero softmax outputs, and both
    # sides of the zero edge (0 just below it, the smallest subnormal just above it).
    fmt = FORMATS[name]
    y = forward_references(underflow_rows(name)[0], -1)["softmax"].rounded.astype(np.float64)
    assert np.any((y > 0) & (y < fmt.min_normal))
    assert y[2] == 0.0 and y[4] == fmt.min_subnormal  # exp(edge_below), exp(edge_above)
    assert y[5] == 0.0


@pytest.mark.parametrize("name", DTYPES)
def test_huge_gaps(name):
    # [max, -max]: the gap 2 max is beyond any fixed precision of the plain formulas. Exactly:
    # softmax = [1/(1+t), t/(1+t)] with t = e^(-2 max) -> [1, +0]; lse = max + log1p(t) -> max;
    # log_softmax = [-log1p(t) -> -0.0, -2 max - log1p(t) -> -inf (overflows)].
    fmt = FORMATS[name]
    refs = forward_references(row_of([fmt.max, -fmt.max], name), -1)
    assert_same_bits(refs["softmax"].rounded, np.array([1.0, 0.0]))
    assert_same_bits(refs["log_softmax"].rounded, np.array([-0.0, -np.inf]))
    assert_same_bits(refs["logsumexp"].rounded, np.array(fmt.max))
    # The exact value of log_softmax_1 is finite (-2 max); only its rounding overflows.
    assert refs["log_softmax"].mant[1] == pytest.approx(-(2 - 2.0 ** (1 - fmt.p)), abs=2.0**-fmt.p)
    assert refs["log_softmax"].scale[1] == fmt.emax + 1


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("mask", [-1e4, -1e9, "-max"])
def test_large_finite_masks_are_decided_at_the_first_precision(name, mask):
    # [0, mask, mask]: lse = log1p(2 e^mask) and log_softmax_0 = -lse are tiny but carry a
    # relative error bound, so the first precision decides them: -0.0 and +0.0 (or tiny values).
    fmt = FORMATS[name]
    mask = -fmt.max if mask == "-max" else max(mask, -fmt.max)
    refs = forward_references(row_of([0.0, mask, mask], name), -1)
    assert refs["logsumexp"].max_precision == initial_precision(fmt)
    assert_same_bits(refs["log_softmax"].rounded[:1], np.array([-0.0]))
    assert_same_bits(refs["logsumexp"].rounded, np.array(0.0))
    assert_same_bits(refs["softmax"].rounded, np.array([1.0, 0.0, 0.0]))


# -- axes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, -3, -2])
def test_non_last_axis_equals_moving_the_axis_last(axis):
    x = (5 * np.random.default_rng(3).standard_normal((3, 4, 5))).astype(np.float32)
    moved = np.moveaxis(x, axis, -1)
    refs, last = forward_references(x, axis), forward_references(moved, -1)
    for op in FORWARD_OPS:
        a, b = refs[op], last[op]
        elementwise = op != "logsumexp"
        fields = {name: getattr(a, name) for name in ("rounded", "mant", "mant_lo", "scale")}
        assert set(a.terms) == set(b.terms) and "max_gap" in a.terms
        for field, got in {**fields, **a.terms}.items():
            want = b.terms[field] if field in b.terms else getattr(b, field)
            if elementwise:
                want = np.moveaxis(want, -1, axis)
            assert got.shape == want.shape and np.array_equal(got, want), (op, field)
        reduced = tuple(size for i, size in enumerate(x.shape) if i != axis % x.ndim)
        assert a.shape == (x.shape if elementwise else reduced)


# -- Ziv's loop --------------------------------------------------------------------------------

def ziv_rows() -> list[np.ndarray]:
    rows = []
    for name in DTYPES:
        rows += random_rows(name)[::3] + underflow_rows(name)[:1] + overflow_rows(name)[:1]
        rows.append(row_of([0.5, np.nan], name))
    return rows


@pytest.mark.usefixtures("mpmath_only")
@pytest.mark.parametrize("name", DTYPES)
def test_random_rows_are_decided_at_the_first_precision(name):
    # The loop is the exception: 2p + 64 bits decide every element of ordinary rows. (Not of all
    # rows: with a gap near 100, x_j - max can sit exactly on a midpoint of the format while
    # log1p(t) ~ e^-100 is below the first bound; such elements rightly need more bits.)
    for row in random_rows(name)[::3]:  # scale 1
        refs = forward_references(row, -1)
        assert refs["softmax"].max_precision == initial_precision(FORMATS[name]) == 2 * FORMATS[name].p + 64


@pytest.mark.usefixtures("mpmath_only")
def test_forced_ziv_loop_gives_identical_results(monkeypatch):
    default = [forward_references(row, -1) for row in ziv_rows()]
    precisions: list[int] = []
    evaluate = exact._evaluate_row

    def recording(row, precision):
        precisions.append(precision)
        return evaluate(row, precision)

    monkeypatch.setattr(exact, "initial_precision", lambda fmt: 16)
    monkeypatch.setattr(exact, "_evaluate_row", recording)
    forced = [forward_references(row, -1) for row in ziv_rows()]
    for a, b in zip(default, forced, strict=True):
        for op in FORWARD_OPS:
            assert_same_bits(b[op].rounded, a[op].rounded)
            assert np.array_equal(b[op].scale, a[op].scale)
    # A bound of 16 * 2^-P relative cannot decide a float64 value (half-ulp 2^-54 relative) below
    # P = 64, so every float64 row was re-evaluated at doubled precisions 16, 32, 64.
    assert {16, 32, 64} <= set(precisions)
    assert max(r["softmax"].max_precision for r in forced) > 16
    assert all(r["softmax"].max_precision >= 64 for r, row in zip(forced, ziv_rows(), strict=True)
               if row.dtype == np.float64 and not np.isnan(row).any())


@pytest.mark.parametrize("name", DTYPES)
def test_sixteen_bits_leave_many_elements_undecided(name):
    # Guard for the test above: at 16 bits the loop has real work in every format. The row is at
    # scale 1: at scale 100, log1p(t) lies below 16 bits of most x_j - max, and the exact split of
    # log_softmax into x_j - max and that term (oracle.exact.near) decides those elements at once.
    fmt = FORMATS[name]
    row = random_rows(name)[-3].astype(np.float64)
    values = exact.forward_row(row, 16).values
    undecided = sum(round_interval(v, e, fmt, 16, b) is None for op in FORWARD_OPS for v, e, b in values[op])
    assert undecided >= 3
