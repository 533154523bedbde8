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
from dataclasses import dataclass, field

import numpy as np
from mpmath.libmp import (
    fnan,
    fninf,
    fone,
    from_float,
    from_man_exp,
    fzero,
    mpf_add,
    mpf_div,
    mpf_exp,
    mpf_mul,
    mpf_sub,
    mpf_sum,
    round_ceiling,
    round_nearest,
    to_float,
)

from oracle import fastpath
from oracle.formats import Format, format_of
from oracle.progress import progress
from oracle.rounding import round_interval, round_to_format, split_mpf

FORWARD_OPS: tuple[str, ...] = ("softmax", "log_softmax", "logsumexp")
REDUCED_OPS: frozenset[str] = frozenset({"logsumexp"})
MAX_PRECISION = 4096


@dataclass(frozen=True)
class Reference:
    """The exact answer for one op on one input, element by element, in the output's shape.

    The unrounded exact value of element i is (mant[i] + mant_lo[i]) * 2**scale[i] with
    1 <= |mant| <= 2 (2 when mant_lo < 0 carries the rest; mant = 0 for an exact zero, NaN or
    +-inf for a non-finite exact value).
    `terms` holds the conditioning of each element (float64 arrays in the output's shape) that
    the error budgets (oracle.budget) and the a-priori bounds (oracle.theory) are made of.
    `certificate` counts the elements decided by each method (for a reduced op, the rows, by the
    method that finished them): "float64" and "double_double" (the fast path's tiers,
    oracle.fastpath), "mpmath" (the row-by-row evaluation below: the slow path) and, among those,
    "undecided" (elements of the rows the fast path took but could not decide);
    max_precision is the highest precision used, in bits (53 and 106 for the tiers).
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
    certificate: Mapping[str, int] = field(default_factory=dict)

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
                            FORWARD_OPS, fastpath.forward_fast)


RowEvaluation = Callable[[list[np.ndarray], int], dict]
FastEvaluation = Callable[[list[np.ndarray], Format, dict[str, fastpath.Columns]],
                          tuple[np.ndarray, fastpath.Certificate]]


def build_references(fmt: Format, axis: int, inputs: list[np.ndarray], evaluate: RowEvaluation,
                     ops: tuple[str, ...], fast: FastEvaluation | None = None) -> dict[str, Reference]:
    """References for ops: the fast path's rows first, then the rest row by row (Ziv's loop).

    inputs are arrays sharing the reduction axis (x, and for the VJPs the cotangents; an input
    with one dimension fewer than x is a per-row value such as logsumexp's cotangent).
    fast(rows, fmt, columns) fills the rows it decides and returns (decided rows, elements per
    tier). evaluate(rows, precision) returns {"values": {op: [(value, err), ...]}, "terms":
    {op: {name: per-element list or per-row float}}}, with one value per element for
    elementwise ops and one per row for reduced ops (logsumexp).
    """
    x = inputs[0]
    axis = axis % x.ndim
    lead_shape = tuple(size for i, size in enumerate(x.shape) if i != axis)
    n = x.shape[axis]
    rows_count = math.prod(lead_shape)
    flat = [np.moveaxis(a, axis, -1).reshape(rows_count, n).astype(np.float64, copy=False) if a.ndim == x.ndim
            else a.reshape(rows_count).astype(np.float64, copy=False) for a in inputs]
    columns = {op: fastpath.Columns.empty((rows_count,) if op in REDUCED_OPS else (rows_count, n),
                                          fmt.np_dtype) for op in ops}
    done, certificate = fast(flat, fmt, columns) if fast is not None \
        else (np.zeros(rows_count, dtype=bool), fastpath.Certificate({}, {}))
    slow_rows = np.flatnonzero(~done)
    # The tiers that finished a row: the highest precision any of its values needed.
    top_precision = max((fastpath.PRECISION.get(tier, 0) for tier, rows in certificate.rows.items() if rows),
                        default=0)
    with progress(slow_rows.size * n, f"oracle {fmt.name} {'/'.join(ops)}") as advance:
        for index in slow_rows.tolist():
            result, precision = _decided_row([a[index] for a in flat], fmt, evaluate, ops)
            top_precision = max(top_precision, precision)
            for op in ops:
                _place_row(columns[op], index, result["values"][op], result["terms"][op])
            advance(n)
    certificate.elements["mpmath"], certificate.rows["mpmath"] = int(slow_rows.size * n), int(slow_rows.size)
    return {op: _reference(op, fmt, columns[op], lead_shape, axis, n, top_precision,
                           certificate.rows if op in REDUCED_OPS else certificate.elements)
            for op in ops}


def _place_row(columns: fastpath.Columns, index: int, values: list[tuple], terms: dict) -> None:
    """Write one row decided by mpmath into the columns (terms allocated on first use)."""
    reduced = columns.rounded.ndim == 1
    rounded, mant, mant_lo, scale = zip(*values, strict=True) if values else ((), (), (), ())
    target = index if reduced else (index, slice(None))
    if reduced:
        rounded, mant, mant_lo, scale = rounded[0], mant[0], mant_lo[0], scale[0]
    columns.rounded[target], columns.mant[target] = rounded, mant
    columns.mant_lo[target], columns.scale[target] = mant_lo, scale
    for name, value in terms.items():
        per_element = isinstance(value, list)
        if name not in columns.terms:
            columns.terms[name] = np.full(columns.rounded.shape if per_element
                                          else columns.rounded.shape[:1], np.nan)
        array = columns.terms[name]
        array[index] = value if per_element or array.ndim == 1 else np.full(array.shape[1:], value)


def _reference(op: str, fmt: Format, columns: fastpath.Columns, lead_shape: tuple[int, ...],
               axis: int, n: int, top_precision: int, certificate: dict[str, int]) -> Reference:
    reduced = op in REDUCED_OPS
    rows = math.prod(lead_shape)

    def shaped(array: np.ndarray) -> np.ndarray:
        if reduced:
            return array.reshape(lead_shape)
        if array.ndim == 1:  # a per-row term of an elementwise op: a read-only broadcast view
            array = np.broadcast_to(array[:, None], (rows, n))
        return np.moveaxis(array.reshape(*lead_shape, n), -1, axis)

    return Reference(
        op=op,
        dtype=fmt.name,
        # No copy where the columns are already in the output's order (one row, or axis -1).
        rounded=np.asarray(shaped(columns.rounded), order="C"),
        mant=np.asarray(shaped(columns.mant), order="C"),
        mant_lo=np.asarray(shaped(columns.mant_lo), order="C"),
        scale=np.asarray(shaped(columns.scale), order="C"),
        terms={name: shaped(values) for name, values in columns.terms.items()},
        row_length=n,
        max_precision=top_precision,
        certificate=dict(certificate),
    )


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
                rounded = round_interval(value, err, fmt, precision)
                if rounded is None:
                    if precision < MAX_PRECISION:
                        undecided = True
                        break
                    rounded = round_to_format(value, fmt)
                decided.append((rounded, *split_mpf(value, precision)))
            if undecided:
                break
            outputs[op] = decided
        if not undecided:
            return {"values": outputs, "terms": evaluation["terms"]}, precision
        precision *= 2


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
    log_tail = fastpath.log1p(tail, precision)
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
