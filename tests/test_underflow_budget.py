"""The budget's term for exponentials below the smallest normal (oracle.budget, D_sub): carried per
row by the references, granted by the analysis, and no wider than it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from softmax_suite.formats import FORMATS
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # the float8 formats: tests/test_float8.py
from softmax_suite.oracle import cache
from softmax_suite.oracle.exact import underflow_terms
from softmax_suite.runner.config import Settings
from softmax_suite.suites.accuracy import case_input
from softmax_suite.suites.judging import judge

SETTINGS = Settings()


@pytest.mark.parametrize("name", DTYPES)
def test_the_terms_count_and_sum_the_exponentials_below_the_smallest_normal(name):
    fmt = FORMATS[name]
    subnormal, zero = -fmt.exp_subnormal_below + 0.5, -fmt.exp_zero_below + 1.0
    # one term inside the subnormal range, one below half the smallest subnormal, a normal one, a
    # masked one, and the maximum: two count.
    x = np.array([[0.0, -subnormal, -zero, -1.0, -np.inf]])
    terms = underflow_terms(x, fmt)
    assert terms["n_subnormal"].tolist() == [2.0]
    assert terms["subnormal_tail"][0] == pytest.approx(math.exp(-subnormal) + math.exp(-zero), rel=1e-12)
    # Rows the policy decides (NaN, +inf, all -inf) hold none.
    special = np.array([[np.nan, -200.0], [np.inf, -200.0], [-np.inf, -np.inf]])
    assert underflow_terms(special, fmt)["n_subnormal"].tolist() == [0.0, 0.0, 0.0]


def hunted_row(seed: int = 1) -> np.ndarray:
    """The hunt's row: float32 [0] and 369 logits near -104, where each exp(x_i) ~ 6.8e-46 lies at
    half a unit of the smallest subnormal (7.0e-46), and logsumexp ~ 2.7e-43 is a subnormal sum."""
    gaps = np.random.default_rng(seed).uniform(103.5, 104.5, 369)
    return np.concatenate([[0.0], -gaps]).astype(np.float32)[None, :]


def float32_logsumexp(x: np.ndarray) -> np.ndarray:
    """What a correct float32 implementation computes: each exp(x_i - max) rounded to float32
    (0 or 1 unit of the smallest subnormal here), summed, log1p, rounded."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # float32: every term rounded once
    e[np.arange(x.shape[0]), np.argmax(x, axis=-1)] = 0
    return (x.max(axis=-1) + np.log1p(e.astype(np.float64).sum(axis=-1))).astype(np.float32)


def test_a_correct_float32_sum_of_underflowed_terms_is_within_the_budget():
    x = hunted_row()
    reference = cache.reference("logsumexp", x, -1)
    exact = float(reference.rounded[0])
    assert 1.4e-45 * 100 < exact < 2.0**-126  # a subnormal of about 190 units
    got = float32_logsumexp(x)
    record = judge(reference, got, SETTINGS)
    assert record["status"] == "pass", record["message"]
    # Each term errs by up to half a unit: the error is a count of units, up to 369 / 2, and the
    # budget allows one unit per term (369 + the usual 0.5 and relative terms).
    assert 1 <= record["metrics"]["max_ulp"] <= 369 / 2
    assert 369 < record["bound"]["budget_ulp"] < 371
    # Without the term (the budget before it) this correct answer was far outside: about 1 ULP.
    without = replace(reference, terms={**reference.terms, "n_subnormal": np.zeros(1)})
    assert judge(without, got, SETTINGS)["bound"]["ratio"] > 5


def test_the_term_is_no_excuse_for_losing_normal_sized_sums():
    # Row 0 of underflowed_sum in float32: 383 terms spread over the subnormal range sum to about
    # 23 smallest normals. logsumexp returned as 0 (every term dropped) is 2^23 ULP off for a
    # backend that keeps subnormals; for one measured to flush it is exactly the flushed terms'
    # sum, subnormal_tail, and within its budget.
    row = np.asarray(case_input("underflowed_sum", "float32"))[:1]
    reference = cache.reference("logsumexp", row, -1)
    assert float(reference.rounded[0]) > 2.0**-126  # a normal number
    zero = np.zeros(1, np.float32)
    kept = judge(reference, zero, SETTINGS)
    assert kept["status"] == "fail" and kept["metrics"]["max_ulp"] > 2**22
    flushed = judge(reference, zero, SETTINGS, flush=True)
    assert flushed["status"] == "pass", flushed["message"]
