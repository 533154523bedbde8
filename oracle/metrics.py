"""Error of a backend's output against the exact reference: ULPs, relative, absolute, categories.

ULP error is measured against the unrounded exact value v, in units of ulp(v) of the output
format, so a correctly rounded answer scores at most 0.5. NaN where a number is expected,
infinity versus finite and the sign of a zero are categories, counted apart; only the first two
are semantic differences. A 0 where a subnormal is expected is a category (flushed_subnormal)
only for a backend measured to flush subnormals (softmax_suite.suites.flushing); for any other it is an error
measured in ULPs like any other number.

An exact value beyond the format's range overflows: to an infinity, which a backend matches or
returns a number for (an error in ULPs of the exact value), or in float8_e4m3fn, which has no
infinities, to NaN (softmax_suite.formats): a NaN there is the correct answer (0 ULP), and a
number, such as a saturating kernel's 448, is nan_missing, a semantic difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.oracle.exact import Reference
from softmax_suite.oracle.rounding import ulp_exponent
from softmax_suite.records import ULP_BIN_EDGES

SEMANTIC_CATEGORIES: tuple[str, ...] = ("nan_unexpected", "nan_missing", "inf_vs_finite")
NOTE_CATEGORIES: tuple[str, ...] = ("flushed_subnormal", "zero_sign")
CATEGORIES: tuple[str, ...] = SEMANTIC_CATEGORIES + NOTE_CATEGORIES
FLOAT_MAX = float(np.finfo(np.float64).max)


def ulp_histogram(ulps: np.ndarray) -> list[int]:
    """Counts of ulps per bin of ULP_BIN_EDGES (bin i holds edge[i-1] < ulp <= edge[i]; the
    last bin the rest), trailing empty bins left off."""
    counts = np.bincount(np.searchsorted(ULP_BIN_EDGES, ulps, side="left"),
                         minlength=len(ULP_BIN_EDGES) + 1).tolist()
    while counts and not counts[-1]:
        counts.pop()
    return counts


@dataclass(frozen=True)
class Comparison:
    """Per-element errors; NaN marks an element whose error is categorical, not numeric."""

    ulp: np.ndarray
    rel: np.ndarray
    abs: np.ndarray
    categories: dict[str, np.ndarray]
    diff: np.ndarray
    scale: np.ndarray

    @property
    def measured(self) -> np.ndarray:
        return ~np.isnan(self.ulp)

    def in_units(self, exponent: np.ndarray) -> np.ndarray:
        """The error in units of 2^exponent (0 for a correct overflow, NaN where categorical)."""
        with np.errstate(all="ignore"):
            errors = np.minimum(np.ldexp(self.diff, self.scale - exponent), FLOAT_MAX)
        return np.where(self.ulp == 0, 0.0, np.where(self.measured, errors, np.nan))


def compare(reference: Reference, got: np.ndarray, flush_to_zero: bool = False) -> Comparison:
    """Compare got (same shape, any float dtype holding the backend's values) to the reference;
    flush_to_zero: the backend flushes subnormals, so a 0 for one is counted, not measured."""
    fmt = format_of(reference.dtype)
    y = np.asarray(got).astype(np.float64)
    mant, mant_lo, scale = reference.mant, reference.mant_lo, reference.scale
    rounded = reference.rounded.astype(np.float64)
    exact_nan, exact_inf = np.isnan(mant), np.isinf(mant)
    exact_finite = ~exact_nan & ~exact_inf
    y_nan, y_inf = np.isnan(y), np.isinf(y)
    # A finite exact value whose correct rounding is NaN: an overflow in a format without infinities.
    overflow_nan = exact_finite & np.isnan(rounded)
    correct_overflow = exact_finite & ((y_inf & (y == rounded)) | (overflow_nan & y_nan))
    measured = exact_finite & ~overflow_nan & ~y_nan & ~y_inf
    flushed = measured & (y == 0) & (rounded != 0) & (np.abs(rounded) < fmt.min_normal) & flush_to_zero
    categories = {
        "nan_unexpected": y_nan & ~exact_nan & ~overflow_nan,
        "nan_missing": (exact_nan | overflow_nan) & ~y_nan,
        "inf_vs_finite": ~y_nan & ~exact_nan & ~overflow_nan & (
            (exact_inf & (y != mant)) | (exact_finite & y_inf & ~correct_overflow)),
        "flushed_subnormal": flushed,
        "zero_sign": measured & (y == 0) & (rounded == 0) & (np.signbit(y) != np.signbit(rounded)),
    }
    numeric = measured & ~flushed
    # An exact value more than 2^64 below its ULP (a VJP of 1e-3367 beside a tail of e^-7748) is
    # measured from its ULP's scale, where it is 0 to 64 bits: at its own scale the backend's
    # output would overflow float64 (and an error of inf ULP is no measure).
    q = ulp_exponent(scale, fmt, mant)
    far = exact_finite & (scale < q - 64)
    if far.any():
        with np.errstate(under="ignore"):
            mant = np.where(far, np.ldexp(mant, np.where(far, scale - q, 0)), mant)
        mant_lo, scale = np.where(far, 0.0, mant_lo), np.where(far, q, scale)
    with np.errstate(all="ignore"):
        scaled = np.ldexp(np.where(numeric, y, 0.0), np.where(numeric, -scale, 0))
        diff = np.abs((scaled - mant) - mant_lo)
        ulp_err = np.ldexp(diff, scale - ulp_exponent(scale, fmt, mant))
        rel_err = np.where(diff == 0, 0.0, diff / np.abs(mant))
        abs_err = np.ldexp(diff, scale)
    nan = np.full(y.shape, np.nan)
    ulp_err = np.where(numeric, np.minimum(ulp_err, FLOAT_MAX), nan)
    ulp_err = np.where(correct_overflow, 0.0, ulp_err)
    return Comparison(
        ulp=ulp_err,
        rel=np.where(numeric, np.minimum(rel_err, FLOAT_MAX), np.where(correct_overflow, 0.0, nan)),
        abs=np.where(numeric, np.minimum(abs_err, FLOAT_MAX), np.where(correct_overflow, 0.0, nan)),
        categories=categories,
        diff=np.where(numeric, diff, np.nan),
        scale=scale,
    )


def summarize(comparison: Comparison, ulp_scope: np.ndarray | None = None) -> dict:
    """The metrics recorded per result: max/p50/p99 ULP and the ULP histogram (over ulp_scope
    where given), max relative/absolute, category counts."""
    measured = comparison.measured
    ulps = comparison.ulp[measured if ulp_scope is None else measured & ulp_scope]
    metrics: dict = {
        "n_elements": int(comparison.ulp.size),
        "n_measured": int(measured.sum()),
        "max_ulp": float(ulps.max()) if ulps.size else None,
        "p50_ulp": float(np.percentile(ulps, 50)) if ulps.size else None,
        "p99_ulp": float(np.percentile(ulps, 99)) if ulps.size else None,
        "ulp_histogram": ulp_histogram(ulps),
        "max_rel": float(comparison.rel[measured].max()) if measured.any() else None,
        "max_abs": float(comparison.abs[measured].max()) if measured.any() else None,
        "categories": {name: int(mask.sum()) for name, mask in comparison.categories.items()
                       if mask.any()},
    }
    return metrics


VALUE_CLASSES: tuple[str, ...] = ("nan", "+inf", "-inf", "0", "subnormal", "normal")


def classify(values: np.ndarray, dtype: str) -> np.ndarray:
    """The class of each value in the format (VALUE_CLASSES; the sign of a zero is not kept). A
    format without infinities (float8_e4m3fn) has no values of the classes +inf and -inf."""
    fmt = format_of(dtype)
    v = np.asarray(values).astype(np.float64)
    classes = np.full(v.shape, "normal", dtype=object)
    with np.errstate(invalid="ignore"):
        classes[np.abs(v) < fmt.min_normal] = "subnormal"
        classes[v == 0] = "0"
        classes[np.isposinf(v)] = "+inf"
        classes[np.isneginf(v)] = "-inf"
        classes[np.isnan(v)] = "nan"
    return classes
