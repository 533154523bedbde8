"""The suite catches each deliberately wrong softmax of tests.bad_softmax on the cases aimed at its bug,
and passes the correct Float64Upcast on every case, dtype and forward op."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from backends.custom import load_spec, wrap
from backends.protocol import FORWARD_OPS, Backend
from oracle import cache
from oracle.formats import DTYPES, format_of
from suites.accuracy import Target, case_input, run
from suites.cases import CASES, select_cases
from suites.config import Settings

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
@pytest.mark.parametrize("case", [case.name for case in select_cases(None)])
def test_correct_implementation_passes_every_case(case: str) -> None:
    failures = []
    for dtype in CASES[case].dtypes:
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
