"""Correct rounding of exact binary values into a format, and the unit in the last place.

Values arrive as mpmath mpf tuples (sign, man, exp, bc), i.e. (-1)^sign * man * 2^exp. They
are rounded once, to nearest with ties to even, directly into the target format with exact
integer arithmetic; never through float64 first, which would round twice.
"""

from __future__ import annotations

import math

import numpy as np
from mpmath.libmp import finf, fnan, fninf

from oracle.formats import Format


def round_to_format(value: tuple, fmt: Format) -> float:
    """Round an mpf tuple to nearest-even in fmt; returns the result as an exact Python float.

    Subnormals are produced with the quantum 2^(emin - p + 1); a result at or beyond
    2^emax * (2 - 2^-p) overflows to infinity, as IEEE 754 prescribes for round-to-nearest.
    """
    sign, man, exp, bc = value
    if not man:
        if value == fnan:
            return math.nan
        if value == finf:
            return math.inf
        if value == fninf:
            return -math.inf
        return -0.0 if sign else 0.0
    top = exp + bc - 1  # floor(log2 |value|)
    if top < fmt.emin - fmt.p:  # below half the smallest subnormal: rounds to zero
        return -0.0 if sign else 0.0
    if top > fmt.emax:
        return -math.inf if sign else math.inf
    quantum = max(top, fmt.emin) - fmt.p + 1
    shift = quantum - exp
    if shift <= 0:
        integer = man << -shift
    else:
        integer = man >> shift
        remainder = man - (integer << shift)
        half = 1 << (shift - 1)
        if remainder > half or (remainder == half and integer & 1):
            integer += 1
    if integer and quantum + integer.bit_length() - 1 > fmt.emax:
        result = math.inf
    else:
        result = math.ldexp(integer, quantum)
    return -result if sign else result


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
