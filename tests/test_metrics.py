"""oracle.metrics (compare, summarize) and oracle.budget (budget_ulp): ULP values checked by hand,
the categories of semantic differences, and how budgets grow with n and with the gap."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # float8: tests/test_float8.py
from softmax_suite.ops import SOFTMAX_FORWARD_OPS as FORWARD_OPS
from softmax_suite.oracle.budget import budget_ulp
from softmax_suite.oracle.exact import forward_references
from softmax_suite.oracle.metrics import CATEGORIES, compare, summarize, ulp_histogram
from softmax_suite.oracle.rounding import ulp


def row_of(values, name: str) -> np.ndarray:
    return np.array(values, dtype=np.float64).astype(FORMATS[name].np_dtype)


def refs_of(values, name: str) -> dict:
    return forward_references(row_of(values, name), -1)


def step(values: np.ndarray, index: int, toward: float) -> np.ndarray:
    """A copy of values with one element moved to its neighbour in the array's dtype."""
    out = values.copy()
    with np.errstate(over="ignore"):
        out[index] = np.nextafter(out[index], np.array(toward, out.dtype))
    return out


def flagged(comparison) -> dict[str, list[int]]:
    return {name: np.flatnonzero(mask).tolist() for name, mask in comparison.categories.items()
            if mask.any()}


def rows(name: str) -> list[np.ndarray]:
    """Random rows, a masked row and a row with subnormal and zero softmax outputs."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(11)
    middle = (fmt.exp_subnormal_below + fmt.exp_zero_below) / 2
    return [row_of(scale * rng.standard_normal(n), name) for n, scale in ((7, 1), (64, 10))] + [
        row_of([0.5, -np.inf, 2.0, -np.inf], name),
        row_of([0.0, -1.0, middle, 1.5 * fmt.exp_zero_below], name),
        row_of([1.0], name),
    ]


# -- ULP values --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DTYPES)
def test_correctly_rounded_output_scores_at_most_half_an_ulp(name):
    for row in rows(name):
        for op, ref in forward_references(row, -1).items():
            comparison = compare(ref, ref.rounded)
            summary = summarize(comparison)
            assert summary["max_ulp"] <= 0.5, (op, row)
            assert summary["categories"] == {}
            # Exact infinities (log_softmax of a masked entry) are expected, not measured.
            assert summary["n_elements"] == ref.rounded.size
            assert summary["n_measured"] == np.isfinite(ref.mant).sum()


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("toward", [math.inf, -math.inf])
def test_one_ulp_off_scores_between_half_and_one_and_a_half(name, toward):
    # The rounded value r is within ulp(v)/2 of the exact v; its neighbour r' is ulp(v) from r
    # when r and r' lie in v's binade, so |r' - v| is in [ulp - ulp/2, ulp + ulp/2].
    fmt = FORMATS[name]
    ref = refs_of(2 * np.random.default_rng(5).standard_normal(40), name)["softmax"]
    rounded = ref.rounded.astype(np.float64)
    inside = [j for j in range(rounded.size)
              if 1.1 <= abs(ref.mant[j]) <= 1.9 and rounded[j] >= fmt.min_normal]
    assert len(inside) >= 10
    for j in inside:
        ulps = compare(ref, step(ref.rounded, j, toward)).ulp
        assert 0.5 <= ulps[j] <= 1.5
        assert np.all(np.delete(ulps, j) <= 0.5)


def test_the_low_part_of_the_exact_value_counts():
    # softmax([0, -40])_0 = 1 - e^-40 / (1 + e^-40) = 1 - 4.248354255291589e-18, just below 1 where
    # ulp = 2^-53: the correct answer 1.0 is 4.248354255291589e-18 * 2^53 = 0.038265 ulp off.
    # In float64 only mant_lo holds that difference (mant itself rounds to 1).
    ref = refs_of([0.0, -40.0], "float64")["softmax"]
    assert math.ldexp(ref.mant[0], int(ref.scale[0])) == 1.0
    assert math.ldexp(ref.mant_lo[0], int(ref.scale[0])) == pytest.approx(-4.248354255291589e-18, rel=1e-12)
    comparison = compare(ref, ref.rounded)
    assert comparison.ulp[0] == pytest.approx(4.248354255291589e-18 * 2.0**53, rel=1e-12)
    assert comparison.abs[0] == pytest.approx(4.248354255291589e-18, rel=1e-12)


def with_exact_value(name: str, mant: float, scale: int):
    """The logsumexp reference of a one-element row, its exact value replaced by mant * 2^scale
    (a float64 here) and its rounding by numpy's single rounding of that float64."""
    ref = refs_of([1.0], name)["logsumexp"]
    value = math.ldexp(mant, scale)
    return dataclasses.replace(ref, mant=np.array(mant), mant_lo=np.array(0.0), scale=np.array(scale),
                               rounded=np.array(value).astype(FORMATS[name].np_dtype))


# Exact value v, output y, ULPs |y - v| / ulp(v), relative |y - v| / |v|.
HAND_CHECKED = [
    # float32, v = 1 + 2^-30, ulp(v) = 2^-23:
    ("float32", 1 + 2.0**-30, 0, 1.0, 2.0**-7, 2.0**-30 / (1 + 2.0**-30)),  # 2^-30 / 2^-23
    ("float32", 1 + 2.0**-30, 0, 1 + 2.0**-23, 1 - 2.0**-7, (2.0**-23 - 2.0**-30) / (1 + 2.0**-30)),
    # y = 1 - 2^-24 is one step down into the lower binade: (2^-24 + 2^-30) / 2^-23
    ("float32", 1 + 2.0**-30, 0, 1 - 2.0**-24, 0.5 + 2.0**-7, (2.0**-24 + 2.0**-30) / (1 + 2.0**-30)),
    # float32, v = 1.5 * 2^-149 (1.5 smallest subnormals), ulp(v) = 2^-149: ties to 2 * 2^-149
    ("float32", 1.5, -149, 2.0**-148, 0.5, 1 / 3),
    ("float32", 1.5, -149, 2.0**-149, 0.5, 1 / 3),
    # 0 for it: 1.5 ULP off for a backend that keeps subnormals (a flushing one: test_flushed_subnormal)
    ("float32", 1.5, -149, 0.0, 1.5, 1.0),
    # float16, v = 1000.25, ulp = 2^(9 - 10) = 0.5: y = 1000.5 is off by 0.25 -> 0.5 ulp
    ("float16", 1000.25 / 512, 9, 1000.5, 0.5, 0.25 / 1000.25),
    ("float16", 1000.25 / 512, 9, 1001.0, 1.5, 0.75 / 1000.25),
    # bfloat16, v = -3, ulp = 2^(1 - 7) = 2^-6: y = -3 - 2^-6 is off by one ulp
    ("bfloat16", -1.5, 1, -3 - 2.0**-6, 1.0, 2.0**-6 / 3),
    # float64, v = 2^-1074 * 3, ulp 2^-1074: y = 5e-324 (= 2^-1074) is off by 2 ulps
    ("float64", 1.5, -1073, 5e-324, 2.0, 2 / 3),
]


@pytest.mark.parametrize(("name", "mant", "scale", "y", "ulps", "rel"), HAND_CHECKED)
def test_hand_checked_ulps(name, mant, scale, y, ulps, rel):
    ref = with_exact_value(name, mant, scale)
    comparison = compare(ref, np.array(y))
    assert comparison.ulp == ulps
    assert comparison.rel == pytest.approx(rel, rel=1e-15)
    assert comparison.abs == pytest.approx(abs(y - math.ldexp(mant, scale)), rel=1e-15)
    assert flagged(comparison) == {}


def test_log_of_sum_is_far_outside_the_budget():
    # lse([0, -40]) = 4.248354255291589e-18 = 1.2245 * 2^-58: ulp = 2^(-58-52) = 2^-110, so the
    # answer 0.0 of log(sum) is off by 4.248354255291589e-18 * 2^110 = 5.5147e15 ulp.
    ref = refs_of([0.0, -40.0], "float64")["logsumexp"]
    comparison = compare(ref, np.array(0.0))
    assert comparison.ulp == pytest.approx(4.248354255291589e-18 * 2.0**110, rel=1e-15)
    assert comparison.rel == pytest.approx(1.0, rel=1e-15)
    # Budget: 0.5 + (L + q (c0 + c_sum) + W) u / ulp + u |lse| / ulp with L = q = 4.25e-18,
    # W = 40 * 4.25e-18, u = 2^-53: 0.5 + 1.954e-16 * 2^57 + 4.25e-18 * 2^57 = 0.5 + 28.16 + 0.61.
    budget = budget_ulp(ref)
    assert budget == pytest.approx(29.2759, abs=1e-4)
    assert comparison.ulp > 1e12 * budget


# -- exact zeros: ulp(0) is the smallest subnormal ---------------------------------------------

@pytest.mark.parametrize("name", DTYPES)
def test_error_at_an_exact_zero_counts_in_smallest_subnormals(name):
    # softmax of a masked entry is exactly 0, and ulp(0) = min subnormal (docs/numerics.md): an output
    # of one min subnormal is 1 ulp off, a masked entry that leaks 1e-3 is off by 1e-3 / 2^-24 =
    # 1.68e4 ulp in float16 and more in the wider formats, far beyond its budget.
    fmt = FORMATS[name]
    ref = refs_of([0.0, -np.inf], name)["softmax"]
    assert ulp(0.0, fmt) == fmt.min_subnormal
    assert compare(ref, row_of([1.0, fmt.min_subnormal], name)).ulp[1] == 1.0
    leak = compare(ref, row_of([1.0, 1e-3], name)).ulp[1]
    with np.errstate(over="ignore"):  # float64: 1e-3 / 2^-1074 overflows, the metric saturates
        expected = min(np.float64(row_of([1e-3], name)[0]) / fmt.min_subnormal, sys.float_info.max)
    assert leak == pytest.approx(expected, rel=1e-12)
    assert leak > 1e3 * budget_ulp(ref)[1]
    # log_softmax of one element is exactly 0: the same unit.
    ref = refs_of([2.0], name)["log_softmax"]
    assert compare(ref, row_of([fmt.min_subnormal], name)).ulp[0] == 1.0


# -- categories --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DTYPES)
def test_nan_where_a_number_is_expected(name):
    ref = refs_of([1.0, 2.0, 0.5], name)["softmax"]
    got = ref.rounded.copy()
    got[1] = np.nan
    comparison = compare(ref, got)
    assert flagged(comparison) == {"nan_unexpected": [1]}
    summary = summarize(comparison)
    assert (summary["n_elements"], summary["n_measured"]) == (3, 2)  # excluded from the ULPs
    assert summary["max_ulp"] <= 0.5
    assert summary["categories"] == {"nan_unexpected": 1}


@pytest.mark.parametrize("name", DTYPES)
def test_number_where_nan_is_expected(name):
    # A NaN in the row makes every output NaN (the policy); a backend that ignores it is flagged.
    refs = refs_of([1.0, np.nan], name)
    comparison = compare(refs["softmax"], row_of([1.0, 0.0], name))
    assert flagged(comparison) == {"nan_missing": [0, 1]}
    assert summarize(comparison)["max_ulp"] is None  # nothing measured
    assert flagged(compare(refs["softmax"], row_of([np.nan, np.nan], name))) == {}


@pytest.mark.parametrize("name", DTYPES)
def test_infinity_versus_finite(name):
    fmt = FORMATS[name]
    # Expected +inf (lse of a row with +inf), got a finite number or -inf.
    ref = refs_of([1.0, np.inf], name)["logsumexp"]
    assert flagged(compare(ref, np.array(fmt.max))) == {"inf_vs_finite": [0]}
    assert flagged(compare(ref, np.array(-np.inf))) == {"inf_vs_finite": [0]}
    assert flagged(compare(ref, np.array(np.inf))) == {}
    # Expected finite, got inf: the spurious overflow of an unshifted log(sum(exp(x))) at
    # x = exp_overflow + 1 (lse = x + ln 2 is finite).
    x = float(row_of([fmt.exp_overflow + 1], name)[0])
    ref = refs_of([x, x], name)["logsumexp"]
    assert math.isfinite(ref.rounded)
    comparison = compare(ref, np.array(np.inf))
    assert flagged(comparison) == {"inf_vs_finite": [0]}
    assert summarize(comparison)["n_measured"] == 0


@pytest.mark.parametrize("name", DTYPES)
def test_correctly_rounded_overflow_is_not_a_difference(name):
    # log_softmax([max, -max])_1 = -2 max - log1p(e^(-2 max)): finite, but it rounds to -inf.
    fmt = FORMATS[name]
    ref = refs_of([fmt.max, -fmt.max], name)["log_softmax"]
    comparison = compare(ref, row_of([-0.0, -np.inf], name))
    assert flagged(comparison) == {}
    assert comparison.ulp[1] == 0
    # Returning -max instead is measured: the exact -2 max (less a negligible tail) is max/ulp
    # away, with ulp(2 max) = 2^(emax + 1 - p + 1) and max = (2 - 2^(1-p)) 2^emax, i.e.
    # 2^(p-1) - 1/2 ulp (1023.5 for float16).
    comparison = compare(ref, row_of([-0.0, -fmt.max], name))
    assert flagged(comparison) == {}
    assert comparison.ulp[1] == pytest.approx(2.0 ** (fmt.p - 1) - 0.5, rel=1e-12)


@pytest.mark.parametrize("name", DTYPES)
def test_flushed_subnormal(name):
    # softmax([0, g])_1 = e^g / (1 + e^g) is subnormal for g between the two thresholds.
    fmt = FORMATS[name]
    ref = refs_of([0.0, (fmt.exp_subnormal_below + fmt.exp_zero_below) / 2], name)["softmax"]
    assert 0 < ref.rounded[1] < fmt.min_normal
    # For a backend measured to flush (softmax_suite.suites.flushing), the 0 is a category apart ...
    comparison = compare(ref, row_of([1.0, 0.0], name), flush_to_zero=True)
    assert flagged(comparison) == {"flushed_subnormal": [1]}
    assert np.isnan(comparison.ulp[1])  # excluded from the ULP statistics
    summary = summarize(comparison)
    assert (summary["n_measured"], summary["categories"]) == (1, {"flushed_subnormal": 1})
    # ... for any other it is an error like any other: |0 - v| / ulp(v), v / ulp_min ULPs.
    comparison = compare(ref, row_of([1.0, 0.0], name))
    assert flagged(comparison) == {}
    in_units = np.ldexp(ref.mant[1] + ref.mant_lo[1], int(ref.scale[1]) - (fmt.emin - fmt.p + 1))
    assert comparison.ulp[1] == pytest.approx(in_units, rel=1e-12)
    # An exact value below half the smallest subnormal rounds to 0: returning 0 is no flush.
    ref = refs_of([0.0, 1.5 * fmt.exp_zero_below], name)["softmax"]
    assert flagged(compare(ref, row_of([1.0, 0.0], name), flush_to_zero=True)) == {}


@pytest.mark.parametrize("name", DTYPES)
def test_zero_sign(name):
    # log_softmax of one element is +0.0; a masked softmax entry is +0.0; the dominant entry of
    # log_softmax([0, -max]) is -log1p(e^-max) -> -0.0. The wrong sign is counted and measured.
    for values, op, index, wrong in (([2.0], "log_softmax", 0, -0.0),
                                     ([0.0, -np.inf], "softmax", 1, -0.0),
                                     ([0.0, -FORMATS[name].max], "log_softmax", 0, 0.0)):
        ref = refs_of(values, name)[op]
        got = ref.rounded.copy()
        got[index] = wrong
        comparison = compare(ref, got)
        assert flagged(comparison) == {"zero_sign": [index]}
        assert comparison.ulp[index] <= 0.5  # included in the ULP statistics
        summary = summarize(comparison)
        assert summary["n_measured"] == summary["n_elements"]
        assert summary["categories"] == {"zero_sign": 1}


def test_summary_fields():
    # v = 1 + 2^-30 in float32 (see HAND_CHECKED), y = 1 + 2^-23: 1 - 2^-7 ulp.
    ref = with_exact_value("float32", 1 + 2.0**-30, 0)
    summary = summarize(compare(ref, np.array(1 + 2.0**-23)))
    assert summary == {
        "n_elements": 1, "n_measured": 1, "max_ulp": 1 - 2.0**-7, "p50_ulp": 1 - 2.0**-7,
        "p99_ulp": 1 - 2.0**-7, "max_rel": pytest.approx((2.0**-23 - 2.0**-30) / (1 + 2.0**-30)),
        "max_abs": 2.0**-23 - 2.0**-30, "categories": {},
        "ulp_histogram": [0, 1],  # 1 - 2^-7 lies in the bin (0.5, 1]
    }
    assert set(compare(ref, np.array(1.0)).categories) == set(CATEGORIES)


def test_ulp_histogram_bins():
    # Bin 0 is (0, 0.5] (correctly rounded), bin 1 (0.5, 1], bin k+1 (2^(k-1), 2^k], the last
    # bin above 2^20; an edge belongs to the bin it closes.
    ulps = np.array([0.0, 0.5, 0.5000001, 1.0, 1.5, 3.0, 4.0, 2.0**20, 2.0**20 + 1, 1e300])
    assert ulp_histogram(ulps) == [2, 2, 1, 2, *[0] * 17, 1, 2]
    assert ulp_histogram(np.array([0.25, 0.75])) == [1, 1]  # trailing empty bins left off
    assert ulp_histogram(np.array([])) == []


# -- budgets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DTYPES)
def test_budgets_are_at_least_half_an_ulp(name):
    for row in rows(name):
        for op, ref in forward_references(row, -1).items():
            budget = budget_ulp(ref)
            finite = np.isfinite(ref.mant)
            assert np.all(budget[finite] >= 0.5), (op, row)
            assert np.all(np.isinf(budget[~finite]))


def test_budget_grows_with_n():
    # Rows of zeros: softmax = 1/n = 2^-k exactly, |v| / ulp(v) = 2^(p-1), so the softmax budget is
    # 0.5 + (c0 + c_sum ceil(log2 n)) u 2^(p-1) = 0.5 + (3 + 2 log2 n) / 2: 6 for n = 16 and 18 for
    # n = 65536. logsumexp = ln n: the ulp grows with it, so compare absolute allowances instead.
    small, large = (forward_references(np.zeros(n, np.float32), -1) for n in (16, 65536))
    assert budget_ulp(small["softmax"]) == pytest.approx(6.0, abs=1e-12)
    assert budget_ulp(large["softmax"]) == pytest.approx(18.0, abs=1e-12)
    fmt = FORMATS["float32"]
    for op in ("logsumexp", "log_softmax"):
        allowance = [(budget_ulp(r[op]).flat[0] - 0.5) * ulp(float(r[op].rounded.flat[0]), fmt)
                     for r in (small, large)]
        assert allowance[1] > 3 * allowance[0]


def test_budget_grows_with_the_gap():
    # softmax([0, -g])_1 has relative budget (c0 + c_exp (g + W) + c_sum) u with W = g y_1:
    # the gap term. log_softmax_1 gets c_exp g u absolute on top of the logsumexp error.
    fmt = FORMATS["float64"]
    relative, absolute = [], []
    for g in (1.0, 10.0, 30.0, 100.0):
        refs = refs_of([0.0, -g], "float64")
        softmax, log_softmax = refs["softmax"], refs["log_softmax"]
        v = float(softmax.rounded[1])
        y1 = math.exp(-g) / (1 + math.exp(-g))
        rel = (budget_ulp(softmax)[1] - 0.5) * ulp(v, fmt) / v
        assert rel == pytest.approx((3 + g + g * y1 + 2) * fmt.u, rel=1e-6)
        relative.append(rel)
        absolute.append((budget_ulp(log_softmax)[1] - 0.5) * ulp(float(log_softmax.rounded[1]), fmt))
    assert relative == sorted(relative) and len(set(relative)) == 4
    assert absolute == sorted(absolute) and len(set(absolute)) == 4


@pytest.mark.parametrize("name", DTYPES)
def test_budget_accepts_correct_and_rejects_far_answers(name):
    # Every correctly rounded output is inside its budget (0.5 <= budget); ten budgets away is not.
    ref = refs_of(5 * np.random.default_rng(2).standard_normal(32), name)["softmax"]
    budget = budget_ulp(ref)
    assert np.all(compare(ref, ref.rounded).ulp <= budget)
    v = np.ldexp(ref.mant + ref.mant_lo, ref.scale)
    far = v + 10 * budget * np.array([ulp(float(e), FORMATS[name]) for e in v])
    assert np.all(compare(ref, far).ulp > budget)


def test_all_ops_have_budgets():
    refs = refs_of([0.5, 1.5], "float32")
    assert set(refs) == set(FORWARD_OPS)
    for ref in refs.values():
        assert np.all(np.isfinite(budget_ulp(ref)))
