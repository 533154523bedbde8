"""Exact softmax, log_softmax and logsumexp of the exact input bits, correctly rounded (mpmath).

Each row x (the reduction axis moved last) is evaluated in the log1p form of Blanchard,
Higham and Mary (2021), at a working precision P far above the output format:

    a = max x,  d_j = x_j - a (exact),  e_j = exp(d_j),  t = sum_{j != k} e_j,  L = log1p(t)
    softmax_j = e_j / (1 + t),  logsumexp = a + L,  log_softmax_j = d_j - L

With eps = 2^-P and every mpmath operation rounding to nearest with relative error at most
2 eps (a factor 2 of slack over mpmath's documented accuracy), the computed values satisfy

    |e_j^ - e_j| <= 4 eps e_j
    |t^ - t|     <= 8 eps t           (fsum adds exactly, rounds once, and drops terms
                                       smaller than 2^-2P of the partial sum)
    |L^ - L|     <= 12 eps L          (log1p(t) moves by at most 8 eps t / (1+t) <= 8 eps L,
                                       since t / (1+t) <= log1p(t); 4 eps L for the log)
    |softmax^ - softmax| <= 16 eps softmax
    |logsumexp^ - logsumexp| <= 16 eps (L + |logsumexp|)
    |log_softmax^ - log_softmax| <= 16 eps (L + |log_softmax|)

An element is accepted when both ends of [v - err, v + err] (computed with outward rounding)
round to the same value of the output format: that value is then the correctly rounded
result (Ziv's strategy). Rows with an undecided element are recomputed at twice the
precision. Exact results (a single finite entry, ties, masked entries) carry err = 0. At
MAX_PRECISION the value is rounded as computed; that can only happen for an exact tie, whose
computed value is then exact.

Rows holding special values follow the documented policy (see the README): any NaN makes
every output NaN; otherwise any +inf makes softmax and log_softmax NaN and logsumexp +inf;
a row of only -inf gives softmax and log_softmax NaN and logsumexp -inf; an empty row has
logsumexp -inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from mpmath.libmp import (
    finf,
    fnan,
    fninf,
    fone,
    from_float,
    from_man_exp,
    fzero,
    mpf_add,
    mpf_div,
    mpf_exp,
    mpf_log,
    mpf_mul,
    mpf_sub,
    mpf_sum,
    round_ceiling,
    round_floor,
    round_nearest,
    to_float,
)

from oracle.formats import Format, format_of
from oracle.rounding import round_to_format

FORWARD_OPS: tuple[str, ...] = ("softmax", "log_softmax", "logsumexp")
REDUCED_OPS: frozenset[str] = frozenset({"logsumexp"})
MAX_PRECISION = 4096
# Exponents of exact values are clamped to +-SCALE_LIMIT: far beyond every format's range
# (exp(-2 * float32 max) has an exponent near -2^128), where only "zero" or "huge" matters.
SCALE_LIMIT = 1 << 20


@dataclass(frozen=True)
class Reference:
    """The exact answer for one op on one input, element by element, in the output's shape.

    The unrounded exact value of element i is (mant[i] + mant_lo[i]) * 2**scale[i] with
    1 <= |mant| <= 2 (2 when mant_lo < 0 carries the rest; mant = 0 for an exact zero, NaN or
    +-inf for a non-finite exact value).
    `terms` holds the conditioning of each element (float64 arrays in the output's shape) that
    the error budgets (oracle.budget) and the a-priori bounds (oracle.theory) are made of.
    Forward ops: gap = |x_j - max x|, weighted_gap = W = sum_i softmax_i |x_i - max x|,
    max_gap = max_i |x_i - max x| over the finite entries, tail = t / (1 + t) and
    log_tail = log1p(t). The VJPs add their own (oracle.gradients).
    """

    op: str
    dtype: str
    rounded: np.ndarray
    mant: np.ndarray
    mant_lo: np.ndarray
    scale: np.ndarray
    terms: Mapping[str, np.ndarray]
    row_length: int
    max_precision: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rounded.shape


def initial_precision(fmt: Format) -> int:
    """Working precision of the first attempt: twice the format's plus a margin of 64 bits."""
    return 2 * fmt.p + 64


def forward_references(x: np.ndarray, axis: int) -> dict[str, Reference]:
    """Exact softmax, log_softmax and logsumexp of x along axis, computed in one pass."""
    fmt = format_of(x.dtype)
    return build_references(fmt, axis, [x], lambda row, precision: _evaluate_row(row[0], precision),
                            FORWARD_OPS)


RowEvaluation = Callable[[list[np.ndarray], int], dict]


def build_references(fmt: Format, axis: int, inputs: list[np.ndarray], evaluate: RowEvaluation,
                     ops: tuple[str, ...]) -> dict[str, Reference]:
    """References for ops from a row evaluation, decided row by row (Ziv's loop).

    inputs are arrays sharing the reduction axis (x, and for the VJPs the cotangents; an input
    with one dimension fewer than x is a per-row value such as logsumexp's cotangent).
    evaluate(rows, precision) returns {"values": {op: [(value, err), ...]}, "terms": {op:
    {name: per-element list or per-row float}}}, with one value per element for elementwise
    ops and one per row for reduced ops (logsumexp).
    """
    x = inputs[0]
    axis = axis % x.ndim
    lead_shape = tuple(size for i, size in enumerate(x.shape) if i != axis)
    n = x.shape[axis]
    rows_count = math.prod(lead_shape)
    flat = [np.moveaxis(a, axis, -1).reshape(rows_count, n).astype(np.float64) if a.ndim == x.ndim
            else a.reshape(rows_count).astype(np.float64) for a in inputs]
    collected: dict[str, list] = {op: [] for op in ops}
    terms: dict[str, dict[str, list]] = {op: {} for op in ops}
    top_precision = 0
    for index in range(rows_count):
        result, precision = _decided_row([a[index] for a in flat], fmt, evaluate, ops)
        top_precision = max(top_precision, precision)
        for op in ops:
            collected[op].extend(result["values"][op])
            reduced = len(result["values"][op]) == 1 and op in REDUCED_OPS
            for name, value in result["terms"][op].items():
                values = value if isinstance(value, list) else [value] * (1 if reduced else n)
                terms[op].setdefault(name, []).extend(values)

    def shaped(values: list, reduced: bool) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if reduced:
            return array.reshape(lead_shape)
        return np.ascontiguousarray(np.moveaxis(array.reshape(*lead_shape, n), -1, axis))

    references = {}
    for op in ops:
        reduced = op in REDUCED_OPS
        columns = list(zip(*collected[op], strict=True)) or [(), (), (), ()]
        rounded, mant, mant_lo, scale = (shaped(list(c), reduced) for c in columns)
        references[op] = Reference(
            op=op,
            dtype=fmt.name,
            rounded=rounded.astype(fmt.np_dtype),
            mant=mant,
            mant_lo=mant_lo,
            scale=scale.astype(np.int64),
            terms={name: shaped(values, reduced) for name, values in terms[op].items()},
            row_length=n,
            max_precision=top_precision,
        )
    return references


def _decided_row(rows: list[np.ndarray], fmt: Format, evaluate: RowEvaluation,
                 ops: tuple[str, ...]) -> tuple[dict, int]:
    """Evaluate one row at rising precision until every output's rounding is decided."""
    precision = initial_precision(fmt)
    while True:
        evaluation = evaluate(rows, precision)
        outputs = {}
        undecided = False
        for op in ops:
            decided = []
            for value, err in evaluation["values"][op]:
                rounded = _decide(value, err, fmt, precision)
                if rounded is None:
                    if precision < MAX_PRECISION:
                        undecided = True
                        break
                    rounded = round_to_format(value, fmt)
                decided.append((rounded, *_split(value, precision)))
            if undecided:
                break
            outputs[op] = decided
        if not undecided:
            return {"values": outputs, "terms": evaluation["terms"]}, precision
        precision *= 2


def _decide(value: tuple, err: tuple, fmt: Format, precision: int) -> float | None:
    """The correctly rounded value if both ends of value +- err round alike, else None."""
    # Exact values, and the policy's NaN and infinities. A computed 0 with an error bound is
    # not exact: the true value may be a cancelled small number, so it goes to the interval.
    if err == fzero or value in (fnan, finf, fninf):
        return round_to_format(value, fmt)
    low = round_to_format(mpf_sub(value, err, precision, round_floor), fmt)
    high = round_to_format(mpf_add(value, err, precision, round_ceiling), fmt)
    if low == high and math.copysign(1.0, low) == math.copysign(1.0, high):
        return low
    return None


def _split(value: tuple, precision: int) -> tuple[float, float, int]:
    """(mant, mant_lo, scale) with value = (mant + mant_lo) * 2^scale and 1 <= |mant| <= 2."""
    sign, man, exp, bc = value
    if not man:
        return to_float(value), 0.0, 0
    scale = exp + bc - 1
    normalized = (sign, man, exp - scale, bc)
    mant = to_float(normalized, rnd=round_nearest)
    mant_lo = to_float(mpf_sub(normalized, from_float(mant), precision, round_nearest))
    return mant, mant_lo, max(-SCALE_LIMIT, min(SCALE_LIMIT, scale))


def _scaled_eps(precision: int, magnitude: tuple) -> tuple:
    """16 * 2^-precision * magnitude, rounded up."""
    return mpf_mul(from_man_exp(16, -precision), magnitude, 32, round_ceiling)


def _special_row(row: np.ndarray) -> tuple[tuple, tuple] | None:
    """(softmax/log_softmax value, logsumexp value) for rows the policy decides, else None."""
    if row.size == 0:
        return fnan, fninf
    if np.isnan(row).any():
        return fnan, fnan
    if np.isposinf(row).any():
        return fnan, from_float(math.inf)
    if np.isneginf(row).all():
        return fnan, fninf
    return None


def _evaluate_row(row: np.ndarray, precision: int) -> dict:
    """Values and absolute error bounds (mpf tuples) of the three ops on one row at precision."""
    forward = forward_row(row, precision)
    row_terms = forward.row_terms()
    return {"values": forward.values,
            "terms": {"softmax": {"gap": forward.gap_floats, **row_terms},
                      "log_softmax": {"gap": forward.gap_floats, **row_terms},
                      "logsumexp": row_terms}}


@dataclass(frozen=True)
class ForwardRow:
    """One row evaluated at a precision: the ops' values with error bounds, and what the VJPs
    and the budgets reuse (softmax values, gaps x_j - a as exact mpf, their magnitudes, the
    argmax k and share = t / (1 + t) = 1 - softmax_k, within 16 eps relative)."""

    values: dict[str, list[tuple]]
    gaps: list[tuple]
    gap_floats: list[float]
    probabilities: list[float]
    weighted_gap: float
    max_gap: float
    tail: float
    log_tail: float
    special: bool
    argmax: int = 0
    share: tuple = fzero

    def row_terms(self) -> dict[str, float]:
        return {"weighted_gap": self.weighted_gap, "max_gap": self.max_gap, "tail": self.tail,
                "log_tail": self.log_tail}


def forward_row(row: np.ndarray, precision: int) -> ForwardRow:
    """The three forward ops of one row at precision, with absolute error bounds."""
    n = row.size
    special = _special_row(row)
    if special is not None:
        elementwise, reduced = special
        values = {"softmax": [(elementwise, fzero)] * n, "log_softmax": [(elementwise, fzero)] * n,
                  "logsumexp": [(reduced, fzero)]}
        return ForwardRow(values, [fnan] * n, [0.0] * n, [math.nan] * n, 0.0, 0.0, 0.0, 0.0, True)
    k = int(np.argmax(row))
    a = from_float(float(row[k]))
    gaps = [mpf_sub(from_float(float(v)), a) for v in row]
    exps = [mpf_exp(d, precision, round_nearest) for d in gaps]
    tail = mpf_sum(exps[:k] + exps[k + 1 :], precision, round_nearest)
    if tail == fzero:
        log_tail = fzero
    elif tail[2] + tail[3] < -precision - 8:
        log_tail = tail  # log1p(t) = t (1 - t/2 + ...), a relative error below 2^-P
    else:
        log_tail = mpf_log(mpf_add(fone, tail), precision, round_nearest)
    denominator = mpf_add(fone, tail, precision, round_nearest)
    exact_logs = tail == fzero

    softmax = []
    for e in exps:
        value = mpf_div(e, denominator, precision, round_nearest)
        softmax.append((value, _scaled_eps(precision, value)))
    lse = mpf_add(a, log_tail, precision, round_nearest)
    lse_err = fzero if exact_logs else _scaled_eps(
        precision, mpf_add(log_tail, _abs(lse), 32, round_ceiling))
    log_softmax = []
    for d in gaps:
        value = mpf_sub(d, log_tail, precision, round_nearest)
        err = fzero if exact_logs or not value[1] else _scaled_eps(
            precision, mpf_add(log_tail, _abs(value), 32, round_ceiling))
        log_softmax.append((value, err))

    gap_floats = np.abs(np.array([to_float(d) for d in gaps]))
    probabilities = np.array([to_float(v) for v, _ in softmax])
    finite = np.isfinite(gap_floats)
    t = to_float(tail)
    return ForwardRow(
        values={"softmax": softmax, "log_softmax": log_softmax, "logsumexp": [(lse, lse_err)]},
        gaps=gaps,
        gap_floats=gap_floats.tolist(),
        probabilities=probabilities.tolist(),
        weighted_gap=float(np.sum(probabilities[finite] * gap_floats[finite])),
        max_gap=float(gap_floats[finite].max()),
        tail=t / (1.0 + t) if math.isfinite(t) else 1.0,
        log_tail=to_float(log_tail),
        special=False,
        argmax=k,
        share=mpf_div(tail, denominator, precision, round_nearest),
    )


def _abs(value: tuple) -> tuple:
    return (0, *value[1:])
