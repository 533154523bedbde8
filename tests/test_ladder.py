"""The length ladder and every bit pattern (docs/low-precision.md): the cases, the oracle's uniform
rows and short rows, the error per binade of the gap, and the self-tests: a saturating float16
accumulator and a bfloat16 one that the catalogue's long rows let pass and the ladder catches."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from softmax_suite.backends.custom import load_spec
from softmax_suite.formats import format_of
from softmax_suite.ops import SOFTMAX_FORWARD_OPS
from softmax_suite.oracle import cache, fastpath
from softmax_suite.oracle.metrics import compare
from softmax_suite.oracle.rounding import round_to_format
from softmax_suite.protocol import Backend
from softmax_suite.runner.config import Settings
from softmax_suite.suites import ladder, patterns
from softmax_suite.suites.accuracy import Target, case_cotangents, case_input, run
from softmax_suite.suites.cases import CASES, LADDER, LADDER_ROWS, PATTERNS, select_cases
from softmax_suite.suites.cotangents import build_cotangents

SETTINGS = Settings()
SIXTEEN_BIT = ("float16", "bfloat16")


@functools.cache
def backend(spec: str) -> Backend:
    return load_spec(spec)


def result(spec: str, op: str, dtype: str, case: str, cotangent: str | None = None) -> dict:
    return run(Target(op, spec, "cpu", dtype, case, cotangent), backend(spec), SETTINGS)


def test_every_rung_has_three_rows_of_its_exact_length() -> None:
    rungs = (*ladder.LENGTHS, *ladder.SLOW_LENGTHS)
    assert len(LADDER) == 3 * len(rungs)
    for case in LADDER:
        assert case.row_length == int(case.name.rsplit("_n", 1)[1])
        assert case.ladder in LADDER_ROWS and case.name.startswith(f"ladder_{case.ladder}_n")
    # 2^24 + 1 zeros: a float32 sum of ones stalls at 2^24; asked with --slow only.
    slow = [case.name for case in LADDER if "slow" in case.tags]
    assert slow == [f"ladder_{rows}_n16777217" for rows in LADDER_ROWS]
    assert not set(slow) & {case.name for case in select_cases(None)}
    assert np.all(CASES["ladder_uniform_n65520"].build("float16") == 0)


def exact_rounded(value: Fraction | mpmath.mpf, dtype: str) -> float:
    mpf = mpmath.mpf(value.numerator) / value.denominator if isinstance(value, Fraction) else value
    return round_to_format(mpf._mpf_, format_of(dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("n", [257, 65519, 65520, 2**20])
def test_a_uniform_row_is_one_exact_value_per_op(n: int, dtype: str) -> None:
    # softmax 1/n, log_softmax -log n, logsumexp log n, each rounded once (mpmath at 200 bits);
    # under the constant cotangent 0.75 the softmax and log_softmax VJPs are exactly 0 and the
    # logsumexp VJP is 0.75/n.
    x = np.zeros((1, n), format_of(dtype).np_dtype)
    g, g_row = build_cotangents("constant", 1, x.shape, -1, format_of(dtype))
    with mpmath.workprec(200):
        log_n = mpmath.log(n)
    expected = {"softmax": exact_rounded(Fraction(1, n), dtype),
                "log_softmax": exact_rounded(-log_n, dtype),
                "logsumexp": exact_rounded(log_n, dtype), "softmax_vjp": 0.0, "log_softmax_vjp": 0.0,
                "logsumexp_vjp": exact_rounded(Fraction(3, 4 * n), dtype)}
    for op, value in expected.items():
        reference = cache.reference(op, x, -1, (g, g_row) if op.endswith("_vjp") else None)
        assert np.all(reference.rounded.astype(np.float64) == value), op


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_every_finite_pattern_once_and_every_nan_payload_apart(dtype: str) -> None:
    fmt = format_of(dtype)
    bits = "u2"
    finite = CASES["patterns_zero_x"].build(dtype)[:, 1].view(bits)
    special = CASES["patterns_zero_x_nonfinite"].build(dtype)[:, 1].view(bits)
    # float16: 2 x 31 exponents x 1024 significands finite; bfloat16: 2 x 255 x 128.
    assert finite.size == {"float16": 63488, "bfloat16": 65280}[dtype]
    assert sorted({*finite.tolist(), *special.tolist()}) == list(range(65536))
    assert np.isnan(special.view(fmt.np_dtype).astype(np.float32)).sum() == special.size - 2
    rows = CASES["patterns_x_max"].build(dtype)
    with np.errstate(invalid="ignore"):
        wide = rows.astype(np.float64)
    assert np.all(wide[:, 0] >= wide[:, 1:].max(axis=1))  # x is the maximum of its row


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_the_fast_oracle_decides_short_rows_as_mpmath_does(dtype: str) -> None:
    # The certified fast path takes rows of two entries and more: on every 64th bit pattern of each
    # row form, every op's rounded value is the one of the mpmath evaluation, bit for bit.
    for kind in patterns.ROWS:
        x = np.ascontiguousarray(patterns.rows_of(kind)(None, format_of(dtype))[::64])
        cotangents = build_cotangents("random", 7, x.shape, -1, format_of(dtype))
        for op in ("softmax", "log_softmax", "logsumexp", "softmax_vjp", "log_softmax_vjp", "logsumexp_vjp"):
            given = cotangents if op.endswith("_vjp") else None
            cache.clear()
            fast = cache.reference(op, x, -1, given)
            cache.clear()
            with fastpath.disabled():
                slow = cache.reference(op, x, -1, given)
            assert fast.certificate.get("float64", 0) > 0
            np.testing.assert_array_equal(fast.rounded.view("u2"), slow.rounded.view("u2"),
                                          err_msg=f"{kind} {op}")


def test_the_error_per_binade_shows_where_a_missing_max_shift_breaks() -> None:
    # softmax of [0, x] as exp(x) / sum(exp(x)) in float32 (tests.bad_softmax.NoMaxShift): exp
    # overflows past 88.72, so each x >= 88.75 (float16's next value) gives inf / inf = NaN at x
    # (and 1 / inf = 0 beside it, right). Binade 6 ([64, 128)) holds 628 such x (88.75 to 127.9375
    # in steps of 1/16), every binade from 7 its 1024 positive values; below 64 every row is within
    # budget.
    record = result("tests.bad_softmax:NoMaxShift", "softmax", "float16", "patterns_zero_x")
    assert record["status"] == "fail" and record["pattern"]["row"] == "[0, x]"
    bins = {entry["binade"]: entry for entry in record["pattern"]["by_gap"]}
    assert set(bins) == {None, *range(-24, 16)}  # 0, then every binade of float16's finite values
    assert bins[None]["count"] == 2 and sum(entry["count"] for entry in bins.values()) == 63488
    assert all(bins[k]["semantic"] == 0 and bins[k]["max_ratio"] <= 1 for k in (None, *range(-24, 6)))
    assert bins[6]["semantic"] == 628
    assert all(bins[k]["semantic"] == 1024 for k in range(7, 16))
    correct = result("tests.bad_softmax:Float64Upcast", "softmax", "float16", "patterns_zero_x")
    assert correct["status"] == "pass"
    assert all(entry["semantic"] == 0 and entry["max_ratio"] <= 1 for entry in correct["pattern"]["by_gap"])


@pytest.mark.parametrize("case", [case.name for case in PATTERNS])
@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_a_correct_implementation_passes_every_pattern(case: str, dtype: str) -> None:
    failures = [f"{op}: {record['message']}" for op in SOFTMAX_FORWARD_OPS
                if (record := result("tests.bad_softmax:Float64Upcast", op, dtype, case))["status"] != "pass"]
    assert failures == []


# The ladder up to 2^17 in the 16-bit formats for the correct implementation (2^20 and the others
# run in the default run, and the planted accumulators below meet 2^20 in float16 and bfloat16).
SHORT_RUNGS = [case.name for case in LADDER if case.row_length <= 2**17]


@pytest.mark.parametrize("case", SHORT_RUNGS)
def test_a_correct_implementation_is_right_at_every_length(case: str) -> None:
    failures = [f"{op} {dtype}: {record['message']}" for dtype in SIXTEEN_BIT for op in SOFTMAX_FORWARD_OPS
                if (record := result("tests.bad_softmax:Float64Upcast", op, dtype, case))["status"] != "pass"]
    assert failures == []


# The catalogue's rows of 1000 entries and more: where a narrow accumulator would show, if anywhere.
LONG_CATALOGUE = ["random_n1k_s1", "random_n1k_s10", "random_n1k_s100", "random_n100k_s10", "absorb_gap_n1k",
                  "long_random_n65k", "long_equal_n65k", "long_random_n1M"]


def ladder_verdicts(spec: str, dtype: str, op: str, lengths) -> dict[int, bool]:
    return {n: all(result(spec, op, dtype, f"ladder_{rows}_n{n}")["status"] == "pass" for rows in LADDER_ROWS)
            for n in lengths}


def test_a_saturating_float16_accumulator_is_caught_only_by_the_ladder() -> None:
    spec = "tests.bad_accumulators:SaturatingFloat16Sum"
    for case in LONG_CATALOGUE:
        for op in SOFTMAX_FORWARD_OPS:
            assert result(spec, op, "float16", case)["status"] == "pass", (case, op)
    # Safe up to 65536, where 65535 ones clamp to 65504 (0.12 ULP); at 2^17 the top add clamps
    # 65504 + 65504, half the sum: softmax 2^-16 where the exact value is 2^-17 (128 ULP of the
    # subnormal quantum 2^-24, budget 3.8) and lse = log(65505) = 11.09 where it is log(2^17) = 11.78.
    assert ladder_verdicts(spec, "float16", "softmax", [65519, 65520, 65536, 2**17, 2**20]) == {
        65519: True, 65520: True, 65536: True, 2**17: False, 2**20: False}
    record = result(spec, "softmax", "float16", "ladder_uniform_n131072")
    worst = record["metrics"]["worst"]
    assert worst["got"] == 2.0**-16 and float(worst["exact"]) == 2.0**-17
    assert record["metrics"]["max_ulp"] == 128
    lse = result(spec, "logsumexp", "float16", "ladder_uniform_n131072")
    assert lse["status"] == "fail" and lse["metrics"]["worst"]["got"] == 11.09375


def test_a_bfloat16_accumulator_is_caught_only_by_the_ladder() -> None:
    spec = "tests.bad_accumulators:KahanBfloat16Sum"
    for case in LONG_CATALOGUE:
        record = result(spec, "softmax", "bfloat16", case)
        assert record["status"] == "pass", (case, record["message"])
    # long_random_n1M, the catalogue's longest, at 0.62 of its budget; the ladder's 2^17 passes and
    # 2^20 equal logits give 7.63e-6 where the exact value is 2^-20 = 9.54e-7 (896 ULP, budget 22).
    longest = result(spec, "softmax", "bfloat16", "long_random_n1M")
    assert longest["bound"]["ratio"] == pytest.approx(0.616, abs=0.01)
    assert ladder_verdicts(spec, "bfloat16", "softmax", [2**17, 2**20]) == {2**17: True, 2**20: False}
    record = result(spec, "softmax", "bfloat16", "ladder_uniform_n1048576")
    assert record["metrics"]["worst"]["got"] == pytest.approx(7.62939453125e-06)
    assert record["metrics"]["max_ulp"] == 896


def test_a_result_far_below_its_ulp_is_measured_from_zero() -> None:
    # softmax_vjp of [x, 0, 0, 0] in float16 with x = -7748: the exact value of entry 3 is about
    # 1.16 * 2^-11183 (the others' cotangents average to g_3; what is left is e^-7748 small), which
    # rounds to -0. A backend's 4.16e-5 is 698 ULP of float16's 2^-24, not an overflow to inf ULP.
    row = 61329  # the pattern 0xef91, -7748
    x = case_input("patterns_x_zeros", "float16")[row:row + 1]
    g, g_row = case_cotangents("patterns_x_zeros", "random", "float16")
    reference = cache.reference("softmax_vjp", x, -1, (g[row:row + 1], g_row[row:row + 1]))
    assert reference.scale[0, 3] < -11000 and reference.rounded[0, 3] == 0
    got = reference.rounded.copy()
    got[0, 3] = np.float16(4.16e-5)
    assert compare(reference, got).ulp[0, 3] == pytest.approx(4.16e-5 / 2.0**-24, rel=1e-3)
    assert math.isfinite(compare(reference, got).ulp[0, 3])
