"""Every bit pattern of a narrow format as the varying entry x of short rows, and the error of a
result grouped by the binade of |x| (the gap the row's accuracy depends on: docs/low-precision.md)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from softmax_suite.formats import Format
from softmax_suite.oracle.rounding import round_values

# The rows, by the name cases and records give them, and the column that holds x. In [0, x] and
# [x, 0, 0, 0] the gap max - min is |x| (x leads or trails); in the third row x is the maximum and
# its neighbours trail by 1, 2 and 3 (rounded into the format: they tie with x where |x| is large),
# so its binade is the magnitude of the shift x - max that every entry goes through.
ROWS: dict[str, str] = {"zero_x": "[0, x]", "x_zeros": "[x, 0, 0, 0]", "x_max": "[x, x-1, x-2, x-3]"}
VARYING_COLUMN: dict[str, int] = {"zero_x": 1, "x_zeros": 0, "x_max": 0}


def every_pattern(fmt: Format) -> np.ndarray:
    """Each bit pattern of fmt once, in order, as fmt's dtype (-0.0 and every NaN payload included)."""
    width = fmt.np_dtype.itemsize
    if width > 2:
        raise ValueError(f"every bit pattern of {fmt.name} is 2^{8 * width} rows: patterns are for "
                         "formats of 16 bits or fewer")
    return np.arange(1 << (8 * width), dtype=np.uint64).astype(f"u{width}").view(fmt.np_dtype)


def rows_of(kind: str, finite: bool = True) -> Callable[[np.random.Generator, Format], np.ndarray]:
    """The generator of a pattern case: one row per finite bit pattern (finite), or per NaN and
    infinity (not finite: special values, whose known deviations must not cover the numbers), in
    order and already in the format (so Case.build keeps every NaN payload as it is)."""
    if kind not in ROWS:
        raise ValueError(f"unknown pattern row {kind!r}: one of {', '.join(ROWS)}")

    def generate(rng: np.random.Generator, fmt: Format) -> np.ndarray:
        x = every_pattern(fmt)
        with np.errstate(invalid="ignore"):
            x = x[np.isfinite(x.astype(np.float64)) == finite]
        zero = np.zeros_like(x)
        if kind == "zero_x":
            return np.stack([zero, x], axis=1)
        if kind == "x_zeros":
            return np.stack([x, zero, zero, zero], axis=1)
        with np.errstate(invalid="ignore"):
            wide = x.astype(np.float64)
            trailing = [round_values(np.clip(wide - k, -fmt.max, None), fmt) for k in (1.0, 2.0, 3.0)]
        return np.stack([x, *trailing], axis=1)

    return generate


def binades(x: np.ndarray) -> np.ndarray:
    """floor(log2 |x|) of each varying entry as a float: NaN for a NaN or an infinity (special
    values, judged by the policy and not binned), -inf for a zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.abs(np.asarray(x).astype(np.float64))
        exponent = np.frexp(v)[1].astype(np.float64) - 1
    exponent = np.where(v == 0, -math.inf, exponent)
    return np.where(np.isfinite(v), exponent, math.nan)


def row_labels(kind: str, x: np.ndarray) -> np.ndarray:
    """The binade of each row's varying entry (binades) for a pattern case's input (rows, n)."""
    return binades(x[:, VARYING_COLUMN[kind]])


def by_gap(labels: np.ndarray, ulp: np.ndarray, ratio: np.ndarray, semantic: np.ndarray) -> list[dict]:
    """Per binade label (one per row): how many rows, the largest ULP error and error/budget ratio
    of their outputs (None where none was measured), and how many semantic differences. ulp, ratio
    and semantic are per row already (the worst of each row's outputs; NaN where not measured)."""
    bins = []
    binned = ~np.isnan(labels)
    for label in np.unique(labels[binned]):
        rows = labels == label
        ulps, ratios = ulp[rows], ratio[rows]
        bins.append({
            "binade": None if label == -math.inf else int(label),
            "count": int(rows.sum()),
            "max_ulp": float(np.nanmax(ulps)) if (~np.isnan(ulps)).any() else None,
            "max_ratio": float(np.nanmax(ratios)) if (~np.isnan(ratios)).any() else None,
            "semantic": int(semantic[rows].sum()),
        })
    return bins
