"""The floating-point formats the suite measures, described by their parameters.

Every threshold the suite uses (overflow edge of exp, underflow gaps, the gap beyond which
1 + e^-d rounds to 1) is derived here from (p, emin, emax) so that tests, cases and the
oracle agree on one set of numbers.

The four IEEE 754 formats, and the two OCP 8-bit ones (OCP 8-bit Floating Point Specification
(OFP8) 1.0, the formats of ml_dtypes, torch and jax):

* float8_e5m2 is IEEE-like: p = 3, emin = -14, emax = 15, max 57344, infinities and NaNs;
* float8_e4m3fn ("fn": finite, NaN) has no infinities: p = 4, emin = -6, emax = 8, and of the top
  binade's significands the all-ones one (S.1111.111) is its only NaN, so its largest finite value
  is 1.110 2^8 = 448, not 1.111 2^8 = 480. Round to nearest even with an unbounded exponent, then
  a result beyond max overflows: in e4m3fn to NaN. So 464 (the midpoint of 448 and 480) rounds to
  448, its even neighbour, and anything above 464 to NaN; +-inf converts to NaN. That is the
  OCP spec's non-saturating conversion and ml_dtypes' (its casts, checked exhaustively by
  tests/test_float8.py), and the suite's policy: the oracle rounds exact values so. The spec also
  allows a saturating conversion (beyond max to +-448), which some kernels choose: where the exact
  value overflows, such a kernel returns a number where the correctly rounded result is NaN, a
  semantic difference (nan_missing, softmax_suite.oracle.metrics), not an error in ULPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import ml_dtypes
import numpy as np

from softmax_suite.dtypes import DTYPES, FLOAT8_DTYPES, STANDARD_DTYPES  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: precision p (with the hidden bit) and exponent range;
    infinity False for a format without infinities (overflow gives NaN), top_nan True where the
    all-ones significand of the top binade encodes NaN rather than a number (float8_e4m3fn)."""

    name: str
    p: int
    emin: int
    emax: int
    infinity: bool = True
    top_nan: bool = False

    @property
    def np_dtype(self) -> np.dtype:
        # bfloat16 and the float8 formats are ml_dtypes' (numpy has no such names).
        kind = getattr(ml_dtypes, self.name) if hasattr(ml_dtypes, self.name) else self.name
        return np.dtype(kind)

    @property
    def overflow(self) -> float:
        """What a finite value beyond the format's range rounds to (its sign aside): inf, or NaN
        for a format without infinities."""
        return math.inf if self.infinity else math.nan

    @property
    def u(self) -> float:
        """Unit roundoff 2^-p."""
        return math.ldexp(1.0, -self.p)

    @property
    def max(self) -> float:
        """The largest finite value: (2 - 2^(1-p)) 2^emax, one step less where that is NaN."""
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.p) * (2 if self.top_nan else 1), self.emax)

    @property
    def overflow_threshold(self) -> float:
        """max + ulp(max)/2: values beyond it in magnitude overflow (to inf or NaN). At it, a tie
        goes to even: in an IEEE format max's significand is odd and the tie overflows; in
        float8_e4m3fn 448 = 1.110 2^8 is even and 464 rounds to 448."""
        return self.max + math.ldexp(1.0, self.emax - self.p)  # inf for float64 (beyond float64)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.p + 1)

    @property
    def exp_overflow(self) -> float:
        """Largest x in the format with exp(x) finite in the format (exp(x) below
        overflow_threshold; exp(x) of a non-zero x of the format is never equal to it)."""
        # log(max + ulp/2), without forming max + ulp/2 (float64's is beyond float64).
        limit = math.log(self.max) + math.log1p(math.ldexp(1.0, self.emax - self.p) / self.max)
        quantum = math.ldexp(1.0, max(math.frexp(limit)[1] - 1, self.emin) - self.p + 1)
        return math.floor(limit / quantum) * quantum  # limit rounded down into the format

    @property
    def exp_subnormal_below(self) -> float:
        """exp(x) is subnormal for x below emin * ln 2."""
        return self.emin * math.log(2.0)

    @property
    def exp_zero_below(self) -> float:
        """exp(x) rounds to zero for x below (emin - p) * ln 2 (half the smallest subnormal)."""
        return (self.emin - self.p) * math.log(2.0)

    @property
    def absorb_gap(self) -> float:
        """1 + e^-d rounds to 1 for gaps d beyond p * ln 2."""
        return self.p * math.log(2.0)


FORMATS: dict[str, Format] = {
    "float16": Format("float16", p=11, emin=-14, emax=15),
    "bfloat16": Format("bfloat16", p=8, emin=-126, emax=127),
    "float32": Format("float32", p=24, emin=-126, emax=127),
    "float64": Format("float64", p=53, emin=-1022, emax=1023),
    "float8_e4m3fn": Format("float8_e4m3fn", p=4, emin=-6, emax=8, infinity=False, top_nan=True),
    "float8_e5m2": Format("float8_e5m2", p=3, emin=-14, emax=15),
}


@cache
def format_of(dtype: str | np.dtype) -> Format:
    """The Format for a dtype name or numpy dtype; a clear error for anything else."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}: the suite measures {', '.join(DTYPES)}"
        ) from None
