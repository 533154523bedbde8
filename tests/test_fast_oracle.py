"""The certified fast path (oracle.fastpath) against the mpmath oracle alone: identical correctly
rounded results on 10^5 random and boundary elements per dtype, its slower tiers forced by
widened bounds, its building blocks against exact arithmetic, and an unsound fast path caught."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from mpmath.libmp import from_float, mpf_add, mpf_shift

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # the float8 formats: tests/test_float8.py
from softmax_suite.oracle import doubleword as dw
from softmax_suite.oracle import exponential, fastpath
from softmax_suite.oracle.budget import natural_scale
from softmax_suite.oracle.exact import forward_references
from softmax_suite.oracle.gradients import vjp_references
from softmax_suite.oracle.rounding import round_between, round_certified, round_to_format

ROWS, N = 200, 500  # 10^5 elements per dtype


def boundary_input(name: str, rows: int = ROWS, n: int = N) -> np.ndarray:
    """Random logits at scales 1 to 100, and rows built to sit on rounding boundaries: entries
    whose gaps are exact ties of the output format (log_softmax = tie - tiny L), one dominating
    entry (t near 1e-20), gaps up to the fast path's limit, -inf masks, logsumexp at float16's
    overflow edge."""
    rng = np.random.default_rng(sum(map(ord, name)))
    dtype = FORMATS[name].np_dtype
    scale = rng.choice([1.0, 4.0, 30.0, 100.0], size=(rows, 1))
    x = rng.standard_normal((rows, n)) * scale
    x[0::10, 0] += 60.0  # one entry dominates
    x[1::10] = rng.integers(-64, 64, (len(x[1::10]), n)) / 8.0  # gaps on a coarse grid: ties
    x[1::10, 0] = 100.25
    x[2::10, : n // 3] = -np.inf
    x[3::10] = rng.uniform(-2000.0, 0.0, (len(x[3::10]), n))
    x[4::10] = 65504.0 - rng.integers(0, 8, (len(x[4::10]), n)) * 32.0 if name == "float16" else x[4::10]
    return x.astype(dtype)


def cotangents(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    dtype = FORMATS[name].np_dtype
    g = rng.standard_normal(x.shape)
    g[0::7] = 0.75  # constant: the exact softmax VJP is 0
    g[1::7] *= 2.0 ** rng.integers(-12, 12, g[1::7].shape)
    g[2::7] = 0.0
    g[2::7, 3] = 1.0  # one-hot
    return g.astype(dtype), rng.standard_normal(x.shape[0]).astype(dtype)


_naive: dict[tuple, dict] = {}


def naive(family: str, name: str) -> dict:
    """The mpmath-only references (the slow path for every row), computed once per module."""
    if (family, name) not in _naive:
        with fastpath.disabled():
            _naive[family, name] = compute(family, name)
    return _naive[family, name]


def compute(family: str, name: str) -> dict:
    x = boundary_input(name)
    if family == "forward":
        return forward_references(x, 1)
    g, g_row = cotangents(name, x)
    return vjp_references(x, g, g_row, 1)


def assert_identical(fast: dict, slow: dict) -> None:
    for op, reference in slow.items():
        got, want = fast[op].rounded.astype(np.float64), reference.rounded.astype(np.float64)
        assert np.array_equal(got, want, equal_nan=True), op
        assert np.array_equal(np.signbit(got), np.signbit(want)), f"{op}: signs of zeros"
        # The unrounded values agree within the fast path's bounds: 2^-45 relative on the float64
        # tier (24-bit outputs: 2^-21 of an ULP), 2^-90 on the double-word tier (float64 outputs).
        tolerance = 2.0**-45 if FORMATS[reference.dtype].p <= 24 else 2.0**-90
        shown = np.isfinite(reference.mant) & (reference.mant != 0)
        power = np.exp2(fast[op].scale - reference.scale)
        # Word by word: the high words' difference is exact, and a tie split as m - h or
        # (m - 2h) + h compares equal.
        with np.errstate(invalid="ignore"):  # inf - inf where the values are infinite: not shown
            difference = (fast[op].mant * power - reference.mant) \
                + (fast[op].mant_lo * power - reference.mant_lo)
        allowed = tolerance * np.abs(reference.mant)
        if op.endswith("_vjp"):
            # A VJP that cancels (softmax_vjp's (g_j - g_k) - S) is only known to within the
            # bound times its natural scale, in units of 2^scale.
            with np.errstate(invalid="ignore", divide="ignore"):  # below float64's range: x / 0
                allowed = np.fmax(allowed, tolerance * natural_scale(op, reference.terms)
                                  / np.exp2(reference.scale.astype(np.float64)))
            # A value 2^60 below the format's smallest subnormal rounds to 0 whatever its
            # (decided: below 1) relative error, and its error is measured in subnormal units.
            fmt = FORMATS[reference.dtype]
            invisible = reference.scale < fmt.emin - fmt.p - 60
            allowed = np.where(invisible, np.abs(reference.mant), allowed)
        assert np.all(np.abs(difference[shown]) <= allowed[shown]), op
        for term, values in reference.terms.items():
            np.testing.assert_allclose(fast[op].terms[term], values, rtol=1e-9, err_msg=f"{op} {term}")


@pytest.mark.parametrize("family", ["forward", "vjp"])
@pytest.mark.parametrize("name", DTYPES)
def test_fast_path_gives_the_mpmath_results(name, family):
    fast = compute(family, name)
    assert_identical(fast, naive(family, name))
    certificate = fast["softmax" if family == "forward" else "softmax_vjp"].certificate
    # Everything but the structural rows (none here) and the last resort is decided fast.
    fast_elements = certificate.get("float64", 0) + certificate["double_double"]
    assert fast_elements + certificate["mpmath"] == ROWS * N
    assert fast_elements >= 0.99 * ROWS * N, certificate


# Widening by 2^44 leaves the float64 tier (6u 2^44 = 2^-6.4) unable to decide 8- and 24-bit
# outputs, and the double-word tier (2^-56) still decides them; by 2^96 the double-word tier
# (2^-4) decides nothing either: every row goes to mpmath.
@pytest.mark.parametrize("name, factor, tier", [
    ("bfloat16", 2.0**44, "double_double"), ("float32", 2.0**44, "double_double"),
    ("bfloat16", 2.0**96, "mpmath"), ("float32", 2.0**96, "mpmath"), ("float64", 2.0**96, "mpmath")])
def test_forced_slower_tiers_give_the_same_results(name, factor, tier):
    with fastpath.widened(factor):
        forced = compute("forward", name)
    assert_identical(forced, naive("forward", name))
    # The float64 tier still decides what even 2^-6 leaves clear (outputs that underflow to 0,
    # exact zeros); its retries decide only the chunks it left open: at least a tenth here.
    minimum = ROWS * N // 2 if tier == "mpmath" else ROWS * N // 10
    assert forced["softmax"].certificate[tier] >= minimum, forced["softmax"].certificate
    if tier == "mpmath":
        assert forced["softmax"].certificate["undecided"] >= ROWS * N // 2
        assert forced["softmax"].max_precision >= 2 * FORMATS[name].p + 64


def test_forced_vjps_through_mpmath_give_the_same_results():
    with fastpath.widened(2.0**96):
        forced = compute("vjp", "float32")
    assert_identical(forced, naive("vjp", "float32"))
    assert forced["softmax_vjp"].certificate["undecided"] >= ROWS * N // 2


def test_a_row_beyond_the_words_range_goes_to_mpmath_quietly():
    # Found by `softmax-suite hunt`: a gap of ~763 in float32 puts every term but the max below
    # the double words' range; their bound is NaN (inf * 0), which must decide nothing: all 20
    # elements are left to mpmath, which gives the same bits as the mpmath-only path.
    x = np.array([[47] + [-716 - 0.01 * i for i in range(19)]], dtype=np.float32)
    rng = np.random.default_rng(0)
    g, g_row = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(1).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fast = vjp_references(x, g, g_row, 1)
    with fastpath.disabled():
        assert_identical(fast, vjp_references(x, g, g_row, 1))
    assert fast["softmax_vjp"].certificate["mpmath"] == 20


@pytest.mark.parametrize("name", ["float16", "float32"])
def test_forced_vjps_through_double_words_give_the_same_results(name):
    # x 2^44 takes the float64 tier's 8u (2^-50) to 2^-6, too wide for 11- or 24-bit outputs,
    # and the double-word tier's 2^-100 to 2^-56, which still decides them.
    fast = compute("vjp", name)
    assert fast["softmax_vjp"].certificate["float64"] >= 0.99 * ROWS * N
    with fastpath.widened(2.0**44):
        forced = compute("vjp", name)
    assert_identical(forced, naive("vjp", name))
    certificate = forced["softmax_vjp"].certificate
    assert certificate["double_double"] >= ROWS * N // 10, certificate


def test_an_unsound_fast_path_is_caught(monkeypatch):
    """exp values off by 2^-30 while the bound claims 6u: the identity check must fail."""
    exp_float = fastpath.exp_float
    monkeypatch.setattr(fastpath, "exp_float", lambda dh, dl: (exp_float(dh, dl)[0] * (1 + 2.0**-30),
                                                               exp_float(dh, dl)[1]))
    with pytest.raises(AssertionError):
        assert_identical(compute("forward", "float32"), naive("forward", "float32"))


def test_widening_factor_below_one_is_refused():
    with pytest.raises(ValueError, match="use a number >= 1"), fastpath.widened(0.5):
        pass


# -- building blocks against exact arithmetic ------------------------------------------------

def extreme_floats(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(count) * np.exp2(rng.integers(-60, 60, count))


def test_error_free_transformations_are_exact():
    a, b = extreme_floats(2000, 1), extreme_floats(2000, 2)
    for (s, e), exact in ((dw.two_sum(a, b), lambda x, y: Fraction(x) + Fraction(y)),
                          (dw.two_prod(a, b), lambda x, y: Fraction(x) * Fraction(y))):
        assert all(Fraction(si) + Fraction(ei) == exact(x, y)
                   for si, ei, x, y in zip(s.tolist(), e.tolist(), a.tolist(), b.tolist(), strict=True))


def test_double_word_add_and_mul_stay_within_their_bounds():
    rng = np.random.default_rng(3)
    xh, yh = rng.uniform(0.5, 2, 3000) * rng.choice([-1, 1], 3000), rng.uniform(0.5, 2, 3000)
    xl, yl = xh * rng.uniform(-1, 1, 3000) * 2.0**-53, yh * rng.uniform(-1, 1, 3000) * 2.0**-53
    with mpmath.workprec(300):
        for (zh, zl), op, bound in ((dw.add(xh, xl, yh, yl), lambda x, y: x + y, dw.ADD_ERROR),
                                    (dw.mul(xh, xl, yh, yl), lambda x, y: x * y, dw.MUL_ERROR)):
            for i in range(3000):
                exact = op(mpmath.mpf(xh[i]) + xl[i], mpmath.mpf(yh[i]) + yl[i])
                got = mpmath.mpf(zh[i]) + zl[i]
                assert abs(got - exact) <= bound * abs(exact), i


def test_exponentials_stay_within_their_bounds():
    rng = np.random.default_rng(4)
    dh = np.concatenate([-rng.uniform(0, exponential.MAX_GAP, 1500), -rng.exponential(1.0, 1500),
                         [0.0, -exponential.MAX_GAP, -5e-324, -0.34657359027997264]])
    dl = dh * rng.uniform(-1, 1, dh.size) * 2.0**-54
    m, e = exponential.exp_float(dh, dl)
    mh, ml, e2 = exponential.exp_double(dh, dl)
    with mpmath.workprec(300):
        for i in range(dh.size):
            exact = mpmath.exp(mpmath.mpf(dh[i]) + dl[i])
            assert abs(mpmath.ldexp(m[i], int(e[i])) / exact - 1) <= exponential.FLOAT_ERROR
            got = mpmath.ldexp(mpmath.mpf(mh[i]) + ml[i], int(e2[i]))
            assert abs(got / exact - 1) <= exponential.DOUBLE_ERROR


@pytest.mark.parametrize("name", DTYPES)
def test_certified_rounding_agrees_with_exact_rounding(name):
    """Decided values equal round_to_format's, across binades, subnormals, overflow, ties of the
    high word broken by the low word, and values just below a power of two."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(5)
    count = 6000
    high = rng.uniform(0.5, 2, count) * rng.choice([-1, 1], count)
    low = high * rng.uniform(-1, 1, count) * 2.0**-54
    exponent = rng.integers(fmt.emin - fmt.p - 4, fmt.emax + 3, count)
    ties = slice(0, count // 3)
    high[ties] = np.ldexp(np.floor(np.ldexp(high[ties], fmt.p)) + 0.5, -fmt.p)
    low[ties] = rng.choice([-1, 1], count // 3) * 2.0**-70
    powers = slice(count // 3, count // 2)
    high[powers] = np.sign(high[powers])
    low[powers] = rng.uniform(-1, 1, powers.stop - powers.start) * 2.0 ** -(fmt.p + 1)
    rounded, decided = round_certified(high, low, exponent, np.full(count, 2.0**-80), fmt)
    assert decided.mean() > 0.9
    for i in np.flatnonzero(decided):
        value = mpf_add(mpf_shift(from_float(high[i]), int(exponent[i])),
                        mpf_shift(from_float(low[i]), int(exponent[i])))
        want = round_to_format(value, fmt)
        assert rounded[i] == want and math.copysign(1, rounded[i]) == math.copysign(1, want), i


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
def test_rounding_both_ends_agrees_with_exact_rounding(name):
    """round_between (the float64 tier's decision) against round_to_format: values across every
    binade, subnormals, zero and overflow, half of them a hair (2^-60 relative, or exactly) off a
    tie of the format. Decided ends give the exact rounding of every value between them, signs
    of zeros included; ends straddling a tie (2^-50 either side of one) decide nothing."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(6)
    count = 6000
    v = rng.uniform(1, 2, count) * np.exp2(rng.integers(fmt.emin - fmt.p - 3, fmt.emax + 2, count))
    v *= rng.choice([-1, 1], count)
    ties = slice(0, count // 2)
    quantum = np.exp2(np.maximum(np.floor(np.log2(np.abs(v[ties]))), fmt.emin) - fmt.p + 1)
    v[ties] = (np.floor(v[ties] / quantum) + 0.5) * quantum
    offset = v[ties] * rng.choice([-1, 0, 1], count // 2) * 2.0**-60
    v[ties] += offset
    v[-4:] = [0.0, 1e-320, -1e-320, fmt.max * (1 + 2.0**-fmt.p)]
    rounded, decided = round_between(v * (1 - 2.0**-58), v * (1 + 2.0**-58), fmt)
    assert decided.mean() > 0.9
    for i in np.flatnonzero(decided):
        for end in (v[i] * (1 - 2.0**-58), v[i], v[i] * (1 + 2.0**-58)):
            want = round_to_format(from_float(float(end)), fmt)
            if want == 0:  # mpmath's zero has no sign: the ends' sign is the value's
                want = math.copysign(0.0, v[i])
            got = float(rounded[i])
            assert got == want and math.copysign(1, got) == math.copysign(1, want), (i, end)
    exact_ties = (offset == 0) & (np.abs(v[ties]) < fmt.max)
    straddling = round_between(v[ties] * (1 - 2.0**-50), v[ties] * (1 + 2.0**-50), fmt)[1]
    assert not straddling[exact_ties & (np.abs(v[ties]) >= 2.0 * fmt.min_subnormal)].any()


def test_results_carry_a_certificate():
    x = boundary_input("float32", rows=4, n=64)
    x[3] = x[3, 0]  # one group: structural, through mpmath's exact rational path
    reference = forward_references(x, 1)["log_softmax"]
    certificate = reference.certificate
    assert certificate["float64"] + certificate.get("double_double", 0) + certificate["mpmath"] == x.size
    assert certificate["mpmath"] >= 64 and certificate["undecided"] == 0
    assert set(certificate) == {"float64", "double_double", "undecided", "mpmath"}


def test_a_retry_recomputes_only_the_chunks_it_must_and_counts_each_element_once():
    # Widened by 2^26, the float64 tier's 8u becomes 2^-24: it still decides every bfloat16 value
    # (8 bits) but those within about 2^-16 of an ULP from a rounding boundary, a few dozen of
    # these 4 x 40000 elements. The double-word tier decides them, recomputing only the chunks of
    # 2^15 columns (two per row) that hold one.
    x = (np.random.default_rng(3).standard_normal((4, 40_000)) * 3).astype(FORMATS["bfloat16"].np_dtype)
    widths = []
    real = fastpath.Pending.spans  # the chunks a tier computes

    def counting(pending, ids, n):
        for span in real(pending, ids, n):
            widths.append(span.stop - span.start)
            yield span

    with fastpath.widened(2.0**26), pytest.MonkeyPatch.context() as patch:
        patch.setattr(fastpath.Pending, "spans", counting)
        forced = forward_references(x, 1)
    assert_identical(forced, forward_references(x, 1))
    for op in ("softmax", "log_softmax"):
        certificate = forced[op].certificate
        assert certificate["float64"] + certificate["double_double"] == x.size, certificate
        assert 0 < certificate["double_double"] < 1000, certificate
    assert forced["logsumexp"].certificate["float64"] + forced["logsumexp"].certificate["double_double"] == 4
    # The first tier computes every column of every row (one row per block here); the retry adds
    # some chunks, not all.
    first = x.size
    assert first < sum(widths) < 2 * first
