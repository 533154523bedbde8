"""The four floating-point formats the suite measures, described by their IEEE 754 parameters.

Every threshold the suite uses (overflow edge of exp, underflow gaps, the gap beyond which
1 + e^-d rounds to 1) is derived here from (p, emin, emax) so that tests, cases and the
oracle agree on one set of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import ml_dtypes
import numpy as np

from softmax_suite.dtypes import DTYPES


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: precision p (with the hidden bit) and exponent range."""

    name: str
    p: int
    emin: int
    emax: int

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(ml_dtypes.bfloat16) if self.name == "bfloat16" else np.dtype(self.name)

    @property
    def u(self) -> float:
        """Unit roundoff 2^-p."""
        return math.ldexp(1.0, -self.p)

    @property
    def max(self) -> float:
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.p), self.emax)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.p + 1)

    @property
    def exp_overflow(self) -> float:
        """Largest x in the format with exp(x) finite in the format (exp(x) < max + ulp/2)."""
        limit = math.log(self.max) + math.log1p(math.ldexp(1.0, -self.p - 1))
        x = float(np.array(limit, np.float64).astype(self.np_dtype))
        while x > limit:
            x = float(np.nextafter(np.array(x, self.np_dtype), np.array(-np.inf, self.np_dtype)))
        return x

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
