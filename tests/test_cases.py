"""The case catalogue holds what each case claims: deterministic bits in the dtype, layouts, the
thresholds of every format (absorb gap, underflow, overflow edge), long rows and special values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from softmax_suite.formats import DTYPES, STANDARD_DTYPES, format_of
from softmax_suite.oracle import cache
from softmax_suite.suites.cases import CASES, CATALOGUE, select_cases

REPO = Path(__file__).resolve().parents[1]
DEFAULT = select_cases(None)
PAIRS = [(case.name, dtype) for case in CATALOGUE for dtype in case.dtypes if "slow" not in case.tags]


def built(name: str, dtype: str) -> np.ndarray:
    return CASES[name].build(dtype)


def digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def leader_gaps(x: np.ndarray) -> np.ndarray:
    """Per row, max - x_j for every entry but one argmax (exact: both are values of the dtype)."""
    rows = x.astype(np.float64)
    gaps = rows.max(axis=1, keepdims=True) - rows
    np.put_along_axis(gaps, rows.argmax(axis=1)[:, None], np.nan, axis=1)
    return gaps


def test_names_are_unique() -> None:
    names = [case.name for case in CATALOGUE]
    assert len(set(names)) == len(names)
    assert list(CASES) == names


@pytest.mark.parametrize(("name", "dtype"), PAIRS)
def test_build_is_deterministic_and_in_the_dtype(name: str, dtype: str) -> None:
    first, second = built(name, dtype), built(name, dtype)
    assert first.dtype == format_of(dtype).np_dtype
    assert first.shape == second.shape
    assert digest(first) == digest(second)


def test_bits_do_not_depend_on_the_process() -> None:
    # A seed taken from Python's salted str hash would give other inputs in every process (and
    # per xdist worker); run the builds in a child with a different PYTHONHASHSEED.
    script = ("import hashlib, json, numpy as np; from softmax_suite.suites.cases import CATALOGUE;"
              "print(json.dumps({c.name: hashlib.sha256(np.ascontiguousarray(c.build(c.widest))"
              ".tobytes()).hexdigest() for c in CATALOGUE if 'slow' not in c.tags}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True,
                           text=True, check=True)
    assert json.loads(child.stdout) == {c.name: digest(c.build(c.widest)) for c in DEFAULT}


def test_every_case_applies_to_some_dtype_and_has_a_valid_axis() -> None:
    for case in DEFAULT:
        assert case.dtypes and set(case.dtypes) <= set(DTYPES), case.name
        ndim = case.build(case.dtypes[0]).ndim
        assert -ndim <= case.axis < ndim, case.name


@pytest.mark.parametrize("dtype", STANDARD_DTYPES)  # the float8 formats: tests/test_float8.py
def test_layouts(dtype: str) -> None:
    for case in DEFAULT:
        if dtype not in case.dtypes:
            continue
        x = case.build(dtype)
        plain = dataclasses.replace(case, layout="contiguous").build(dtype)
        # The layout changes the memory, never the values the oracle and backends see.
        assert digest(x) == digest(plain), case.name
        if case.layout == "contiguous":
            assert x.flags.c_contiguous, case.name
    strided = built("strided", dtype)
    assert not strided.flags.c_contiguous and not strided.flags.f_contiguous
    assert strided.strides[-1] == 2 * strided.itemsize
    transposed = built("transposed", dtype)
    assert not transposed.flags.c_contiguous and transposed.flags.f_contiguous
    # The reduced (last) axis is the strided one: each step jumps a whole column of 16.
    assert transposed.strides[-1] == transposed.shape[0] * transposed.itemsize


@pytest.mark.parametrize("dtype", STANDARD_DTYPES)  # the float8 formats: tests/test_float8.py
def test_dominant_gaps_straddle_p_ln2(dtype: str) -> None:
    # The gaps are 1 below and 1 above p ln2 plus a spread of [0, 0.5]; rounding the offset rows
    # (the leader at 40) into bfloat16 moves a gap by at most 0.125, so the sides must hold.
    fmt = format_of(dtype)
    below = leader_gaps(built("dominant_gap_below", dtype))
    above = leader_gaps(built("dominant_gap_above", dtype))
    assert np.nanmax(below) < fmt.absorb_gap < np.nanmin(above)
    assert np.nanmin(below) > fmt.absorb_gap - 1.2 and np.nanmax(above) < fmt.absorb_gap + 1.7
    for x in (built("dominant_gap_below", dtype), built("dominant_gap_above", dtype)):
        rows = x.astype(np.float64)
        # Exactly one leader per row (the others trail it by more than 4).
        assert ((rows == rows.max(axis=1, keepdims=True)).sum(axis=1) == 1).all()


@pytest.mark.parametrize("dtype", STANDARD_DTYPES)  # the float8 formats: tests/test_float8.py
def test_absorb_gap_rows_hold_their_counts_at_p_ln2(dtype: str) -> None:
    fmt = format_of(dtype)
    x = built("absorb_gap_n1k", dtype)
    gap, rest = (float(np.array(-k * fmt.absorb_gap).astype(fmt.np_dtype)) for k in (1, 2))
    assert x.shape == (4, 1024)
    rows = x.astype(np.float64)
    assert rows.argmax(axis=1).tolist() == [0, 0, 511, 1023]
    assert (rows.max(axis=1) == 0).all() and ((rows == 0).sum(axis=1) == 1).all()
    assert (rows == gap).sum(axis=1).tolist() == [1023, 500, 500, 500]
    assert ((rows == 0) | (rows == gap) | (rows == rest)).all()
    # The point of the gap: e^gap is about u, and 1 + e^gap in the format is 1 or 1 + 2u, so a
    # running sum that holds the maximum misses about u on each of them.
    one, u = fmt.np_dtype.type(1), fmt.u
    e = fmt.np_dtype.type(np.exp(gap))
    assert 0.98 < float(mpmath.exp(gap)) / u < 1.02
    assert float(one + e) in (1.0, 1.0 + 2 * u)
    assert float(mpmath.exp(rest)) < 1.1 * u * u


@pytest.mark.parametrize("dtype", STANDARD_DTYPES)  # the float8 formats: tests/test_float8.py
def test_underflow_gaps_cover_the_subnormal_band_and_beyond(dtype: str) -> None:
    fmt = format_of(dtype)
    x = built("underflow_gaps", dtype)
    gaps = leader_gaps(x)
    for row in gaps:
        row = row[~np.isnan(row)]
        assert (row < -fmt.exp_subnormal_below).any()
        assert ((row > -fmt.exp_subnormal_below) & (row < -fmt.exp_zero_below)).any()
        assert (row > -fmt.exp_zero_below).any()
    # What the gaps are for: the exact softmax rounds to normal, subnormal and zero in each row.
    y = np.abs(cache.reference("softmax", x, CASES["underflow_gaps"].axis).rounded.astype(np.float64))
    assert ((y >= fmt.min_normal).any(axis=1)).all()
    assert (((y > 0) & (y < fmt.min_normal)).any(axis=1)).all()
    assert ((y == 0).any(axis=1)).all()


# The largest x with finite exp(x), from docs/numerics.md (float64's printed to 15 digits there).
EXP_OVERFLOW = {"float16": 11.0859375, "bfloat16": 88.5, "float32": 88.72283172607422,
                "float64": 709.782712893384}


@pytest.mark.parametrize("dtype", STANDARD_DTYPES)  # the float8 formats: tests/test_float8.py
def test_overflow_edge_holds_the_edge_and_the_next_value(dtype: str) -> None:
    fmt = format_of(dtype)
    x = built("overflow_edge", dtype)
    edge = fmt.exp_overflow
    above = float(np.nextafter(np.array(edge, fmt.np_dtype), np.array(np.inf, fmt.np_dtype)))
    assert edge == pytest.approx(EXP_OVERFLOW[dtype], rel=1e-15)
    assert edge in x and above in x
    # exp overflows to inf from 2^emax (2 - 2^-p) up (round to nearest): edge is below it, above
    # is not, so the pair really brackets the overflow threshold of the format.
    with mpmath.workprec(200):
        threshold = mpmath.ldexp(2 - mpmath.ldexp(1, -fmt.p), fmt.emax)
        assert mpmath.exp(edge) < threshold <= mpmath.exp(above)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_long_rows_for_sixteen_bit(dtype: str) -> None:
    long_cases = [c for c in DEFAULT if dtype in c.dtypes
                  and c.build(dtype).shape[c.axis] >= 65536]
    assert {c.name for c in long_cases} >= {"long_random_n65k", "long_equal_n65k"}
    # The point of long_equal: its row sum of exps is 65536 ones, which float16 cannot hold.
    equal = built("long_equal_n65k", dtype)
    assert equal.shape == (1, 65536) and (equal == equal[0, 0]).all()
    assert equal.shape[-1] > format_of("float16").max


@pytest.mark.parametrize("dtype", STANDARD_DTYPES)  # the float8 formats: tests/test_float8.py
def test_special_cases_hold_what_they_claim(dtype: str) -> None:
    fmt = format_of(dtype)
    as64 = {name: built(name, dtype).astype(np.float64)
            for name in ("nan", "pos_inf", "all_neg_inf", "empty", "neg_inf_mask", "single_element",
                         "tied_max", "huge_range")}
    nan = as64["nan"]
    assert np.isnan(nan[:3]).any(axis=1).all() and np.isfinite(nan[3]).all()
    assert np.isposinf(nan[1]).any() and np.isneginf(nan[2]).any()
    pos_inf = as64["pos_inf"]
    assert not np.isnan(pos_inf).any()
    assert np.isposinf(pos_inf).sum(axis=1).tolist() == [1, 2, 1, 0]
    assert np.isneginf(pos_inf[2]).any()
    all_neg_inf = as64["all_neg_inf"]
    assert np.isneginf(all_neg_inf).all(axis=1).tolist() == [False, True, False, True]
    assert np.isfinite(all_neg_inf[[0, 2]]).all()
    assert as64["empty"].shape == (3, 0)
    masked = as64["neg_inf_mask"]
    finite = np.isfinite(masked)
    assert finite.any(axis=1).all() and finite[-1].sum() == 1
    assert 0.3 < np.isneginf(masked).mean() < 0.5
    single = as64["single_element"]
    assert single.shape == (512, 1)
    # min_subnormal must survive the rounding into the dtype, or the case tests 0 twice.
    assert single[:6, 0].tolist() == [fmt.max, -fmt.max, 0.0, fmt.min_subnormal, -np.inf, fmt.exp_overflow]
    tied = as64["tied_max"]
    assert (tied == tied.max(axis=1, keepdims=True)).sum(axis=1).tolist() == [2, 3, 4, 7, 16, 2]
    huge = as64["huge_range"]
    assert fmt.max in huge[0] and -fmt.max in huge[0]
    # x - a overflows in the dtype for the -max entry: that is the case's point.
    with np.errstate(over="ignore"):
        assert np.isneginf(np.array(-fmt.max, fmt.np_dtype) - np.array(fmt.max, fmt.np_dtype))
    tagged = {case.name for case in CATALOGUE if "special" in case.tags}
    assert tagged == {"all_neg_inf", "pos_inf", "nan", "empty", "patterns_zero_x_nonfinite",
                      "patterns_x_zeros_nonfinite", "patterns_x_max_nonfinite"}


def names(cases) -> list[str]:
    return [case.name for case in cases]


def test_select_cases_globbing_and_the_slow_rule() -> None:
    everything = names(CATALOGUE)
    slow = [case.name for case in CATALOGUE if "slow" in case.tags]
    assert slow == ["long_random_n4M",
                    *(f"ladder_{rows}_n16777217" for rows in ("uniform", "near_uniform", "random"))]
    assert names(select_cases(None)) == [n for n in everything if n not in slow]
    assert names(select_cases([])) == names(select_cases(None))
    assert names(select_cases(None, include_slow=True)) == everything
    assert names(select_cases(["random_*"])) == [
        "random_n2", "random_n31_s3", "random_n1k_s1", "random_n1k_s10", "random_n1k_s100",
        "random_n100k_s10"]
    # A glob never pulls in a slow case; --slow or the exact name does.
    assert names(select_cases(["long_*"])) == ["long_random_n65k", "long_equal_n65k", "long_random_n1M"]
    assert names(select_cases(["*n4M"])) == []
    assert names(select_cases(["long_*"], include_slow=True)) == [
        "long_random_n65k", "long_equal_n65k", "long_random_n1M", "long_random_n4M"]
    assert names(select_cases(["long_random_n4M"])) == ["long_random_n4M"]
    # Several patterns: their union, in catalogue order, each case once.
    assert names(select_cases(["nan", "glossary", "gloss*"])) == ["glossary", "nan"]
    assert names(select_cases(["axis?_?d"])) == ["axis1_3d", "axis0_4d", "axis2_4d"]
    assert select_cases(["GLOSSARY"]) == [] and select_cases(["no_such_case"]) == []
