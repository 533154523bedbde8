"""The suite catches each deliberately wrong softmax of tests.bad_softmax on the cases aimed at its bug,
and passes the correct Float64Upcast on every case, dtype and forward op."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from softmax_suite.backends.custom import load_spec, wrap
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # the float8 formats: tests/test_float8.py
from softmax_suite.formats import format_of
from softmax_suite.ops import SOFTMAX_FORWARD_OPS as FORWARD_OPS
from softmax_suite.oracle import cache
from softmax_suite.protocol import Backend
from softmax_suite.runner.config import Settings
from softmax_suite.suites.accuracy import Target, case_cotangents, case_input, run
from softmax_suite.suites.cases import CASES, select_cases

SETTINGS = Settings()
SIXTEEN_BIT = ["float16", "bfloat16"]
WIDE = ["float32", "float64"]


@functools.cache
def backend(name: str) -> Backend:
    return load_spec(f"tests.bad_softmax:{name}")


def result(name: str, op: str, dtype: str, case: str) -> dict:
    return run(Target(op, f"tests.bad_softmax:{name}", "cpu", dtype, case), backend(name), SETTINGS)


def assert_flagged(record: dict, failure: str) -> None:
    assert record["status"] == "fail", record["message"]
    assert record["failure"] == failure, record["message"]


# Cases in catalogue order, so that each input's oracle is computed once and then reused by the
# targeted tests below (the oracle cache is per process and keyed by the input bits).
# (Attention's cases pass a scale or a mask, which these functions do not take: tests/test_attention.py;
# the loss cases are the loss ops': tests/test_losses.py.)
# The length ladder and the bit patterns: tests/test_ladder.py.
PLAIN = [case.name for case in select_cases(None) if not case.options and not case.loss
         and not {"ladder", "patterns"} & case.tags]


@pytest.mark.parametrize("case", PLAIN)
def test_correct_implementation_passes_every_case(case: str) -> None:
    failures = []
    for dtype in set(CASES[case].dtypes) & set(DTYPES):  # it declares no float8: tests/test_float8.py
        for op in FORWARD_OPS:
            record = result("Float64Upcast", op, dtype, case)
            if record["status"] != "pass":
                failures.append(f"{op} {dtype}: {record['status']}: {record['message']}")
    assert failures == []


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_max_shift_overflows_on_equal_large(dtype: str) -> None:
    # Rows of six 1e4, six max, six exp_overflow and six -max. exp(1e4) and exp(max) are inf
    # (inf / inf = NaN) and exp(-max) is 0 (0 / 0 = NaN): 18 NaN. Six exp(exp_overflow) sum to inf
    # in bfloat16..float64 (outputs 0: an accuracy failure besides), not in float16's float32
    # working format.
    softmax = result("NoMaxShift", "softmax", dtype, "equal_large")
    assert_flagged(softmax, "semantic")
    assert softmax["semantic"] == {"nan_unexpected": 18}
    assert "nan_unexpected, e.g. at index [0, 0] got nan" in softmax["message"]
    # logsumexp = log(inf) = inf, or log(0) = -inf for the -max row, where the exact value is
    # finite (1e4 + ln 6 = 10001.79 for the first row).
    lse = result("NoMaxShift", "logsumexp", dtype, "equal_large")
    assert_flagged(lse, "semantic")
    assert lse["semantic"] == {"inf_vs_finite": 3 if dtype == "float16" else 4}
    log_softmax = result("NoMaxShift", "log_softmax", dtype, "equal_large")
    assert_flagged(log_softmax, "semantic")


@pytest.mark.parametrize("dtype", ["bfloat16", *WIDE])
def test_no_max_shift_overflows_at_the_overflow_edge(dtype: str) -> None:
    # The four entries equal to the next value above exp_overflow give exp = inf and inf / inf.
    record = result("NoMaxShift", "softmax", dtype, "overflow_edge")
    assert_flagged(record, "semantic")
    assert record["semantic"] == {"nan_unexpected": 4}
    assert_flagged(result("NoMaxShift", "logsumexp", dtype, "overflow_edge"), "semantic")


def test_no_max_shift_is_judged_by_its_effect_not_its_form() -> None:
    # float16 logits stay below 11.09, whose exp the float32 working format holds: no overflow,
    # so no failure. A budget that failed this would punish harmless code.
    for op in FORWARD_OPS:
        assert result("NoMaxShift", op, "float16", "overflow_edge")["status"] == "pass"


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_of_softmax_loses_the_dominant_entry(dtype: str) -> None:
    # The leader's log_softmax is -log1p(t) with t ~ 2u (1.9u to 2.3u here); log of the rounded
    # y_k = 1/(1 + t) keeps at best one or two bits of it. Its softmax and logsumexp are the
    # correct ones and pass.
    record = result("LogOfSoftmax", "log_softmax", dtype, "dominant_gap_above")
    assert_flagged(record, "accuracy")
    worst = record["metrics"]["worst"]
    x = case_input("dominant_gap_above", dtype)
    row = worst["index"][0]
    assert x[tuple(worst["index"])] == x[row].max(), "the worst element should be the row's leader"
    assert abs(float(worst["exact"])) < 3 * format_of(dtype).u
    assert record["metrics"]["max_ulp"] > record["bound"]["budget_ulp"]
    for op in ("softmax", "logsumexp"):
        assert result("LogOfSoftmax", op, dtype, "dominant_gap_above")["status"] == "pass"


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_of_softmax_turns_underflow_into_minus_inf(dtype: str) -> None:
    # Every probability that rounds to 0 becomes log(0) = -inf, where the exact log_softmax is a
    # finite -(gap + log1p(t)): one inf_vs_finite per exact softmax that rounds to zero.
    record = result("LogOfSoftmax", "log_softmax", dtype, "underflow_gaps")
    assert_flagged(record, "semantic")
    x = case_input("underflow_gaps", dtype)
    zeros = int((cache.reference("softmax", x, CASES["underflow_gaps"].axis).rounded == 0).sum())
    assert zeros > 0
    assert record["semantic"] == {"inf_vs_finite": zeros}


# 65536 equal logits: every exp is 1, and the float16 sum of ones stalls at 2048 (2048 + 1 ties
# to even, back to 2048), so softmax is 1/2048 = 2^-11 where the exact value is 2^-16. In ULPs
# of 2^-16: float16 2^-24 (2^-16 is subnormal there), bfloat16 2^-23; hence (2^-11 - 2^-16)/ulp.
STALLED = {"float16": 2**13 - 2**8, "bfloat16": 2**12 - 2**7}


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_float16_accumulation_stalls_on_long_equal_rows(dtype: str) -> None:
    record = result("Float16Accumulation", "softmax", dtype, "long_equal_n65k")
    assert_flagged(record, "accuracy")
    worst = record["metrics"]["worst"]
    assert worst["got"] == 2.0**-11 and float(worst["exact"]) == 2.0**-16
    assert record["metrics"]["max_ulp"] == STALLED[dtype] == worst["ulp"]
    assert record["bound"]["budget_ulp"] < 20
    # lse = log1p(t) with t stalled at 2048 instead of 65535: log(2049) = 7.625 against 11.09.
    lse = result("Float16Accumulation", "logsumexp", dtype, "long_equal_n65k")
    assert_flagged(lse, "accuracy")
    assert lse["metrics"]["worst"]["got"] == 7.625
    assert float(lse["metrics"]["worst"]["exact"]) == pytest.approx(np.log(65536), rel=1e-15)


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_float16_accumulation_fails_long_random_rows(dtype: str) -> None:
    # N(0, 1) logits, max ~4.3: 65536 terms of ~0.02 each; once the float16 partial sum passes a
    # few hundred, most terms are below half its ULP and vanish. The sum comes out several times
    # too small, so softmax is several times too large: an accuracy failure, not a semantic one.
    record = result("Float16Accumulation", "softmax", dtype, "long_random_n65k")
    assert_flagged(record, "accuracy")
    worst = record["metrics"]["worst"]
    assert worst["got"] / float(worst["exact"]) > 2
    assert record["bound"]["ratio"] > 10


@pytest.mark.parametrize("dtype", WIDE)
def test_log_sum_not_log1p_loses_lse_near_zero(dtype: str) -> None:
    # Rows 0 and 4 have max 0 and t ~ 2u: lse = log1p(t) ~ t, but log(sum) sees sum = 1 + t
    # rounded to the grid of spacing 2u above 1, so it returns a multiple of ~2u = 2^(1-p).
    record = result("LogSumNotLog1p", "logsumexp", dtype, "dominant_gap_above")
    assert_flagged(record, "accuracy")
    worst = record["metrics"]["worst"]
    assert worst["index"] in ([0], [4])
    assert case_input("dominant_gap_above", dtype)[worst["index"][0]].max() == 0
    step = 2.0 ** (1 - format_of(dtype).p)
    assert worst["got"] == pytest.approx(round(worst["got"] / step) * step, rel=2**-20)
    assert_flagged(result("LogSumNotLog1p", "log_softmax", dtype, "dominant_gap_above"), "accuracy")
    assert result("LogSumNotLog1p", "softmax", dtype, "dominant_gap_above")["status"] == "pass"


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_log_sum_not_log1p_is_harmless_in_a_float32_working_format(dtype: str) -> None:
    # For 16-bit outputs t ~ 2^-p is ~2^(24-p) float32 ULPs of 1: log(sum) keeps 13+ bits of
    # it, more than the output holds. The suite must not fail what cannot be seen in the result.
    assert result("LogSumNotLog1p", "logsumexp", dtype, "dominant_gap_above")["status"] == "pass"


def test_a_failure_record_names_the_element_and_its_budget() -> None:
    record = result("LogSumNotLog1p", "logsumexp", "float64", "dominant_gap_above")
    metrics, bound = record["metrics"], record["bound"]
    worst = metrics["worst"]
    assert metrics["max_ulp"] >= worst["ulp"] > bound["budget_ulp"] > 0.5
    assert bound["ratio"] == pytest.approx(worst["ulp"] / bound["budget_ulp"])
    assert bound["formula"] == "E_L + u |lse|"
    assert bound["constants"] == {"c0": 3.0, "c_exp": 1.0, "c_sum": 2.0}
    message = record["message"]
    assert f"at index {worst['index']}" in message
    assert "exceeds its budget of" in message
    assert f"got {worst['got']!r}" in message and f"exact {worst['exact']}" in message
    assert record["shape"] == [8, 8] and record["seed"] == CASES["dominant_gap_above"].resolved_seed


def _raises(x, axis):
    raise RuntimeError("kernel launch failed")


@pytest.mark.parametrize(("function", "words"), [
    (_raises, "softmax raised RuntimeError: kernel launch failed"),
    (lambda x, axis: np.sum(x, axis=axis), "returned shape (), expected (4,)"),
    (lambda x, axis: np.ones(x.shape), "returned float64 for float32 input"),
])
def test_a_crashing_or_misshapen_backend_is_an_error_record(function, words) -> None:
    record = run(Target("softmax", "inline", "cpu", "float32", "glossary"),
                 wrap(function, default_name="inline"), SETTINGS)
    assert record["status"] == "error" and record["failure"] == "error"
    assert words in record["message"]


def test_duration_is_the_backends_time_not_the_oracles(monkeypatch: pytest.MonkeyPatch) -> None:
    # A cold oracle costs seconds (8 s for random_n100k_s10); stand it in by a 0.25 s one. The
    # backend's softmax of 4 elements takes microseconds, so duration_s must stay far below 0.25.
    real_reference = cache.reference

    def reference(*args):
        time.sleep(0.25)
        return real_reference(*args)

    monkeypatch.setattr(cache, "reference", reference)
    record = result("Float64Upcast", "softmax", "float32", "glossary")
    assert record["status"] == "pass"
    assert record["duration_s"] < 0.1


# Gradients: the VJPs of tests.bad_softmax against the exact VJP oracle, per cotangent kind.

VJP_OPS = ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")
# The wrong gradients and the VJP ops each one breaks (the only ops it has).
WRONG_GRADIENTS = {"MissingInnerProduct": ("softmax_vjp",), "WrongSign": ("softmax_vjp",),
                   "LogSoftmaxVjpTimesG": ("log_softmax_vjp",),
                   "Float16GradientAccumulation": ("softmax_vjp", "log_softmax_vjp")}
# (case, dtype) pairs of the default catalogue where no cotangent kind catches a wrong gradient
# (measured; every other pair catches it with at least one kind):
# - empty: nothing to compare;
# - single_element for WrongSign and LogSoftmaxVjpTimesG: y = 1, so the exact softmax VJP is 0
#   (and so is its negation), and g - y g = g - y sum(g).
# - long_random_n1M in float16 and bfloat16 for MissingInnerProduct: over 2^20 random N(0, 1)
#   cotangents, <g, y> = -0.0022 (measured), 2.9 u (|g_j| + A) in float16 at |g_j| = 0.8,
#   0.35 u in bfloat16, while the budget grants (rho_j + 2) u (|g_j| + A) with
#   rho_j >= c0 + c_sum ceil(log2 n) = 43: dropping it is within what a correct 16-bit sum may lose;
#   likewise for LogSoftmaxVjpTimesG, whose error y_j |sum(g) - g_j| ~ 916 y_j (measured) is below
#   the 16-bit allowance u y_j sum|g_i| (rho_j + 22) with sum|g_i| = 836891: random signs cancel
#   in sum(g), not in the sum of magnitudes a correct summation may err by.
UNCAUGHT = {"empty"}
LONG_16_BIT = {"long_random_n1M/float16", "long_random_n1M/bfloat16"}
UNCAUGHT_BY = {"MissingInnerProduct": UNCAUGHT | LONG_16_BIT, "WrongSign": UNCAUGHT | {"single_element"},
               "LogSoftmaxVjpTimesG": UNCAUGHT | LONG_16_BIT | {"single_element"}}
# Float16GradientAccumulation is Float64UpcastGradients in float32 and float64, and in 16-bit
# dtypes only loses the sums of the constant cotangent, whose terms all have one sign: sum(g) =
# 0.75 n (its log_softmax VJP) and, over 65536 entries or past absorb_gap_n1k's maximum (whose
# later terms are at most about half an ULP of the partial sum), <g, y> = 0.75 (its softmax VJP).
# A random cotangent's partial sums wander around 0 and do not stall. Measured, the (op, cotangent)
# pairs that catch it, by (case, dtype); it passes everything else:
F16_LOG_SUM = {("log_softmax_vjp", "constant")}
F16_BOTH_SUMS = {("softmax_vjp", "constant"), ("log_softmax_vjp", "constant")}
F16_CAUGHT = {
    **{f"{case}/{dtype}": F16_LOG_SUM for dtype in SIXTEEN_BIT
       for case in ("random_n1k_s1", "random_n1k_s10", "random_n1k_s100", "random_n100k_s10",
                    "online_rising_max")},  # (rows of 1024, like the n1k rows)
    "long_random_n65k/float16": F16_BOTH_SUMS, "long_random_n65k/bfloat16": F16_BOTH_SUMS,
    "long_equal_n65k/float16": F16_BOTH_SUMS, "long_equal_n65k/bfloat16": F16_BOTH_SUMS,
    "strided/bfloat16": F16_LOG_SUM,
    "absorb_gap_n1k/float16": F16_BOTH_SUMS, "absorb_gap_n1k/bfloat16": F16_BOTH_SUMS,
}


def vjp_result(name: str, op: str, dtype: str, case: str, cotangent: str,
               settings: Settings = SETTINGS) -> dict:
    return run(Target(op, f"tests.bad_softmax:{name}", "cpu", dtype, case, cotangent), backend(name),
               settings)


def _oracle_work(pair: tuple[str, str]) -> int:
    case = CASES[pair[0]]
    return case_input(case.name, pair[1]).size * len(case.cotangents)


def _spread(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs, the long-row ones (3 to 13 s of oracle each) first and each followed by a share
    of the short ones: xdist hands out runs of consecutive items, which then carry like work."""
    ordered = sorted(pairs, key=_oracle_work, reverse=True)
    heavy = [pair for pair in ordered if _oracle_work(pair) >= 100_000]
    light = ordered[len(heavy):]
    step = len(light) // (2 * len(heavy))
    spread = []
    for i, pair in enumerate(heavy):
        spread += [pair, *light[i * step:(i + 1) * step]]
    return spread + light[len(heavy) * step:]


# One item per (case, dtype), so that xdist spreads the oracle (72 s of it over the whole
# non-slow catalogue on one core, 32 s of that for random_n100k_s10) over its workers; each
# exact VJP reference of a (case, dtype, cotangent) is computed once and judged for every
# backend: the wrong ones' aggregate is checked here, not in tests of its own.
#
# Measured (numpy 2, x86-64 with an 80-bit long double; before long_random_n1M joined the default
# catalogue and added 4 results per op, all passed): Float64UpcastGradients passes all 1200
# (case, dtype, cotangent, op) results; its worst ratio measured/budget is 0.4994
# (log_softmax_vjp, float32, strided, random: 0.4999 ULP against a budget of 1.0005 ULP), its
# largest error 0.524 ULP (softmax_vjp, float64, random_n1k_s100, mixed). With plain float64 for
# float64 inputs it still passed, with a worst ratio of 0.956 (logsumexp_vjp, random_n1k_s100,
# random: 496 ULP from the rounding of x_j - a, amplified by exp).
# Of the 400 (case, dtype, cotangent) results of its op, MissingInnerProduct fails 366,
# LogSoftmaxVjpTimesG 356 and WrongSign 262 (all 104 with the constant cotangent pass: the exact
# VJP is 0, and so is its negation). Float16GradientAccumulation fails 15 of its 800 results.
@pytest.mark.parametrize(("case", "dtype"), [
    pytest.param(*pair, id="-".join(pair))
    for pair in _spread([(case.name, dtype) for case in select_cases(None) if not case.options
                         and not case.loss and not {"ladder", "patterns"} & case.tags
                         for dtype in case.dtypes if dtype in DTYPES])])
def test_correct_gradients_pass_and_wrong_ones_are_caught(case: str, dtype: str) -> None:
    failures = []
    caught: dict[str, set] = {name: set() for name in WRONG_GRADIENTS}
    for kind in CASES[case].cotangents:
        for op in VJP_OPS:
            record = vjp_result("Float64UpcastGradients", op, dtype, case, kind)
            if record["status"] != "pass":
                failures.append(f"{op} {kind}: {record['status']}: {record['message']}")
        for name, ops in WRONG_GRADIENTS.items():
            for op in ops:
                record = vjp_result(name, op, dtype, case, kind)
                assert record["status"] in ("pass", "fail"), record["message"]
                if record["status"] == "fail":
                    caught[name].add((op, kind))
    assert failures == []
    pair = f"{case}/{dtype}"
    for name, uncaught in UNCAUGHT_BY.items():
        assert bool(caught[name]) or case in uncaught or pair in uncaught, f"{name} passes {pair}"
    assert caught["Float16GradientAccumulation"] == F16_CAUGHT.get(pair, set())
    if "constant" in CASES[case].cotangents:
        assert ("softmax_vjp", "constant") not in caught["WrongSign"]


def _glossary_vjp_parts(dtype: str, kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(y, g, <g, y>) of the glossary row in float64, from the input and cotangent bits."""
    x = case_input("glossary", dtype).astype(np.float64)
    g = case_cotangents("glossary", kind, dtype)[0].astype(np.float64)
    y = np.exp(x - x.max()) / np.sum(np.exp(x - x.max()))
    return y, g, float(np.dot(g, y))


# Measured on glossary (n = 4), worst max_ulp and ratio over the cotangent kinds random, one_hot,
# mixed (and constant where it is caught); e.g. random: float16 1090 ULP (ratio 50),
# bfloat16 137 ULP (6.9), float32 8.9e6 ULP (4.5e5), float64 4.8e15 ULP (2.4e14).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["random", "one_hot", "constant", "mixed"])
def test_missing_inner_product_is_caught_on_the_glossary(dtype: str, kind: str) -> None:
    # y g instead of y (g - <g, y>): wrong by y_j <g, y>. With g = 0.75 the exact VJP is 0
    # everywhere and y g is 0.75 y, e.g. 0.411 for the leader (y = 0.548).
    record = vjp_result("MissingInnerProduct", "softmax_vjp", dtype, "glossary", kind)
    assert_flagged(record, "accuracy")
    assert record["bound"]["ratio"] > 5
    worst = record["metrics"]["worst"]
    y, g, inner = _glossary_vjp_parts(dtype, kind)
    j = worst["index"][0]
    u = format_of(dtype).u
    assert worst["got"] == pytest.approx(y[j] * g[j], rel=4 * u, abs=u * y[j])
    assert abs(worst["got"] - float(worst["exact"])) == pytest.approx(y[j] * abs(inner), rel=8 * u)


# Measured on glossary, random: float16 3586 ULP (ratio 155), bfloat16 448 ULP (24), float32
# 2.9e7 ULP (1.6e6), float64 1.6e16 ULP (8.3e14).
@pytest.mark.parametrize("dtype", DTYPES)
def test_wrong_sign_is_caught_unless_the_exact_vjp_is_zero(dtype: str) -> None:
    for kind in ("random", "one_hot", "mixed"):
        record = vjp_result("WrongSign", "softmax_vjp", dtype, "glossary", kind)
        assert_flagged(record, "accuracy")
        worst = record["metrics"]["worst"]
        assert worst["got"] == pytest.approx(-float(worst["exact"]), rel=4 * format_of(dtype).u)
        assert record["bound"]["ratio"] > 20
    # A constant cotangent's exact softmax VJP is 0 (shift invariance): its negation is as right.
    assert vjp_result("WrongSign", "softmax_vjp", dtype, "glossary", "constant")["status"] == "pass"


# Measured on glossary: float16 720 to 2524 ULP (ratio 68 to 132), bfloat16 90 to 316 ULP (8.7 to
# 17), float32 5.9e6 to 2.1e7 ULP, float64 3.2e15 to 1.1e16 ULP, over the four kinds.
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_vjp_times_g_is_caught_unless_the_row_has_one_entry(dtype: str) -> None:
    for kind in ("random", "one_hot", "constant", "mixed"):
        # g - y g instead of g - y sum(g): wrong by y_j (sum(g) - g_j).
        record = vjp_result("LogSoftmaxVjpTimesG", "log_softmax_vjp", dtype, "glossary", kind)
        assert_flagged(record, "accuracy")
        assert record["bound"]["ratio"] > 8
        y, g, _ = _glossary_vjp_parts(dtype, kind)
        j = record["metrics"]["worst"]["index"][0]
        error = abs(record["metrics"]["worst"]["got"] - float(record["metrics"]["worst"]["exact"]))
        assert error == pytest.approx(y[j] * abs(g.sum() - g[j]), rel=0.02)
    # For one entry sum(g) = g_j: the same VJP (y = 1, so g - g = 0).
    assert vjp_result("LogSoftmaxVjpTimesG", "log_softmax_vjp", dtype, "single_element",
                      "random")["status"] == "pass"


def test_float16_gradient_accumulation_is_caught_on_a_long_row() -> None:
    # long_random_n65k in float16, constant cotangent g = 0.75: sum(g) = 49152, but the float16
    # running sum of 0.75s stalls at 2048 (2048 + 0.75 rounds back to 2048).
    assert np.cumsum(np.full(65536, 0.75, dtype=np.float16))[-1] == 2048
    # log_softmax_vjp_j = 0.75 - y_j 2048 instead of 0.75 - 49152 y_j: measured 1166 ULP, ratio
    # 8.1, at the row's largest y_j (got -0.834, exact -37.26).
    record = vjp_result("Float16GradientAccumulation", "log_softmax_vjp", "float16",
                        "long_random_n65k", "constant")
    assert_flagged(record, "accuracy")
    worst = record["metrics"]["worst"]
    x = case_input("long_random_n65k", "float16")
    assert x[tuple(worst["index"])] == x.max()
    wide = x.astype(np.float64)
    y = np.float16(np.exp(wide.max() - wide.max()) / np.sum(np.exp(wide - wide.max())))  # saved y_j
    assert worst["got"] == float(np.float16(0.75) - y * np.float16(2048))
    assert float(worst["exact"]) == pytest.approx(0.75 - 49152 * float(y), rel=2**-9)
    assert record["bound"]["ratio"] > 5
    # softmax_vjp: the running sum of 0.75 y_i (each ~1e-5) stalls near 0.2 where <g, y> = 0.75:
    # y_j (g_j - 0.2) where the exact VJP is 0. Measured: got 4.2e-4 at the largest y_j, ratio 2.1.
    record = vjp_result("Float16GradientAccumulation", "softmax_vjp", "float16", "long_random_n65k",
                        "constant")
    assert_flagged(record, "accuracy")
    worst = record["metrics"]["worst"]
    assert float(worst["exact"]) == 0.0 and worst["got"] > 2e-4
    assert record["bound"]["ratio"] > 1.5


@pytest.mark.parametrize("name", ["MissingInnerProduct", "LogSoftmaxVjpTimesG",
                                  "Float16GradientAccumulation"])
def test_wrong_gradients_on_subnormal_probabilities_are_caught(name: str) -> None:
    # long_equal_n65k in float16: y_j = 2^-16, subnormal. These backends keep subnormals (the
    # flush-to-zero probe, suites.flushing), so none gets the allowance of min_normal (1 + ...) per
    # element that a flushing one gets, which passed every one of them here when it was granted to
    # all. Measured (constant cotangent, exact VJP 0): the softmax VJPs 0.75 y = 1.14e-5
    # (MissingInnerProduct: 192 ULP, ratio 11.8) and 1.10e-5 (Float16GradientAccumulation: 184 ULP,
    # ratio 11.3); the log_softmax VJPs 0.75 (ratio 23.0) and 0.71875 = 0.75 - 2048 / 65536 (ratio
    # 22.0) where the exact value is 0.75 - 49152 / 65536 = 0.
    for op in WRONG_GRADIENTS[name]:
        record = vjp_result(name, op, "float16", "long_equal_n65k", "constant")
        assert record["flushes"] is False
        assert_flagged(record, "accuracy")
        assert record["bound"]["ratio"] > 10 and float(record["metrics"]["worst"]["exact"]) == 0.0
    for op in VJP_OPS:
        assert vjp_result("Float64UpcastGradients", op, "float16", "long_equal_n65k",
                          "constant")["status"] == "pass"


def test_a_float16_row_sum_that_overflows_is_caught_not_excused_as_a_flush() -> None:
    # 65536 equal float16 logits: the exact softmax is the subnormal 2^-16 everywhere; a row sum
    # rounded to float16 is 65536 -> inf, and the output all zeros. The backend keeps subnormals
    # (the probe's float16 softmax is subnormal there), so each 0 is 2^-16 / 2^-24 = 256 ULP off:
    # an accuracy failure, not a flush.
    record = result("Float16RowSum", "softmax", "float16", "long_equal_n65k")
    assert record["flushes"] is False
    assert_flagged(record, "accuracy")
    assert record["metrics"]["max_ulp"] == 256.0 and record["metrics"]["worst"]["got"] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_only_a_backend_measured_to_flush_gets_the_flush_allowance(dtype: str) -> None:
    # FlushToZero is the correct Float64UpcastGradients with every subnormal made 0. The probe
    # measures it to flush, so its zeros on underflow_gaps are flushed_subnormal notes and it
    # passes; flush_to_zero = "fail" withholds the allowance, and the same zeros fail. (Its
    # log_softmax VJP, g_j - y_j sum(g), is about g_j there whether y_j is flushed or not.)
    flusher = backend("FlushToZero")
    for op in ("softmax", "softmax_vjp", "log_softmax_vjp", "logsumexp_vjp"):
        target = Target(op, "tests.bad_softmax:FlushToZero", "cpu", dtype, "underflow_gaps",
                        "random" if op.endswith("_vjp") else None)
        record = run(target, flusher, SETTINGS)
        assert record["flushes"] is True and record["status"] == "pass", record["message"]
        strict = run(target, flusher, Settings(flush_to_zero="fail"))
        assert strict["flushes"] is False
        assert op == "log_softmax_vjp" or strict["status"] == "fail", op
    softmax = result("FlushToZero", "softmax", dtype, "underflow_gaps")
    assert softmax["metrics"]["categories"]["flushed_subnormal"] > 0
    assert "flushed to zero (measured to flush)" in softmax["message"]
