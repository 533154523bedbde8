"""The float8 formats (float8_e4m3fn, float8_e5m2): their parameters, the oracle's rounding into them
checked exhaustively against ml_dtypes and an independent Fraction rounding, the backends' transfers,
reproducers, and planted float8 errors (tests.bad_float8) that only the float8 cases catch."""

from __future__ import annotations

import functools
import math
import multiprocessing
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from mpmath.libmp import finf, fninf, from_float

from softmax_suite.backends.custom import load_spec
from softmax_suite.backends.registry import load
from softmax_suite.dtypes import DTYPE_ALIASES, DTYPES, FLOAT8_DTYPES, STANDARD_DTYPES
from softmax_suite.formats import FORMATS, format_of
from softmax_suite.ops import is_vjp
from softmax_suite.oracle.rounding import (
    round_between,
    round_certified,
    round_interval,
    round_to_format,
    round_values,
    ulp,
)
from softmax_suite.protocol import Backend
from softmax_suite.runner.config import Settings
from softmax_suite.suites.accuracy import Target, run
from softmax_suite.suites.cases import CASES, CATALOGUE

REPO = Path(__file__).resolve().parents[1]
SETTINGS = Settings()
FORWARD = ("softmax", "log_softmax", "logsumexp")
OPS = (*FORWARD, "softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")


def same(a: float, b: float) -> bool:
    """Equal values, NaN equal to NaN (the sign of zero is not compared: mpmath has no -0)."""
    return (math.isnan(a) and math.isnan(b)) or a == b


# -- the formats ---------------------------------------------------------------------------------

def test_the_vocabulary() -> None:
    assert (*STANDARD_DTYPES, *FLOAT8_DTYPES) == DTYPES
    assert FLOAT8_DTYPES == ("float8_e4m3fn", "float8_e5m2")
    for alias in ("fp8_e4m3", "e4m3", "e4m3fn", "fp8_e4m3fn"):
        assert DTYPE_ALIASES[alias] == "float8_e4m3fn"
    for alias in ("fp8_e5m2", "e5m2"):
        assert DTYPE_ALIASES[alias] == "float8_e5m2"
    # ml_dtypes' float8_e4m3 is another format (IEEE-like, with infinities, max 240): not an alias.
    assert "float8_e4m3" not in DTYPE_ALIASES and float(ml_dtypes.finfo(ml_dtypes.float8_e4m3).max) == 240


@pytest.mark.parametrize("name", FLOAT8_DTYPES)
def test_format_parameters_match_ml_dtypes(name: str) -> None:
    fmt = FORMATS[name]
    info = ml_dtypes.finfo(fmt.np_dtype)
    assert fmt.np_dtype == np.dtype(getattr(ml_dtypes, name)) and format_of(fmt.np_dtype) is fmt
    assert (fmt.p, fmt.max, fmt.min_normal, fmt.min_subnormal) == (
        info.nmant + 1, float(info.max), float(info.tiny), float(info.smallest_subnormal))
    every = np.arange(256, dtype=np.uint8).view(fmt.np_dtype).astype(np.float64)
    assert np.nanmax(np.where(np.isinf(every), np.nan, every)) == fmt.max
    assert np.isinf(every).any() == fmt.infinity


def test_e4m3fn_and_e5m2_thresholds() -> None:
    e4m3, e5m2 = FORMATS["float8_e4m3fn"], FORMATS["float8_e5m2"]
    assert (e4m3.p, e4m3.emin, e4m3.emax, e4m3.max, e4m3.overflow_threshold) == (4, -6, 8, 448.0, 464.0)
    assert (e5m2.p, e5m2.emin, e5m2.emax, e5m2.max, e5m2.overflow_threshold) == (3, -14, 15, 57344.0, 61440.0)
    assert math.isnan(e4m3.overflow) and e5m2.overflow == math.inf
    # exp(6) = 403 < 464 and the next e4m3fn value, 6.5, has exp 665; e5m2: exp(10) = 22026, exp(12) = 162755.
    assert (e4m3.exp_overflow, e5m2.exp_overflow) == (6.0, 10.0)
    assert e4m3.absorb_gap == 4 * math.log(2) and e5m2.absorb_gap == 3 * math.log(2)
    assert e4m3.exp_subnormal_below == -6 * math.log(2) and e4m3.exp_zero_below == -10 * math.log(2)
    assert e5m2.exp_subnormal_below == -14 * math.log(2) and e5m2.exp_zero_below == -17 * math.log(2)
    assert ulp(448.0, e4m3) == 32.0 and ulp(0.0, e4m3) == 2.0**-9 and ulp(1.0, e5m2) == 0.25


# -- rounding, exhaustively ------------------------------------------------------------------------

def independent_round(value: float, name: str) -> float:
    """value rounded to nearest even into the format by exact Fraction distances to its values,
    with the format's overflow: the nearest of the finite values and the virtual next one above
    max (max + ulp(max), whose encoding is odd-even as the significand's last bit says)."""
    fmt = FORMATS[name]
    if math.isnan(value):
        return math.nan
    if math.isinf(value):
        return math.copysign(fmt.overflow, value)
    finite = finite_values(name)
    magnitude = Fraction(abs(value))
    beyond = Fraction(fmt.max) + Fraction(2) ** (fmt.emax - fmt.p + 1)
    candidates = [*finite[finite >= 0].tolist(), beyond]
    best = min(abs(magnitude - Fraction(c)) for c in candidates)
    nearest = [c for c in candidates if abs(magnitude - Fraction(c)) == best]
    if len(nearest) == 2:  # a tie: the even significand (for beyond, the one after max's)
        def odd(c):
            if c == beyond:
                return not odd(fmt.max)
            q = Fraction(2) ** (max(math.frexp(c)[1] - 1, fmt.emin) - fmt.p + 1) if c else Fraction(1)
            return int(Fraction(c) / q) & 1 == 1
        nearest = [c for c in nearest if not odd(c)]
    (result,) = nearest
    result = fmt.overflow if result == beyond else float(result)
    return -result if value < 0 else result


@functools.cache
def finite_values(name: str) -> np.ndarray:
    every = np.arange(256, dtype=np.uint8).view(FORMATS[name].np_dtype).astype(np.float64)
    return np.unique(every[np.isfinite(every)])


@functools.cache
def probes(name: str) -> np.ndarray:
    """Every value of the format, every midpoint between neighbours (and between max and the virtual
    next value), each a float64 step and a relative 2^-30 either side, values beyond max, halves and
    quarters of the smallest subnormal, and all of them negated; with inf, -inf and NaN."""
    fmt = FORMATS[name]
    positive = finite_values(name)[finite_values(name) >= 0]
    beyond = fmt.max + 2.0 ** (fmt.emax - fmt.p + 1)
    midpoints = (np.append(positive, beyond)[:-1] + np.append(positive, beyond)[1:]) / 2
    far = np.array([beyond, fmt.max * 1.5, 2.0 ** (fmt.emax + 1), 1e6, 1e300,
                    fmt.min_subnormal / 2, fmt.min_subnormal / 4, fmt.min_subnormal * 0.75])
    base = np.concatenate([positive, midpoints, far])
    values = np.concatenate([base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf),
                             base * (1 + 2.0**-30), base * (1 - 2.0**-30)])
    return np.concatenate([values, -values, [np.inf, -np.inf, np.nan]])


@pytest.mark.parametrize("name", FLOAT8_DTYPES)
def test_round_to_format_is_the_independent_rounding_everywhere(name: str) -> None:
    fmt = FORMATS[name]
    values = probes(name)
    expected = [independent_round(v, name) for v in values.tolist()]
    got = [round_to_format(from_float(v) if math.isfinite(v) else
                           (finf if v > 0 else fninf) if math.isinf(v) else from_float(v), fmt)
           for v in values.tolist()]
    wrong = [(v, g, e) for v, g, e in zip(values.tolist(), got, expected, strict=True) if not same(g, e)]
    assert wrong == []
    # The vectorised roundings agree: round_values (case inputs), round_between (the float64 tier)
    # and round_certified (the double-word tier) with no error (an exact tie is left undecided there).
    vector = round_values(values, fmt).astype(np.float64)
    assert [v for v, g, e in zip(values, vector, expected, strict=True) if not same(g, e)] == []
    finite = np.isfinite(values)
    between, decided = round_between(values[finite], values[finite], fmt)
    # (beyond about 2^970, _nearest's shifter overflows: undecided, which is safe; no exact value of
    # the ops in float8 is that large)
    assert decided[np.abs(values[finite]) < 1e30].all()
    assert [v for v, g, e, d in zip(values[finite], between.astype(np.float64), np.array(expected)[finite],
                                    decided, strict=True) if d and not same(g, e)] == []
    zeros = np.zeros(finite.sum())
    certified, sure = round_certified(values[finite], zeros, zeros.astype(np.int32), zeros, fmt)
    assert [v for v, g, e, s in zip(values[finite], certified, np.array(expected)[finite], sure, strict=True)
            if s and not same(g, e)] == []


@pytest.mark.parametrize("name", FLOAT8_DTYPES)
def test_ml_dtypes_casts_float32_once_and_float64_twice(name: str) -> None:
    # ml_dtypes 0.6's float32 -> float8 cast is one correct rounding (the numpy backend casts its float32
    # results so); its float64 -> float8 cast goes through float32 and rounds twice: a midpoint plus
    # one float64 step becomes the midpoint in float32, which then goes to the even neighbour.
    fmt = FORMATS[name]
    values = probes(name)
    with np.errstate(over="ignore"):
        single = values.astype(np.float32).astype(np.float64)  # the float32 values among the probes
    with np.errstate(over="ignore"):
        cast = single.astype(np.float32).astype(fmt.np_dtype).astype(np.float64)
    assert all(same(c, independent_round(v, name))
               for v, c in zip(single.tolist(), cast.tolist(), strict=True))
    # 1 + 2^-p is the tie of 1 and 1 + 2^(1-p); a float64 step above it rounds up, but not through float32.
    above = math.nextafter(1 + 2.0**-fmt.p, math.inf)
    assert round_to_format(from_float(above), fmt) == float(round_values(np.array([above]), fmt)[0]) \
        == 1 + 2.0 ** (1 - fmt.p)
    assert float(np.array(above).astype(fmt.np_dtype)) == 1.0  # ml_dtypes 0.6: rounded twice


def test_the_e4m3fn_overflow_rule() -> None:
    # OCP OFP8 1.0 and ml_dtypes: round to nearest even, then beyond max is NaN (non-saturating). 464 is
    # the midpoint of 448 (1.110 2^8, even) and 480 (1.111 2^8, the NaN pattern): it rounds to 448.
    fmt = FORMATS["float8_e4m3fn"]
    for value, expected in ((448.0, 448.0), (464.0, 448.0), (math.nextafter(464.0, 0), 448.0),
                            (math.nextafter(464.0, math.inf), math.nan), (479.0, math.nan), (480.0, math.nan),
                            (1e300, math.nan), (-464.0, -448.0), (-465.0, math.nan)):
        assert same(round_to_format(from_float(value), fmt), expected), value
        if abs(value) < 1e38 and float(np.float32(value)) == value:  # ml_dtypes' float32 cast agrees
            assert same(float(np.array(value, np.float32).astype(fmt.np_dtype)), expected), value
    assert math.isnan(round_to_format(finf, fmt)) and math.isnan(round_to_format(fninf, fmt))
    assert np.isnan(round_values(np.array([np.inf, -np.inf]), fmt).astype(np.float64)).all()
    # Both ends of an interval beyond 464 round to NaN: decided (NaN != NaN must not leave it open).
    assert math.isnan(round_interval(from_float(500.0), from_float(1.0), fmt, 64))
    # e5m2 is IEEE: 61440 = 57344 + ulp/2 overflows (57344's significand 1.11 is odd).
    e5m2 = FORMATS["float8_e5m2"]
    assert round_to_format(from_float(61440.0), e5m2) == math.inf
    assert round_to_format(from_float(math.nextafter(61440.0, 0)), e5m2) == 57344.0


# -- the oracle's fast path in float8 -------------------------------------------------------------

@pytest.mark.parametrize("family", ["forward", "vjp"])
@pytest.mark.parametrize("name", FLOAT8_DTYPES)
def test_fast_path_gives_the_mpmath_results_in_float8(name: str, family: str) -> None:
    # tests/test_fast_oracle.py's 10^5 boundary elements, bit for bit against the mpmath-only oracle.
    # (Its rows at scale 100 hold values beyond e4m3fn's 448, NaN there: structural rows, which the
    # mpmath path takes; so fewer are decided fast than in the wider formats.)
    from tests.test_fast_oracle import ROWS, N, assert_identical, compute, naive

    fast = compute(family, name)
    assert_identical(fast, naive(family, name))
    certificate = fast["softmax" if family == "forward" else "softmax_vjp"].certificate
    # (measured: e5m2 98-100%, 4 of the 200 VJP rows left to mpmath; e4m3fn 68%)
    assert certificate.get("float64", 0) + certificate["double_double"] >= (0.97 if name == "float8_e5m2"
                                                                             else 0.6) * ROWS * N


# -- the checks: metrics of an overflow to NaN -----------------------------------------------------

def test_a_correct_overflow_to_nan_scores_zero_and_a_saturated_one_is_nan_missing() -> None:
    from softmax_suite.oracle.exact import forward_references
    from softmax_suite.oracle.metrics import compare

    x = np.array([[448.0, -448.0]]).astype(ml_dtypes.float8_e4m3fn)
    z = forward_references(x, -1)["log_softmax"]  # [0, -896]: -896 overflows, to NaN
    assert np.isnan(z.rounded.astype(np.float64)[0, 1]) and z.mant[0, 1] == -1.75
    # (z_0 = -log1p(e^-896), a negative hair: -0.0)
    right = compare(z, np.array([[-0.0, np.nan]]).astype(ml_dtypes.float8_e4m3fn))
    assert list(right.ulp[0]) == [0.0, 0.0] and not any(m.any() for m in right.categories.values())
    saturated = compare(z, np.array([[-0.0, -448.0]]).astype(ml_dtypes.float8_e4m3fn))
    assert saturated.categories["nan_missing"].tolist() == [[False, True]]
    assert np.isnan(saturated.ulp[0, 1])


# -- the catalogue and the backends ----------------------------------------------------------------

# The fixed catalogue's (the ladder's cases are suites/ladder.py's, tested there).
FLOAT8_CASES = [case.name for case in CATALOGUE if set(FLOAT8_DTYPES) & set(case.dtypes)
                and not {"found", "ladder", "patterns"} & case.tags]


def test_which_cases_run_float8() -> None:
    assert FLOAT8_CASES == ["glossary", "random_n2", "random_n31_s3", "random_n1k_s1", "equal_large",
                            "underflow_gaps", "neg_inf_mask", "single_element", "tied_max", "huge_range"]
    # float8_e4m3fn has no infinities: +-inf round to NaN there, so the cases built on them run e5m2 only.
    assert "float8_e4m3fn" not in CASES["single_element"].dtypes + CASES["neg_inf_mask"].dtypes
    # The gaps these cases are built on (p ln2 +- 1, the next value above the overflow edge) do not
    # survive float8's spacing (e4m3fn's values near 40 are 4 apart): not asked in float8.
    for name in ("random_n1k_s10", "dominant_gap_below", "dominant_gap_above", "absorb_gap_n1k",
                 "overflow_edge"):
        assert CASES[name].dtypes == STANDARD_DTYPES


@functools.cache
def numpy_backend() -> Backend:
    return load("numpy")


@pytest.mark.parametrize("case", FLOAT8_CASES)
def test_numpy_passes_every_float8_case(case: str) -> None:
    # float32 arithmetic rounded once into float8: no false alarm, forward and VJP, every cotangent.
    failures = []
    for dtype in FLOAT8_DTYPES:
        if dtype not in CASES[case].dtypes:
            continue
        for op in OPS:
            for kind in CASES[case].cotangents if is_vjp(op) else [None]:
                record = run(Target(op, "numpy", "cpu", dtype, case, kind), numpy_backend(), SETTINGS)
                if record["status"] != "pass":
                    failures.append(f"{op} {dtype} {kind}: {record['status']}: {record['message']}")
    assert failures == []


def test_backends_declare_float8_where_they_compute_it() -> None:
    assert set(FLOAT8_DTYPES) <= set(numpy_backend().dtypes)
    # A backend that declares nothing is asked the four IEEE formats only.
    plain = Backend("plain", "0", {"softmax": lambda x, axis: x}, lambda x, d: x, np.asarray)
    assert plain.why_unsupported("softmax", "float8_e4m3fn") == "plain does not support float8_e4m3fn"
    torch = pytest.importorskip("torch")
    del torch
    reason = load("torch").why_unsupported("softmax", "float8_e4m3fn")
    assert reason is not None and "not implemented for 'Float8_e4m3fn'" in reason  # torch's own words


@pytest.mark.parametrize("name", FLOAT8_DTYPES)
def test_transfers_keep_the_bits(name: str) -> None:
    # Every one of the 256 encodings (NaNs included) into each framework and back, bit for bit.
    bits = np.arange(256, dtype=np.uint8)
    x = bits.view(FORMATS[name].np_dtype).reshape(16, 16)
    for spec in ("torch", "jax"):
        pytest.importorskip(spec)
        backend = load(spec)
        back = backend.to_numpy(backend.to_device(x, "cpu"))
        assert back.dtype == x.dtype and back.view(np.uint8).tolist() == x.view(np.uint8).tolist(), spec
        strided = backend.to_numpy(backend.to_device(x[:, ::2], "cpu"))
        assert strided.view(np.uint8).tolist() == x[:, ::2].view(np.uint8).tolist(), spec


def test_isolation_sends_float8_by_name() -> None:
    from softmax_suite.backends import isolation

    for name in FLOAT8_DTYPES:
        x = np.arange(256, dtype=np.uint8).view(FORMATS[name].np_dtype)
        assert isolation._dtype_name(x.dtype) == name and isolation._dtype(name) == x.dtype
        # Strided, through a pipe as --isolate sends it (numpy's as_strided cannot rebuild '<f1' itself).
        sender, receiver = multiprocessing.Pipe()
        strided = x.reshape(16, 16)[:, ::2]
        isolation.send(sender, {}, [strided])
        _, (got,) = isolation.receive(receiver)
        assert got.dtype == x.dtype and got.strides == strided.strides
        assert got.view(np.uint8).tolist() == strided.view(np.uint8).tolist()


# -- planted float8 errors: only the float8 cases catch them ---------------------------------------

def planted(name: str, op: str, dtype: str, case: str) -> dict:
    spec = f"tests.bad_float8:{name}"
    return run(Target(op, spec, "cpu", dtype, case), load_spec(spec), SETTINGS)


def test_a_saturating_conversion_is_caught_on_huge_range() -> None:
    # huge_range's rows hold -448 and 448 (e4m3fn): log_softmax of -448 is -896, beyond 464, which the
    # format's rule rounds to NaN; a saturating kernel returns -448 there: 4 elements nan_missing.
    e4m3 = planted("Saturating", "log_softmax", "float8_e4m3fn", "huge_range")
    assert e4m3["status"] == "fail" and e4m3["failure"] == "semantic"
    assert e4m3["semantic"] == {"nan_missing": 4}
    assert "got -448.0, the policy expects -896.0" in e4m3["message"]
    # In e5m2 -114688 overflows to -inf; -57344 is (114688 - 57344) / 16384 = 3.5 ULP of the exact value
    # off, beyond its budget of 2.25 ULP (an error, not a category: e5m2 has infinities, as IEEE).
    e5m2 = planted("Saturating", "log_softmax", "float8_e5m2", "huge_range")
    assert e5m2["status"] == "fail" and e5m2["failure"] == "accuracy"
    assert e5m2["metrics"]["worst"]["ulp"] == 3.5 and e5m2["metrics"]["worst"]["index"] == [0, 1]
    assert 2.25 <= e5m2["bound"]["budget_ulp"] < 2.26
    # Every other dtype goes through the numpy backend: nothing to catch there.
    assert planted("Saturating", "log_softmax", "float32", "huge_range")["status"] == "pass"


def test_a_float8_accumulator_is_caught() -> None:
    # random_n1k_s1's rows of 1000 N(0, 1) logits: their exponentials summed one by one in e4m3fn stall
    # where the running sum's ULP (1 from 8 up, 2 from 16) swallows each term, far below the exact sum:
    # element [3, 487], exactly 0.01241 (0.01172 rounded), comes out 0.1016, (0.1016 - 0.01241) / 2^-9 =
    # 45.6 ULP (2^-9: e4m3fn's subnormal quantum) against a budget of 12.9; in e5m2 element [4, 12],
    # 0.003470 exactly, comes out 0.0391: 72.9 ULP (of 2^-11, its binade's), against 24.6.
    for dtype, index, ulps, allowed in (("float8_e4m3fn", [3, 487], 45.65, 12.91),
                                        ("float8_e5m2", [4, 12], 72.89, 24.56)):
        record = planted("Float8Accumulation", "softmax", dtype, "random_n1k_s1")
        assert record["status"] == "fail" and record["failure"] == "accuracy"
        worst = record["metrics"]["worst"]
        assert worst["index"] == index and abs(worst["ulp"] - ulps) < 0.01, worst
        assert abs(record["bound"]["budget_ulp"] - allowed) < 0.01
    assert planted("Float8Accumulation", "softmax", "float32", "random_n1k_s1")["status"] == "pass"


@pytest.mark.parametrize("name", ["ThroughFloat16", "Truncated"])
def test_a_one_ulp_rounding_error_is_within_the_float8_budgets(name: str) -> None:
    # What the budgets cannot see: a result rounded twice (through float16) or truncated errs by at
    # most 1 ULP of float8, and every float8 budget is above that, for it allows a computation in
    # the output format (u = 2^-4 or 2^-3 per operation: c0 u |v| / ulp(v) alone is 3/16 * 8 = 1.5
    # ULP at the least for e4m3fn). These pass: an error of rounding alone shows in the
    # worst ULP, never in a verdict.
    for dtype in FLOAT8_DTYPES:
        for op in FORWARD:
            record = planted(name, op, dtype, "random_n31_s3")
            assert record["status"] == "pass", record["message"]
            assert record["metrics"]["worst"]["ulp"] <= 1.0 + 2.0**-6


# -- the runner ----------------------------------------------------------------------------------

def test_reproducer_rebuilds_float8_bits() -> None:
    import json

    from softmax_suite.reports.results import jsonable
    from softmax_suite.runner.reproduce import snippet

    result = run(Target("softmax", "numpy", "cpu", "float8_e4m3fn", "glossary"), numpy_backend(), SETTINGS)
    result = json.loads(json.dumps(jsonable({**result, "nodeid": "x"})))
    code = snippet(result)
    assert "from ml_dtypes import float8_e4m3fn" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"output: the same bits as the run (sha256 {result['output_sha256']})" in done.stdout


def test_cli_takes_float8_dtypes() -> None:
    done = subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli", "cases", "--dtype", "e4m3"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "glossary" in done.stdout and "random_n1k_s10" not in done.stdout
