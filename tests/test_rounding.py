"""oracle.rounding and softmax_suite.formats: round_to_format against single-rounding casts and an
independent Fraction rounding, ulp on a table, and the format thresholds of docs/numerics.md."""

from __future__ import annotations

import math
from pathlib import Path

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath.libmp import finf, fnan, fninf, from_float, from_man_exp, fzero

from softmax_suite.formats import FORMATS, format_of
from softmax_suite.formats import STANDARD_DTYPES as DTYPES  # the float8 formats: tests/test_float8.py
from softmax_suite.oracle.rounding import round_to_format, round_values, ulp
from tests.reference_rounding import UNSIGNED, reference_round

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
BF16 = np.dtype(ml_dtypes.bfloat16)
F16_MAX, F32_MAX, BF16_MAX = 65504.0, float(np.finfo(np.float32).max), float(ml_dtypes.finfo(BF16).max)
# mpmath has no negative zero (from_float(-0.0) is fzero); this tuple is how a caller asks for -0.
NEGATIVE_ZERO = (1, 0, 0, 0)


def as_mpf(value: float) -> tuple:
    """The exact mpf tuple of a float, keeping the sign of zero."""
    return NEGATIVE_ZERO if value == 0 and math.copysign(1.0, value) < 0 else from_float(value)


def same(a: float, b: float) -> bool:
    """Bit-for-bit equality of two Python floats: the sign of zero counts, NaN equals NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def cast(value: float, source, target) -> float:
    """numpy's (or ml_dtypes') conversion of value, held in dtype source, into dtype target."""
    with np.errstate(over="ignore"):
        return float(np.array(value, source).astype(target))


def step(value: float, toward: float, dtype) -> float:
    with np.errstate(over="ignore"):
        return float(np.nextafter(np.array(value, dtype), np.array(toward, dtype)))


def midpoint_above(value: float, dtype) -> float:
    """(value + next value up in dtype) / 2, exact in float64 for the three narrow dtypes."""
    return (value + step(value, math.inf, dtype)) / 2


# -- round_to_format against casts that are one correct rounding ------------------------------

def binade_values(name: str):
    """float64 values spread over every binade of the format, from below half the smallest
    subnormal to beyond max, with random 53-bit significands and both signs."""
    fmt = FORMATS[name]
    exponents = st.integers(fmt.emin - fmt.p - 3 - 52, fmt.emax + 1 - 52)
    magnitude = st.builds(math.ldexp, st.integers(2**52, 2**53 - 1), exponents)
    return st.builds(lambda m, negative: -m if negative else m, magnitude, st.booleans())


def exact_ties(name: str, source) -> st.SearchStrategy[float]:
    """Exact midpoints between neighbours of the format (representable in the source dtype)."""
    dtype = FORMATS[name].np_dtype
    bits = st.integers(0, int(np.array(ml_dtypes.finfo(dtype).max, dtype).view(UNSIGNED[dtype.itemsize])) - 1)

    def tie(b: int, negative: bool) -> float:
        value = midpoint_above(float(np.array(b, UNSIGNED[dtype.itemsize]).view(dtype)), dtype)
        assert float(np.array(value, source)) == value
        return -value if negative else value

    return st.builds(tie, bits, st.booleans())


ANY_FLOAT64 = st.floats(allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("name", ["float16", "float32"])
@SETTINGS
@given(data=st.data())
def test_matches_numpy_cast_from_float64(name, data):
    # numpy's float64 -> float16 and float64 -> float32 casts round once, to nearest even.
    value = data.draw(ANY_FLOAT64 | binade_values(name) | exact_ties(name, np.float64))
    assert same(round_to_format(as_mpf(value), FORMATS[name]), cast(value, np.float64, name))


@SETTINGS
@given(data=st.data())
def test_matches_ml_dtypes_bfloat16_from_float32(data):
    # ml_dtypes rounds float32 -> bfloat16 once, to nearest even; the inputs must be float32.
    value = data.draw(st.floats(width=32, allow_nan=False, allow_infinity=False)
                      | exact_ties("bfloat16", np.float32)
                      | binade_values("bfloat16").filter(lambda v: abs(v) <= F32_MAX)
                                                  .map(lambda v: float(np.float32(v))))
    assert same(round_to_format(as_mpf(value), FORMATS["bfloat16"]), cast(value, np.float32, BF16))


@pytest.mark.parametrize("name", DTYPES)
@SETTINGS
@given(data=st.data())
def test_round_values_rounds_float64_once_into_every_format(name, data):
    # Case inputs and cotangents are made in float64 and rounded by round_values, whatever
    # ml_dtypes version casts bfloat16: the independent Fraction rounding is the reference.
    fmt = FORMATS[name]
    special = st.sampled_from([1 + 2.0**-8 + 2.0**-30, -0.0, 1e308, 5e-324])
    # float64 itself: every value is exact, and no tie of it is a float64.
    narrow = binade_values(name) | exact_ties(name, np.float64) if name != "float64" else special
    value = data.draw(ANY_FLOAT64 | narrow | special)
    got = round_values(np.array([value]), fmt)
    assert got.dtype == fmt.np_dtype
    assert same(float(got[0]), float(reference_round(value, fmt.np_dtype)))


def test_round_values_does_not_round_bfloat16_twice():
    # 1 + 2^-8 + 2^-30 lies above the bfloat16 tie 1 + 2^-8: the nearest is 1 + 2^-7. Through float32
    # (ml_dtypes before 0.7) it first becomes the tie 1 + 2^-8, which then goes to the even 1.
    assert float(round_values(1 + 2.0**-8 + 2.0**-30, FORMATS["bfloat16"])) == 1 + 2.0**-7
    assert float(np.float32(1 + 2.0**-8 + 2.0**-30).astype(BF16)) == 1.0
    assert list(round_values(np.array([np.nan, np.inf, -np.inf]), FORMATS["bfloat16"]).astype(float)[1:]) \
        == [np.inf, -np.inf]


# (target, source dtype of the input, input, expected). Ties go to the even integer significand;
# half the smallest subnormal is a tie between 0 (even) and min subnormal (odd); max + ulp(max)/2
# is a tie between max (odd, all ones) and the virtual 2^(emax+1) (even), i.e. infinity.
BOUNDARIES = [
    # float16: p = 11, min subnormal 2^-24, min normal 2^-14, max 65504, ulp(max) = 32
    ("float16", np.float64, 1 + 2.0**-11, 1.0),
    ("float16", np.float64, 1 + 3 * 2.0**-11, 1 + 2.0**-9),
    ("float16", np.float64, 2.0**-25, 0.0),
    ("float16", np.float64, 2.0**-25 * (1 + 2.0**-40), 2.0**-24),
    ("float16", np.float64, 3 * 2.0**-25, 2.0**-23),
    ("float16", np.float64, 5 * 2.0**-25, 2.0**-23),
    ("float16", np.float64, 2.0**-14 - 2.0**-25, 2.0**-14),  # largest subnormal (odd) vs min normal
    ("float16", np.float64, 65520.0, math.inf),  # max + ulp(max)/2
    ("float16", np.float64, math.nextafter(65520.0, 0), F16_MAX),
    ("float16", np.float64, 65519.0, F16_MAX),
    ("float16", np.float64, 1e300, math.inf),
    ("float16", np.float64, -65520.0, -math.inf),
    ("float16", np.float64, -3 * 2.0**-25, -(2.0**-23)),
    ("float16", np.float64, -(2.0**-25), -0.0),
    ("float16", np.float64, -1e-300, -0.0),
    ("float16", np.float64, 0.0, 0.0),
    ("float16", np.float64, -0.0, -0.0),
    # float32: p = 24, min subnormal 2^-149, min normal 2^-126, ulp(max) = 2^104
    ("float32", np.float64, 1 + 2.0**-24, 1.0),
    ("float32", np.float64, 1 + 3 * 2.0**-24, 1 + 2.0**-22),
    ("float32", np.float64, 2.0**-150, 0.0),
    ("float32", np.float64, 3 * 2.0**-150, 2.0**-148),
    ("float32", np.float64, 2.0**-126 - 2.0**-150, 2.0**-126),
    ("float32", np.float64, F32_MAX + 2.0**103, math.inf),
    ("float32", np.float64, math.nextafter(F32_MAX + 2.0**103, 0), F32_MAX),
    ("float32", np.float64, -(F32_MAX + 2.0**103), -math.inf),
    ("float32", np.float64, -(2.0**-150), -0.0),
    ("float32", np.float64, -0.0, -0.0),
    # bfloat16 from float32: p = 8, min subnormal 2^-133, min normal 2^-126, ulp(max) = 2^120
    ("bfloat16", np.float32, 1 + 2.0**-8, 1.0),
    ("bfloat16", np.float32, 1 + 3 * 2.0**-8, 1 + 2.0**-6),
    ("bfloat16", np.float32, 2.0**-134, 0.0),
    ("bfloat16", np.float32, 3 * 2.0**-134, 2.0**-132),
    ("bfloat16", np.float32, 2.0**-126 - 2.0**-134, 2.0**-126),
    ("bfloat16", np.float32, BF16_MAX + 2.0**119, math.inf),
    ("bfloat16", np.float32, float(np.nextafter(np.float32(BF16_MAX + 2.0**119), np.float32(0))), BF16_MAX),
    ("bfloat16", np.float32, F32_MAX, math.inf),
    ("bfloat16", np.float32, -(BF16_MAX + 2.0**119), -math.inf),
    ("bfloat16", np.float32, -(2.0**-134), -0.0),
    ("bfloat16", np.float32, -0.0, -0.0),
]


@pytest.mark.parametrize(("name", "source", "value", "expected"), BOUNDARIES)
def test_boundary_values(name, source, value, expected):
    assert float(np.array(value, source)) == value  # the input is exact in its source dtype
    fmt = FORMATS[name]
    assert same(round_to_format(as_mpf(value), fmt), expected)
    assert same(cast(value, source, fmt.np_dtype), expected)
    assert same(reference_round(value, fmt.np_dtype), expected)


@pytest.mark.parametrize(("value", "expected"), [
    (fnan, math.nan), (finf, math.inf), (fninf, -math.inf), (fzero, 0.0), (NEGATIVE_ZERO, -0.0),
])
@pytest.mark.parametrize("name", DTYPES)
def test_special_tuples(name, value, expected):
    assert same(round_to_format(value, FORMATS[name]), expected)


# -- against the independent Fraction rounding, on values float64 cannot hold -----------------

def format_values(name: str, count: int, seed: int) -> list[float]:
    """Random finite values of the format (uniform over bit patterns) plus its landmarks."""
    fmt = FORMATS[name]
    dtype = fmt.np_dtype
    unsigned = UNSIGNED[dtype.itemsize]
    top = int(np.array(fmt.max, dtype).view(unsigned))
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, top, size=count, endpoint=True, dtype=np.uint64).astype(unsigned)
    landmarks = [0.0, fmt.min_subnormal, 3 * fmt.min_subnormal, fmt.min_normal - fmt.min_subnormal,
                 fmt.min_normal, 1.0, step(1.0, 0.0, dtype), step(fmt.max, 0.0, dtype), fmt.max]
    return landmarks + [float(v) for v in bits.view(dtype)]


def perturbed(value: float, dtype) -> list[mpmath.mpf]:
    """Exact values around a format value: off by 2^-60 relative, the exact midpoint to the next
    value up, and that midpoint off by 2^-150 relative either way; both signs."""
    with mpmath.workprec(256):  # enough for every product below to be exact
        v = mpmath.mpf(value)
        up = mpmath.mpf(step(value, math.inf, dtype))
        if mpmath.isinf(up):  # the virtual next value beyond max is max + ulp(max)
            up = 2 * v - mpmath.mpf(step(value, 0.0, dtype))
        middle = (v + up) / 2
        tiny = mpmath.mpf(2) ** -150
        values = [v * (1 + mpmath.mpf(2) ** -60), v * (1 - mpmath.mpf(2) ** -60),
                  middle, middle * (1 + tiny), middle * (1 - tiny), v * (1 + tiny)]
        return [w for v in values if v != 0 for w in (v, -v)]


@pytest.mark.parametrize("name", DTYPES)
def test_agrees_with_fraction_reference(name):
    fmt = FORMATS[name]
    checked, mismatches = 0, []
    for value in format_values(name, 80, seed=20261101):
        for v in perturbed(value, fmt.np_dtype):
            checked += 1
            got, want = round_to_format(v._mpf_, fmt), reference_round(v, fmt.np_dtype)
            if not same(got, want):
                mismatches.append((mpmath.nstr(v, 30), got, want))
    assert checked >= 900
    assert not mismatches, mismatches[:5]


@pytest.mark.parametrize("name", DTYPES)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(man=st.integers(2**199, 2**200 - 1), offset=st.integers(-4, 4), negative=st.booleans(),
       data=st.data())
def test_agrees_with_fraction_reference_on_200_bit_values(name, man, offset, negative, data):
    # Random 200-bit significands in every binade, including beyond max and below half the
    # smallest subnormal; offset pushes the last bits onto and around exact ties.
    fmt = FORMATS[name]
    top = data.draw(st.integers(fmt.emin - fmt.p - 2, fmt.emax + 1))
    if data.draw(st.booleans()):  # an exact tie for this binade's quantum, then nudged
        quantum = max(top, fmt.emin) - fmt.p + 1
        shift = 200 - 1 - (top - quantum)
        man = ((man >> shift) << shift) | (1 << (shift - 1))
        man += offset
    value = from_man_exp(-man if negative else man, top - 199)  # exact, normalized
    assert same(round_to_format(value, fmt), reference_round(mpmath.mp.make_mpf(value), fmt.np_dtype))


# -- ulp ---------------------------------------------------------------------------------------

# ulp(1) = 2^(1-p); ulp(min normal) = ulp(0) = min subnormal; ulp(max) = 2^(emax-p+1).
ULPS = [
    ("float16", 1.0, 2.0**-10), ("float16", 2.0**-14, 2.0**-24), ("float16", 0.0, 2.0**-24),
    ("float16", 65504.0, 32.0), ("float16", 3 * 2.0**-24, 2.0**-24), ("float16", -1.5, 2.0**-10),
    ("float16", math.nextafter(1.0, 0), 2.0**-11),
    ("bfloat16", 1.0, 2.0**-7), ("bfloat16", 2.0**-126, 2.0**-133), ("bfloat16", 0.0, 2.0**-133),
    ("bfloat16", BF16_MAX, 2.0**120), ("bfloat16", -(2.0**-130), 2.0**-133),
    ("float32", 1.0, 2.0**-23), ("float32", 2.0**-126, 2.0**-149), ("float32", 0.0, 2.0**-149),
    ("float32", F32_MAX, 2.0**104), ("float32", -3.0, 2.0**-22),
    ("float64", 1.0, 2.0**-52), ("float64", 2.0**-1022, 2.0**-1074), ("float64", 0.0, 2.0**-1074),
    ("float64", float(np.finfo(np.float64).max), 2.0**971), ("float64", 5e-324, 2.0**-1074),
    ("float64", -0.0, 2.0**-1074),
]


@pytest.mark.parametrize(("name", "value", "expected"), ULPS)
def test_ulp_table(name, value, expected):
    assert ulp(value, FORMATS[name]) == expected


@pytest.mark.parametrize("name", DTYPES)
def test_ulp_is_the_gap_to_the_next_value_away_from_zero(name):
    # Below max, ulp(v) is the distance from v to its neighbour of larger magnitude.
    dtype = FORMATS[name].np_dtype
    for value in format_values(name, 300, seed=7):
        if value == FORMATS[name].max:
            continue
        for v in (value, -value):
            away = step(v, math.copysign(math.inf, v), dtype)
            assert ulp(v, FORMATS[name]) == abs(away - v), (name, v)


# -- the format table of docs/numerics.md -------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "numerics.md"


def _number(cell: str) -> float:
    cell = cell.strip().strip("`")
    return 2.0 ** int(cell[2:]) if cell.startswith("2^") else float(cell)


def docs_format_table() -> dict[str, tuple]:
    """The format table of docs/numerics.md, by dtype: p, u, max (as printed: 1.7977e308 is its
    first digits, no float to compare), min normal, min subnormal, largest x with finite exp(x),
    subnormal-below, zero-below, absorb gap."""
    lines = DOCS.read_text().splitlines()
    header = lines.index("| | float16 | bfloat16 | float32 | float64 |")
    table: dict[str, list] = {name: [] for name in DTYPES}
    for index, line in enumerate(lines[header + 2:header + 10]):
        for name, cell in zip(DTYPES, line.split("|")[2:-1], strict=True):
            table[name] += [cell.strip()] if index == 2 else [_number(c) for c in cell.split(" / ")]
    return {name: (int(values[0]), *values[1:]) for name, values in table.items()}


@pytest.mark.parametrize("name", DTYPES)
def test_format_thresholds_match_the_docs_table(name):
    p, u, big, min_normal, min_subnormal, overflow, subnormal, zero, absorb = docs_format_table()[name]
    fmt = format_of(name)
    assert (fmt.p, fmt.u, fmt.min_normal, fmt.min_subnormal) == (p, u, min_normal, min_subnormal)
    assert fmt.max == float(ml_dtypes.finfo(fmt.np_dtype).max)
    digits = len(big.partition("e")[0].replace(".", ""))
    assert f"{fmt.max:.{digits}g}".replace("e+", "e") == big
    assert fmt.exp_overflow == overflow  # printed in full: exact
    assert fmt.exp_subnormal_below == pytest.approx(subnormal, abs=5e-5)
    assert fmt.exp_zero_below == pytest.approx(zero, abs=5e-5)
    assert fmt.absorb_gap == pytest.approx(absorb, abs=5e-3)


def neighbours(threshold: mpmath.mpf, dtype) -> tuple[float, float]:
    """The largest value of dtype below an (irrational) threshold and the smallest above it."""
    guess = cast(float(threshold), np.float64, dtype)
    below = guess if guess < threshold else step(guess, -math.inf, dtype)
    above = step(below, math.inf, dtype)
    assert below < threshold < above
    return below, above


def exp_rounded(x: float, dtype, shift: int = 0) -> float:
    with mpmath.workprec(300):
        return reference_round(shift + mpmath.exp(mpmath.mpf(x)), dtype)


@pytest.mark.parametrize("name", DTYPES)
def test_thresholds_mean_what_they_say(name):
    # Checked against exp at 300 bits and the independent rounding, on the format's own values.
    fmt = FORMATS[name]
    dtype = fmt.np_dtype
    with mpmath.workprec(300):
        ln2 = mpmath.log(2)
        thresholds = fmt.emin * ln2, (fmt.emin - fmt.p) * ln2, fmt.p * ln2
    # The properties return these thresholds rounded to float64.
    assert (fmt.exp_subnormal_below, fmt.exp_zero_below, fmt.absorb_gap) == tuple(map(float, thresholds))
    subnormal_below, zero_below, absorb_gap = thresholds
    # exp(exp_overflow) is finite; exp of the next value up overflows.
    assert math.isfinite(exp_rounded(fmt.exp_overflow, dtype))
    assert exp_rounded(step(fmt.exp_overflow, math.inf, dtype), dtype) == math.inf
    # exp(x) is subnormal just below emin ln 2 and normal just above.
    below, above = neighbours(subnormal_below, dtype)
    assert 0 < exp_rounded(below, dtype) < fmt.min_normal <= exp_rounded(above, dtype)
    # exp(x) rounds to 0 just below (emin - p) ln 2 and to the smallest subnormal just above.
    below, above = neighbours(zero_below, dtype)
    assert (exp_rounded(below, dtype), exp_rounded(above, dtype)) == (0.0, fmt.min_subnormal)
    # 1 + e^-d rounds to 1 for d just above p ln 2 and to 1 + 2u just below it.
    below, above = neighbours(absorb_gap, dtype)
    assert exp_rounded(-above, dtype, shift=1) == 1.0
    assert exp_rounded(-below, dtype, shift=1) == 1 + 2 * fmt.u
