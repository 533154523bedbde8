"""The invariants check catches each planted break of a property a correct softmax keeps (and only that
one), reports errors and inapplicable invariants, and passes numpy on every dtype of a spread of cases."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends.custom import wrap
from softmax_suite.backends.registry import load
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # float8: tests/test_float8.py
from softmax_suite.formats import format_of
from softmax_suite.ops import SOFTMAX_FORWARD_OPS as FORWARD_OPS
from softmax_suite.protocol import Backend
from softmax_suite.runner.config import Settings
from softmax_suite.suites.accuracy import Target, case_input
from softmax_suite.suites.cases import CASES, select_cases
from softmax_suite.suites.deviations import Deviation
from softmax_suite.suites.invariants import OP_INVARIANTS, SHIFTS, choose_shift, laid_out_like, run
from tests import bad_softmax

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SETTINGS = Settings()
WIDE = ["float32", "float64"]


@functools.cache
def planted(name: str) -> Backend:
    return wrap(getattr(bad_softmax, name), default_name=f"tests.bad_softmax:{name}")


def measure(backend: Backend, op: str, dtype: str, case: str, deviations: tuple = ()) -> dict:
    return run(Target(op, backend.name, "cpu", dtype, case, check="invariants"), backend, SETTINGS,
               deviations)


def failed(record: dict) -> set[str]:
    assert record["status"] in ("pass", "fail"), record["message"]
    names = {name for name, entry in record["invariants"].items() if entry["ok"] is False}
    assert (record["status"] == "fail") == bool(names)
    return names


# -- numpy keeps them all --------------------------------------------------------------------------

# Every case but the rows of 1e5 and 65536 entries (for time), in catalogue order so that each
# input's oracle is computed once per process.
SPREAD = [case.name for case in select_cases(None)
          if "long" not in case.tags and case.name != "random_n100k_s10" and case.loss is None]


@pytest.mark.parametrize("case", SPREAD)
def test_numpy_keeps_every_invariant(case: str) -> None:
    numpy = load("numpy")
    problems = []
    for dtype in CASES[case].dtypes:
        for op in FORWARD_OPS:
            record = measure(numpy, op, dtype, case)
            if record["status"] != "pass":
                problems.append(f"{op} {dtype}: {record['message']}")
                continue
            assert list(record["invariants"]) == list(OP_INVARIANTS[op])
            assert record["check"] == "invariants" and record["failure"] is None
            shift = record["invariants"]["shift_invariance"]
            # The shifted formula is bitwise shift invariant: (x_j + c) - (a + c) is the same real
            # number as x_j - a, so it rounds the same; only logsumexp's + a rounds differently.
            if op != "logsumexp" and shift["ok"] is not None:
                assert shift["bitwise"], f"{op} {dtype}"
    assert problems == []


def test_rows_of_length_zero_leave_only_determinism() -> None:
    record = measure(load("numpy"), "softmax", "float32", "empty")
    assert record["status"] == "pass" and record["shape"] == [3, 0]
    for name, entry in record["invariants"].items():
        if name == "deterministic":
            assert entry["value"] == 0 and entry["ok"]
        else:
            assert entry["ok"] is None and entry["note"] == "rows of length 0"


def test_masked_rows_are_the_semantics_tables_business() -> None:
    # Every row of neg_inf_mask holds a -inf: only determinism, which covers every element, applies.
    record = measure(load("numpy"), "log_softmax", "float16", "neg_inf_mask")
    notes = {name: entry.get("note") for name, entry in record["invariants"].items()}
    assert notes.pop("deterministic") is None
    assert set(notes.values()) == {"no row whose entries are all finite"}


# -- the shift ---------------------------------------------------------------------------------------

def test_the_first_exact_shift_is_taken_as_is() -> None:
    # float16 glossary: -0.3 rounds to -0.2999267578125 (ULP 2^-12), and -0.3 + 1 needs 2^-12 where
    # [0.5, 1) has ULP 2^-11: c = 1, -1 and 2 are inexact. With 0.5 every sum lands in a binade fine
    # enough (e.g. 0.2000732421875 in [0.125, 0.25), ULP 2^-13).
    values = case_input("glossary", "float16").astype(np.float64)
    assert choose_shift(values, format_of("float16")) == (0.5, None)


def test_a_row_spanning_many_binades_is_put_on_a_grid_first() -> None:
    # float32 glossary: -0.3 holds bits down to 2^-25, 1.5 + 1 up to 2^1, 27 bits > 24, and so for every
    # shift. Rounding x to multiples of ulp(2.2 + 1) = 2^-22 makes x + 1 exact.
    values = case_input("glossary", "float32").astype(np.float64)
    assert choose_shift(values, format_of("float32")) == (1.0, 2.0**-22)
    record = measure(load("numpy"), "softmax", "float32", "glossary")
    shift = record["invariants"]["shift_invariance"]
    assert (shift["shift"], shift["grid"]) == (1.0, 2.0**-22) and "rounded to multiples" in shift["note"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_shift_is_exact_next_to_the_formats_max(dtype: str) -> None:
    # equal_large holds +-max: max + c overflows or rounds back to max, for any c in SHIFTS and any grid.
    record = measure(load("numpy"), "softmax", dtype, "equal_large")
    entry = record["invariants"]["shift_invariance"]
    assert entry["ok"] is None and f"no shift c in {list(SHIFTS)}" in entry["note"]


@pytest.mark.parametrize("case", ["strided", "transposed"])
def test_derived_inputs_keep_the_case_layout(case: str) -> None:
    x = case_input(case, "float32")
    copy = laid_out_like(x, -x)
    assert copy.strides == x.strides and not copy.flags.writeable
    assert np.array_equal(copy, -x)


# -- planted breaks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_a_nondeterministic_softmax_fails_determinism_only(dtype: str) -> None:
    # Each call nudges an independent random half of the 64 x 30 entries that are not their row's
    # largest; an entry escapes only if all 3 calls agree (probability 1/4): about 1440 differ.
    record = measure(planted("Nondeterministic"), "softmax", dtype, "random_n31_s3")
    assert failed(record) == {"deterministic"}
    assert 1300 < record["invariants"]["deterministic"]["value"] < 1600
    assert "calls on the same input" in record["message"]


def test_nan_payloads_do_not_count_as_nondeterminism() -> None:
    class FlipsNaNSigns:
        """numpy's softmax, every NaN's sign bit flipped on every other call."""

        def __init__(self) -> None:
            self.calls, self.numpy = 0, load("numpy")

        def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
            self.calls += 1
            y = np.asarray(self.numpy.ops["softmax"](x, axis))
            return np.where(np.isnan(y), -y, y) if self.calls % 2 else y

    record = measure(wrap(FlipsNaNSigns, "flips"), "softmax", "float32", "nan")
    assert record["invariants"]["deterministic"] == {"value": 0, "budget": 0, "units": "elements",
                                                     "ok": True}


@pytest.mark.parametrize("dtype", WIDE)
def test_logits_rounded_to_float16_break_shift_invariance(dtype: str) -> None:
    # fl16(x + 1) - 1 and fl16(x) differ by up to 2^-11 |x| (|x| up to ~9 here): thousands of ULPs of
    # float32 and more of float64, against a budget of 2 x (3 + gaps + 2 log2 31) u: under 30 ULP.
    backend = planted("Float16Logits")
    softmax = measure(backend, "softmax", dtype, "random_n31_s3")
    assert failed(softmax) == {"shift_invariance"}
    shift = softmax["invariants"]["shift_invariance"]
    assert shift["value"] > 1000 and shift["budget"] < 30 and not shift["bitwise"]
    # The (correct) log_softmax keeps its own invariants but no longer agrees with this softmax.
    assert failed(measure(backend, "log_softmax", dtype, "random_n31_s3")) == {"exp_agrees_with_softmax"}
    assert failed(measure(backend, "logsumexp", dtype, "random_n31_s3")) == set()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rounding_16_bit_logits_to_float16_changes_nothing(dtype: str) -> None:
    # float16 inputs are float16 already; bfloat16's 8 bits fit in float16's 11 (range N(0, 9)).
    assert measure(planted("Float16Logits"), "softmax", dtype, "random_n31_s3")["status"] == "pass"


@pytest.mark.parametrize("dtype", WIDE)
def test_a_position_dependent_remainder_loop_breaks_permutation_equivariance(dtype: str) -> None:
    # The last entry's exponential keeps 8 bits: a relative error up to 2^-9, i.e. up to 2^15 float32
    # ULPs, moves with the entry that P puts last.
    backend = planted("RemainderLoop")
    softmax = measure(backend, "softmax", dtype, "random_n31_s3")
    assert failed(softmax) == {"permutation_equivariance"}
    entry = softmax["invariants"]["permutation_equivariance"]
    assert entry["value"] > 1000 and entry["budget"] < 30 and not entry["bitwise"]
    assert "softmax(Px) and P softmax(x) differ by" in softmax["message"]
    assert failed(measure(backend, "log_softmax", dtype, "random_n31_s3")) == {"exp_agrees_with_softmax"}


@pytest.mark.parametrize("dtype", WIDE)
def test_softmin_moves_the_argmax(dtype: str) -> None:
    # softmax(-x): each of the 256 rows of two distinct logits puts its larger output at the argmin.
    softmax = measure(planted("Softmin"), "softmax", dtype, "random_n2")
    assert failed(softmax) == {"argmax_preserved"}
    assert softmax["invariants"]["argmax_preserved"]["value"] == 256
    assert "in 256 of 256 rows the largest output is not at an argmax of x" in softmax["message"]


def test_softmin_log_softmax_moves_the_argmax_and_its_logsumexp_shifts_the_wrong_way() -> None:
    backend = planted("Softmin")
    log_softmax = measure(backend, "log_softmax", "float32", "random_n2")
    assert failed(log_softmax) == {"argmax_preserved"}
    # logsumexp(-(x + 1)) = logsumexp(-x) - 1: off by 2 from logsumexp(-x) + 1. And logsumexp(-x) =
    # -min x + log1p(e^-(max - min)) is below max x in the rows where max + min > log1p(...).
    lse = measure(backend, "logsumexp", "float32", "random_n2")
    assert failed(lse) == {"shift_invariance", "at_least_max"}
    x = case_input("random_n2", "float32").astype(np.float64)
    below = np.logaddexp(-x[:, 0], -x[:, 1]) < x.max(axis=1)
    assert lse["invariants"]["at_least_max"]["value"] == int(below.sum()) == 106


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_mean_exp_falls_below_the_max(dtype: str) -> None:
    # logsumexp - log 31 < max x in all 64 rows; log_softmax + log 31 > 0 wherever softmax > 1/31 (329
    # of the 1984 entries), and exp of it is 31 softmax. softmax itself is correct.
    backend = planted("LogMeanExp")
    lse = measure(backend, "logsumexp", dtype, "random_n31_s3")
    assert failed(lse) == {"at_least_max"} and lse["invariants"]["at_least_max"]["value"] == 64
    log_softmax = measure(backend, "log_softmax", dtype, "random_n31_s3")
    assert failed(log_softmax) == {"nonpositive", "exp_agrees_with_softmax"}
    y = np.exp(case_input("random_n31_s3", "float64"))
    above_mean = int((y / y.sum(axis=-1, keepdims=True) > 1 / 31).sum())
    assert log_softmax["invariants"]["nonpositive"]["value"] == above_mean == 329
    assert failed(measure(backend, "softmax", dtype, "random_n31_s3")) == set()


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_log_that_errs_low_makes_the_dominant_log_probability_positive(dtype: str) -> None:
    # Each of the 8 rows has t ~ 2u (7 entries p ln2 + 1 below the leader): the leader's exact
    # log_softmax is -log1p(t) ~ -2u, the plant's 4u - log1p(t) ~ +2u. Off by 4u everywhere, every
    # other invariant holds (exp(z) = y (1 + 4u): 4 ULPs, inside the budget).
    record = measure(planted("ApproximateLog"), "log_softmax", dtype, "dominant_gap_above")
    assert failed(record) == {"nonpositive"}
    assert record["invariants"]["nonpositive"]["value"] == 8
    assert 0 < float(record["message"].split("e.g. ")[1].split(" ")[0]) < 3 * format_of(dtype).u


@pytest.mark.parametrize("dtype", WIDE)
def test_a_float16_normaliser_breaks_the_sum(dtype: str) -> None:
    # y = e / fl16(S), S in [1, 31]: the row sums to S / fl16(S), up to 2^-11 from 1, which is 2^12
    # float32 ULPs of 1 (2^-23); the budget, the sum of 31 element budgets, is under 20 of them.
    backend = planted("HalfPrecisionNormaliser")
    softmax = measure(backend, "softmax", dtype, "random_n31_s3")
    assert failed(softmax) == {"sum_to_one"}
    entry = softmax["invariants"]["sum_to_one"]
    ulp_one = 2.0 ** (1 - format_of(dtype).p)
    assert 1000 < entry["value"] <= 2.0**-11 / ulp_one * (1 + 2**-10) and entry["budget"] < 20
    assert failed(measure(backend, "log_softmax", dtype, "random_n31_s3")) == {"exp_agrees_with_softmax"}
    assert failed(measure(backend, "logsumexp", dtype, "random_n31_s3")) == set()


# -- errors, support and known deviations -----------------------------------------------------------

class LogSoftmaxOnly:
    """numpy's log_softmax and nothing else."""

    def log_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        return load("numpy").ops["log_softmax"](x, axis)


def test_without_a_softmax_exp_agreement_is_not_applicable() -> None:
    backend = wrap(LogSoftmaxOnly, "lsm-only")
    record = measure(backend, "log_softmax", "float32", "random_n31_s3")
    assert record["status"] == "pass"
    entry = record["invariants"]["exp_agrees_with_softmax"]
    assert entry["ok"] is None and entry["note"] == "no softmax to compare with: lsm-only has no softmax"
    assert measure(backend, "softmax", "float32", "glossary")["status"] == "unsupported"


@pytest.mark.parametrize(("function", "words"), [
    (lambda x, axis: 1 / 0, "softmax(x) raised ZeroDivisionError: division by zero"),
    (lambda x, axis: np.ones(x.shape), "softmax(x) returned float64 for float32 input"),
    # Right on the case, wrong on its shifted copy x + 1 (whose first entry is 2.5).
    (lambda x, axis: load("numpy").ops["softmax"](x, axis) if x[0] < 2 else x[:2],
     "softmax(x + 1) returned shape (2,), expected (4,)"),
])
def test_a_backend_that_raises_or_misbehaves_is_an_error(function, words: str) -> None:
    record = measure(wrap(function, "inline"), "softmax", "float32", "glossary")
    assert record["status"] == "error" and record["failure"] == "error"
    assert record["message"] == words or record["message"].startswith(words)


def test_a_known_deviation_with_failure_invariant_turns_the_failure_known() -> None:
    def deviation(failure: str) -> Deviation:
        # check defaults to accuracy: an invariants entry says so.
        return Deviation(check=("invariants",), backend=("*Softmin",), op=("softmax",), dtype=("*",),
                         case=("random_n2",), reason="planted", failure=(failure,))

    backend = planted("Softmin")
    known = measure(backend, "softmax", "float32", "random_n2", (deviation("invariant"),))
    assert known["status"] == "known_failure" and known["known_deviation"]["entry"] == 1
    assert known["message"].startswith("known deviation: planted [argmax_preserved: in 256 of 256 rows")
    assert measure(backend, "softmax", "float32", "random_n2", (deviation("accuracy"),))["status"] == "fail"


# -- the suite module, run as a user runs it --------------------------------------------------------

def test_suite_module_reports_invariants_records(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    path = pytester.path / "inv.jsonl"
    result = pytester.runpytest_subprocess(
        str(REPO / "suites" / "test_invariants.py"), "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
        "--softmax-suite-backend", "numpy,tests.bad_softmax:Softmin", "--softmax-suite-case", "random_n2",
        "--softmax-suite-dtype", "float32", "--softmax-suite-results", str(path), "-v")
    # numpy passes its three; Softmin fails all three (argmax twice; logsumexp shifts the wrong way).
    result.assert_outcomes(passed=3, failed=3)
    assert any("test_softmax_invariants[numpy-cpu-float32-random_n2] PASSED" in line
               for line in result.outlines)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    records = [line for line in lines if line["kind"] == "result"]
    assert len(records) == 6 and {r["check"] for r in records} == {"invariants"}
    softmin = {r["op"]: r for r in records if r["backend"] == "tests.bad_softmax:Softmin"}
    assert softmin["softmax"]["invariants"]["argmax_preserved"]["value"] == 256
    assert softmin["logsumexp"]["failure"] == "invariant"
    assert math.isfinite(softmin["logsumexp"]["invariants"]["shift_invariance"]["value"])
