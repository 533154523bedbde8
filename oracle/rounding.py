"""Correct rounding of exact binary values into a format, and the unit in the last place.

Values arrive as mpmath mpf tuples (sign, man, exp, bc), i.e. (-1)^sign * man * 2^exp. They
are rounded once, to nearest with ties to even, directly into the target format with exact
integer arithmetic; never through float64 first, which would round twice.

Overflow is decided as IEEE 754 decides it: round to nearest even with an unbounded exponent, and
a result beyond the format's max overflows, to infinity, or to NaN in a format without infinities
(float8_e4m3fn: 464, the midpoint of 448 and the NaN pattern's 480, rounds to 448, its even
neighbour, anything above it to NaN; softmax_suite.formats). An infinity rounds to NaN there.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from mpmath.libmp import (
    finf,
    fnan,
    fninf,
    from_float,
    fzero,
    mpf_add,
    mpf_sub,
    round_ceiling,
    round_floor,
    round_nearest,
    to_float,
)

from softmax_suite.formats import Format
from softmax_suite.oracle.doubleword import two_sum as dw_two_sum

# Exponents of exact values are clamped to +-SCALE_LIMIT: far beyond every format's range
# (exp(-2 * float32 max) has an exponent near -2^128), where only "zero" or "huge" matters.
SCALE_LIMIT = 1 << 20


def round_to_format(value: tuple, fmt: Format, beyond: int = 0) -> float:
    """Round an mpf tuple to nearest in fmt; returns the result as an exact Python float.

    beyond is the sign of (exact - value) where the exact value is known only to lie a hair
    beyond value, closer than any format boundary (value is a midpoint plus a term too small
    to carry): a tie then goes the way that term points. With beyond = 0, value is the exact
    value and a tie goes to even. Subnormals are produced with the quantum 2^(emin - p + 1); a
    result rounded (with an unbounded exponent) beyond max overflows to fmt.overflow (infinity, or
    NaN in float8_e4m3fn): in an IEEE format every value from max + ulp/2 on, as IEEE 754
    prescribes for round-to-nearest (and max + ulp/2 less a hair rounds to max).
    """
    sign, man, exp, bc = value
    if not man:
        if value == fnan:
            return math.nan
        if value == finf:
            return fmt.overflow
        if value == fninf:
            return -fmt.overflow
        # An exact zero keeps its sign; a hair beyond zero takes the hair's.
        return -0.0 if (beyond < 0 if beyond else sign) else 0.0
    top = exp + bc - 1  # floor(log2 |value|)
    if top < fmt.emin - fmt.p:  # below half the smallest subnormal: rounds to zero
        return -0.0 if sign else 0.0
    if top > fmt.emax:
        return -fmt.overflow if sign else fmt.overflow
    quantum = max(top, fmt.emin) - fmt.p + 1
    shift = quantum - exp
    if shift <= 0:
        integer = man << -shift
    else:
        integer = man >> shift
        remainder = man - (integer << shift)
        half = 1 << (shift - 1)
        outward = -beyond if sign else beyond  # > 0: the exact magnitude is a hair larger
        if remainder > half or (remainder == half and (outward > 0 or (outward == 0 and integer & 1))):
            integer += 1
    # Past 2^(emax+1) (float64's is beyond a Python float), or past max (float8_e4m3fn's 480).
    if integer and quantum + integer.bit_length() - 1 > fmt.emax:
        result = fmt.overflow
    else:
        result = math.ldexp(integer, quantum)  # exact: integer has at most p + 1 bits
        if result > fmt.max:
            result = fmt.overflow
    return -result if sign else result


def round_values(values: np.ndarray | float, fmt: Format) -> np.ndarray:
    """float64 values rounded once, to nearest even, into fmt: an array of fmt's dtype. numpy
    casts float64 to float16 and float32 in one rounding, but ml_dtypes before 0.7 casts to
    bfloat16 through float32, which rounds twice (1 + 2^-8 + 2^-30 became 1, not 1 + 2^-7):
    the same case would give other input bits on other versions. Scaling by the quantum of each
    value's binade is exact in float64, and rint rounds ties to even. Beyond max, and for
    infinities, the format's overflow (NaN in float8_e4m3fn, whose +-inf become NaN)."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        binade = np.frexp(v)[1] - 1  # floor(log2 |v|)
        quantum = (np.maximum(binade, fmt.emin) - fmt.p + 1).astype(np.int64)
        rounded = np.ldexp(np.rint(np.ldexp(v, -quantum)), quantum)
    rounded = np.where(np.isfinite(v), rounded, v)
    rounded = np.where(np.abs(rounded) > fmt.max, np.copysign(fmt.overflow, v), rounded)
    return rounded.astype(fmt.np_dtype)  # exact: every value is one of the format's


def ulp_exponent(scale: np.ndarray, fmt: Format, mant: np.ndarray | None = None) -> np.ndarray:
    """log2 of ulp(v) in fmt for exact values with floor(log2|v|) = scale; ulp(0) = min subnormal
    where mant (the significand, 0 for an exact zero, whose scale is 0) is given and 0."""
    exponent = np.maximum(scale, fmt.emin) - fmt.p + 1
    return exponent if mant is None else np.where(mant == 0, fmt.emin - fmt.p + 1, exponent)


def ulp(value: float, fmt: Format) -> float:
    """ulp(v) = 2^(max(floor(log2|v|), emin) - p + 1); ulp(0) is the smallest subnormal."""
    if value == 0 or not math.isfinite(value):
        return fmt.min_subnormal
    return math.ldexp(1.0, max(math.frexp(value)[1] - 1, fmt.emin) - fmt.p + 1)


def round_certified(high: np.ndarray, low: np.ndarray, exponent: np.ndarray, error: np.ndarray,
                    fmt: Format, third: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(rounded, decided) for v = (high + low + third) 2^exponent known within error |v| (relative);
    third (far below low) keeps a tiny term that would be lost in low, such as L in log_softmax
    = (a tie of the format) - L.

    In units of the quantum 2^q of v's binade, W = v 2^-q = Wh + Wl and N its nearest integer: v
    rounds to N 2^q whenever the whole interval W (1 +- error) lies strictly between N - 1/2 and N +
    1/2, and between N - 1/4 and N + 1/2 (in magnitude) when N = 2^(p-1) opens a normal binade
    (below it, the quantum is half as large). Results beyond the format's max overflow
    (fmt.overflow: infinities, or NaN in float8_e4m3fn). The test never rounds the fraction f = W -
    N where it matters: Wh - rint(Wh) is exact (Sterbenz), two_sum splits it plus Wl exactly into f1
    + f2, and the distances from f1 to the boundaries near it are exact; f2 (plus the third word,
    one rounding, counted) and the error go to the other side, compared with a margin of 2^-52. So a
    value a hair from a tie of the format (log_softmax = a tie - 1e-24) is decided. A high word of 0
    with error 0 is an exact zero; an error of 1 or more leaves even the sign open: undecided.
    """
    high, low = np.broadcast_arrays(np.asarray(high, np.float64), np.asarray(low, np.float64))
    _, binade = np.frexp(high)
    # int32 exponents throughout: numpy's ldexp is several times slower with int64 ones.
    quantum = np.maximum(binade - 1 + np.asarray(exponent, np.int32), fmt.emin) - (fmt.p - 1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        shift = exponent - quantum
        whole = np.ldexp(high, shift)
        nearest = np.rint(whole)
        first, second = dw_two_sum(whole - nearest, np.ldexp(low, shift))
        if np.any(third):
            second = second + np.ldexp(third, shift)
        # On a tie, or past it, the lower words decide which neighbour is nearest.
        step = np.where((np.abs(first) > 0.5) | ((np.abs(first) == 0.5) & (first * second > 0)),
                        np.sign(first), 0.0)
        nearest, first = nearest + step, first - step
        sign = np.where(high < 0, -1.0, 1.0)
        first, second = sign * first, sign * second  # toward larger magnitude is positive
        width = (error * np.abs(whole) + np.abs(second) * 2.0**-52) * (1 + 2.0**-50)
        opening = (np.abs(nearest) == 2.0 ** (fmt.p - 1)) & (binade - 1 + exponent > fmt.emin)
        below = np.where(opening, 0.25, 0.5)
        margin = 1 - 2.0**-52
        decided = (second + width < (0.5 - first) * margin) & (width - second < (first + below) * margin)
        decided &= error < 1
        decided |= (high == 0) & (error == 0)
        rounded = np.copysign(np.ldexp(nearest, quantum), high)
    # N 2^q beyond max (2^(emax+1), or float8_e4m3fn's 480): the value reached max + ulp/2 (past
    # it in float8_e4m3fn, whose 464 rounds to an even 448), which overflows.
    return np.where(np.abs(rounded) > fmt.max, np.copysign(fmt.overflow, high), rounded), decided


# The exponent field of a float64: masking it out of |v| leaves 2^floor(log2 |v|) (0 for zeros and
# subnormals, inf for infinities and NaN).
_EXPONENT_FIELD = np.int64(0x7FF0000000000000)


def _nearest(values: np.ndarray, fmt: Format) -> np.ndarray:
    """values (float64) rounded to nearest even at fmt's precision and subnormal quantum, as float64;
    a zero's sign is lost and results past fmt's max are not made infinite. Adding
    C = 1.5 * 2^52 * q, q the quantum of v's binade (or the subnormal one), puts v + C in C's
    binade, whose spacing is q (p <= 50 keeps |v| below C / 3), so the addition rounds v to a
    multiple of q, ties to even (C / q is even), and subtracting C is exact."""
    binade = (np.ascontiguousarray(values).view(np.int64) & _EXPONENT_FIELD).view(np.float64)
    shifter = np.maximum(binade * (1.5 * 2.0 ** (53 - fmt.p)), 1.5 * 2.0 ** (53 + fmt.emin - fmt.p))
    return (values + shifter) - shifter


@cache
def _table(fmt: Format) -> np.ndarray:
    """fmt's bits indexed by the upper 9 + p - 1 bits of a float32 that holds a value of fmt exactly
    (its lower 24 - p bits are zero, subnormals included) or lies beyond fmt's max (its overflow:
    inf, or NaN in float8_e4m3fn, which ml_dtypes' cast gives as the spec does): numpy casts
    float32 to float16 one element at a time, ten times slower than this lookup (float16: 2^19
    entries; the float8 formats: 2^12 and 2^11)."""
    shift = 24 - fmt.p
    floats = (np.arange(1 << (32 - shift), dtype=np.uint32) << shift).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = floats.astype(fmt.np_dtype)
    return converted.view(np.uint8 if fmt.np_dtype.itemsize == 1 else np.uint16)


def _in_format(rounded: np.ndarray, fmt: Format) -> np.ndarray:
    """float64 values of fmt (or beyond its max: its overflow) as an array of fmt's dtype, exactly."""
    with np.errstate(over="ignore"):
        single = rounded.astype(np.float32)  # exact: every value of fmt is a float32
    if fmt.name == "bfloat16":
        return (single.view(np.uint32) >> 16).astype(np.uint16).view(fmt.np_dtype)
    return _table(fmt).take(single.view(np.uint32) >> (24 - fmt.p)).view(fmt.np_dtype)


def round_between(first: np.ndarray, second: np.ndarray, fmt: Format, out: np.ndarray | None = None,
                  finite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rounded, decided) for exact values known to lie between two float64 ends (in either order),
    for formats of 24 bits or fewer: decided where both ends round alike and have the same sign, for
    rounding to nearest is monotone, so every value between them rounds there too. The ends'
    sign is the result's (a zero between them has none: undecided). NaN ends decide nothing;
    finite=True: the caller knows there are none. Outside float32 (which numpy's cast rounds to,
    once, to nearest even), the rounding is _nearest's; numpy's float16 cast would cost 2 ns an
    element. rounded is out (an array of fmt's dtype) where given."""
    if fmt.p > 24:
        raise ValueError(f"round_between serves formats of 24 bits or fewer, not {fmt.name}")
    if out is None:
        out = np.empty(np.shape(first), fmt.np_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if fmt.name == "float32":
            out[...] = first
            # Comparing the bits compares the signs of zeros too.
            decided = out.view(np.uint32) == second.astype(np.float32).view(np.uint32)
        else:
            low, high = _nearest(first, fmt), _nearest(second, fmt)
            decided = (low == high) & (np.signbit(first) == np.signbit(second))
            out[...] = _in_format(np.copysign(low, first), fmt)
    if not finite:
        decided &= first == first
    return out, decided


def relative_ends(value: np.ndarray, error: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Ends for an exact value within error |value| of value (error < 1, else the ends' signs
    differ: undecided). With e = (error + 2^-51)(1 + 2^-40), fl(1 - e) errs by at most 2^-53 and
    fl(value fl(1 - e)) by u = 2^-53 relative (ends below 2^-1022, which err by 2^-1075, round to
    zero in every format this serves), so the ends lie outside value (1 -+ error)."""
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite error: NaN ends, undecided
        widened = (np.asarray(error) + 2.0**-51) * (1 + 2.0**-40)
        return value * (1 - widened), value * (1 + widened)


def absolute_ends(value: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ends for an exact value within B (absolute) of value, given error >= (B + u |value|)
    (1 + 2^-41), u = 2^-53: fl(value - error) <= value - error + u (|value| + error) <= value - B,
    and likewise above (callers whose value is itself a rounding, within u |value|, pass about
    (bound + 2^-52 |value|) (1 + 2^-40))."""
    return value - error, value + error


def round_interval(value: tuple, err: tuple, fmt: Format, precision: int, beyond: int = 0) -> float | None:
    """The correctly rounded value if both ends of the exact value's interval round alike, else
    None. The interval is value +- err; with beyond = +1 (-1) the exact value is known to lie
    strictly above (below) value, within err: value is then one end, taken as open
    (round_to_format's beyond), so that a midpoint plus a term of known sign is decided."""
    # Exact values, and the policy's NaN and infinities. A computed 0 with an error bound is
    # not exact: the true value may be a cancelled small number, so it goes to the interval.
    if err == fzero or value in (fnan, finf, fninf):
        return round_to_format(value, fmt)
    low = round_to_format(value, fmt, 1) if beyond > 0 else \
        round_to_format(mpf_sub(value, err, precision, round_floor), fmt)
    high = round_to_format(value, fmt, -1) if beyond < 0 else \
        round_to_format(mpf_add(value, err, precision, round_ceiling), fmt)
    if low == high and math.copysign(1.0, low) == math.copysign(1.0, high):
        return low
    if math.isnan(low) and math.isnan(high):  # both ends overflow in a format without infinities
        return low
    return None


def split_mpf(value: tuple, precision: int) -> tuple[float, float, int]:
    """(mant, mant_lo, scale) with value = (mant + mant_lo) * 2^scale and 1 <= |mant| <= 2."""
    sign, man, exp, bc = value
    if not man:
        return to_float(value), 0.0, 0
    scale = exp + bc - 1
    normalized = (sign, man, exp - scale, bc)
    mant = to_float(normalized, rnd=round_nearest)
    mant_lo = to_float(mpf_sub(normalized, from_float(mant), precision, round_nearest))
    return mant, mant_lo, max(-SCALE_LIMIT, min(SCALE_LIMIT, scale))
