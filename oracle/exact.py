"""Exact softmax, log_softmax and logsumexp of the exact input bits, correctly rounded (mpmath).

Each row x (the reduction axis moved last) is evaluated in the log1p form of Blanchard,
D. J. Higham and N. J. Higham (2021), at a working precision P far above the output format:

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
precision. Exact results (a single finite entry, ties, masked entries) carry err = 0.

Where one entry leads by thousands of nats, an exact value can be a rational of the format's
scale plus a term below any working precision: log_softmax_j = (x_j - a) - L with L ~ e^-1e9,
and x_j - a (exact) may be a midpoint of the format (float32 [32, -1e9]: -1000000032 - L must
round to -1000000064, where ties-to-even gives -1e9). near() keeps such a value as that exact
rational with the term's sign and bound (a Bound with beyond = +-1); the rounding then breaks
a tie by the term's sign (softmax_suite.oracle.rounding). The same split serves logsumexp = a + L, the tied
entries of softmax (1/m - deficit, m = 2^k entries at the max) and the VJPs of
softmax_suite.oracle.gradients. With those rationals split off, every value left to the loop is irrational
(Lindemann-Weierstrass) or a rational that is not dyadic, so none lies on a rounding boundary
and the loop ends. MAX_PRECISION is a guard, not a rule of rounding: an element still
undecided there (an irrational within 2^-4096 relative of a midpoint; no such input is known)
is rounded as computed and counted as "forced" in the certificate.
Rows holding special values follow the documented policy (docs/invariants.md): any NaN makes
every output NaN; otherwise any +inf makes softmax and log_softmax NaN and logsumexp +inf;
a row of only -inf gives softmax and log_softmax NaN and logsumexp -inf; an empty row has
logsumexp -inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from mpmath.libmp import (
    fnan,
    fninf,
    fone,
    from_float,
    from_int,
    from_man_exp,
    from_rational,
    fzero,
    mpf_add,
    mpf_cmp,
    mpf_div,
    mpf_exp,
    mpf_mul,
    mpf_neg,
    mpf_sub,
    mpf_sum,
    round_ceiling,
    round_nearest,
    to_float,
)

from softmax_suite.formats import Format, format_of
from softmax_suite.ops import PER_ROW, SOFTMAX_FORWARD_OPS, TABLE
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.progress import progress
from softmax_suite.oracle.rounding import round_interval, round_to_format, split_mpf

REDUCED_OPS: frozenset[str] = frozenset(op.name for op in TABLE if op.output == PER_ROW)
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
    "undecided" (elements of the rows the fast path took but could not decide), and "forced"
    where present (elements rounded undecided at MAX_PRECISION: module docstring);
    max_precision is the highest precision used, in bits (53 and 106 for the tiers).
    Forward ops: gap = |x_j - max x|, weighted_gap = W = sum_i softmax_i |x_i - max x|,
    max_gap = max_i |x_i - max x| over the finite entries, tail = t / (1 + t) and
    log_tail = log1p(t); every op: n_subnormal and subnormal_tail per row (underflow_terms).
    The VJPs add their own (softmax_suite.oracle.gradients).
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


def forward_references(x: np.ndarray, axis: int, fmt: Format | None = None) -> dict[str, Reference]:
    """Exact softmax, log_softmax and logsumexp of x along axis, computed in one pass, rounded into
    fmt (x's own format unless given: float64 x holding another format's question, oracle.scaled)."""
    fmt = fmt or format_of(x.dtype)
    return build_references(fmt, axis, [x], lambda row, precision: _evaluate_row(row[0], precision),
                            SOFTMAX_FORWARD_OPS, fastpath.forward_fast)


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
    with np.errstate(invalid="ignore"):  # a signalling NaN's payload (every bfloat16 pattern) warns
        flat = [np.moveaxis(a, axis, -1).reshape(rows_count, n).astype(np.float64, copy=False)
                if a.ndim == x.ndim else a.reshape(rows_count).astype(np.float64, copy=False) for a in inputs]
    columns = {op: fastpath.Columns.empty((rows_count,) if op in REDUCED_OPS else (rows_count, n),
                                          fmt.np_dtype) for op in ops}
    done, certificate = fast(flat, fmt, columns) if fast is not None \
        else (np.zeros(rows_count, dtype=bool), fastpath.Certificate({}, {}))
    slow_rows = np.flatnonzero(~done)
    # The tiers that finished a row: the highest precision any of its values needed.
    top_precision = max((fastpath.PRECISION.get(tier, 0) for tier, rows in certificate.rows.items() if rows),
                        default=0)
    forced = 0
    with progress(slow_rows.size * n, f"oracle {fmt.name} {'/'.join(ops)}") as advance:
        for index in slow_rows.tolist():
            result, precision, row_forced = _decided_row([a[index] for a in flat], fmt, evaluate, ops)
            top_precision = max(top_precision, precision)
            forced += row_forced
            for op in ops:
                _place_row(columns[op], index, result["values"][op], result["terms"][op])
            advance(n)
    certificate.elements["mpmath"], certificate.rows["mpmath"] = int(slow_rows.size * n), int(slow_rows.size)
    underflow = underflow_terms(flat[0], fmt)
    for op in ops:
        columns[op].terms.update(underflow)
    if forced:
        certificate.elements["forced"] = certificate.rows["forced"] = forced
    return {op: _reference(op, fmt, columns[op], lead_shape, axis, n, top_precision,
                           certificate.rows if op in REDUCED_OPS else certificate.elements)
            for op in ops}


def underflow_terms(x: np.ndarray, fmt: Format) -> dict[str, np.ndarray]:
    """Per row (of the 2-D x): how many exp(x_i - max x) lie below the smallest normal of fmt
    ("n_subnormal"), and their sum ("subnormal_tail"): where an implementation's exponentials
    underflow, each errs by up to a unit of the smallest subnormal (or, flushed, by itself), an
    absolute error of the sum that no relative bound covers (softmax_suite.oracle.budget)."""
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.max(x, axis=1, initial=-np.inf)  # NaN where a row holds one
        # The smallest gap is fl(min x - max x) (rounding is monotone): most rows have none below.
        if not np.any(np.min(x, axis=1, initial=np.inf) - top < fmt.exp_subnormal_below):
            return {"n_subnormal": np.zeros(x.shape[0]), "subnormal_tail": np.zeros(x.shape[0])}
        gaps = x - top[:, None]  # NaN or -inf on rows the policy decides, -inf where masked
        below = (gaps < fmt.exp_subnormal_below) & (gaps > -np.inf)
    rows, columns = np.nonzero(below)
    # The exponentials of the few entries below only: exp(-inf) for the rest costs numpy 4 ns each.
    with np.errstate(under="ignore"):
        # (bincount of no entries returns integers, even with weights)
        tail = np.bincount(rows, weights=np.exp(gaps[rows, columns]), minlength=x.shape[0]).astype(np.float64)
    return {"n_subnormal": np.bincount(rows, minlength=x.shape[0]).astype(np.float64), "subnormal_tail": tail}


def _place_row(columns: fastpath.Columns, index: int, values: list[tuple], terms: dict) -> None:
    """Write one row decided by mpmath into the columns (terms allocated on first use)."""
    reduced = columns.rounded.ndim == 1
    # One float64 table (the scales are small integers, the rounded values are in the output's
    # format: both exact), much faster than unzipping a long row's tuples.
    table = np.array(values, dtype=np.float64).reshape(len(values), 4)
    rounded, mant, mant_lo, scale = table.T
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
        array = array.reshape(*lead_shape, n)
        return array if axis == len(lead_shape) else np.moveaxis(array, -1, axis)

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
                 ops: tuple[str, ...]) -> tuple[dict, int, int]:
    """Evaluate one row at rising precision until every output's rounding is decided; (result,
    the last precision, the elements rounded undecided there: module docstring)."""
    precision = initial_precision(fmt)
    while True:
        evaluation = evaluate(rows, precision)
        outputs = {}
        undecided = False
        forced = 0
        for op in ops:
            decided = []
            # Equal bounds round alike: a uniform row's 2^20 entries share one (forward_row).
            seen: dict[Bound, tuple] = {}
            for bound in evaluation["values"][op]:
                if bound in seen:
                    decided.append(seen[bound])
                    continue
                value, err, beyond = bound
                rounded = round_interval(value, err, fmt, precision, beyond)
                if rounded is None:
                    if precision < MAX_PRECISION:
                        undecided = True
                        break
                    rounded = round_to_format(value, fmt, beyond)
                    forced += 1
                seen[bound] = (rounded, *split_mpf(value, precision))
                decided.append(seen[bound])
            if undecided:
                break
            outputs[op] = decided
        if not undecided:
            return {"values": outputs, "terms": evaluation["terms"]}, precision, forced
        precision *= 2


def _scaled_eps(precision: int, magnitude: tuple, multiple: int = 16) -> tuple:
    """multiple * 2^-precision * magnitude, rounded up."""
    return mpf_mul(from_man_exp(multiple, -precision), magnitude, 32, round_ceiling)


class Bound(NamedTuple):
    """A computed value and what is known of the exact one: within err (absolute) of value, and
    with beyond = +1 or -1 strictly on that side of value (value is then exact, a rational such
    as a midpoint of the format, and err bounds the term beyond it: softmax_suite.oracle.rounding)."""

    value: tuple
    err: tuple
    beyond: int = 0


def _magnitude(value: tuple) -> int:
    """floor(log2 |value|) of a finite non-zero mpf."""
    return value[2] + value[3] - 1


def near(base: tuple | Fraction, delta: tuple, delta_err: tuple, precision: int) -> Bound:
    """base + delta: base a rational known exactly (an mpf or a Fraction), delta a computed term
    within delta_err. Where delta is below the working precision of base and its sign is sure
    (delta_err < |delta|), a dyadic base is kept exactly and the sign of delta decides a tie:
    the exact value is a hair beyond base, which no precision would resolve when base is a
    midpoint of the format and delta is e^-1000000000. Otherwise the sum is rounded at precision
    and err adds its rounding (and that of a non-dyadic base)."""
    base_err = fzero
    if isinstance(base, Fraction):
        dyadic = base.denominator & (base.denominator - 1) == 0
        exact_base = from_man_exp(base.numerator, -(base.denominator.bit_length() - 1)) if dyadic \
            else from_rational(base.numerator, base.denominator, precision, round_nearest)
        base_err = fzero if dyadic else _scaled_eps(precision, _abs(exact_base), 2)
        base = exact_base
    if delta == fzero or (not base[1] and base != fzero):  # nothing beyond, or a non-finite base
        return Bound(base, base_err)
    if (base[1] and base_err == fzero and _magnitude(delta) <= _magnitude(base) - precision - 2
            and mpf_cmp(delta_err, _abs(delta)) < 0):
        return Bound(base, mpf_add(_abs(delta), delta_err, 32, round_ceiling), -1 if delta[0] else 1)
    value = mpf_add(base, delta, precision, round_nearest)
    spread = delta_err if base_err == fzero else mpf_add(delta_err, base_err, 32, round_ceiling)
    return Bound(value, mpf_add(spread, _scaled_eps(precision, _abs(value), 2), 32, round_ceiling))


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
    """Values and absolute error bounds (Bounds) of the three ops on one row at precision."""
    forward = forward_row(row, precision)
    row_terms = forward.row_terms()
    return {"values": forward.values,
            "terms": {"softmax": {"gap": forward.gap_floats, **row_terms},
                      "log_softmax": {"gap": forward.gap_floats, **row_terms},
                      "logsumexp": row_terms}}


@dataclass(frozen=True)
class ForwardRow:
    """One row evaluated at a precision: the ops' values as Bounds, and what the VJPs and the
    budgets reuse (softmax values, gaps x_j - a as exact mpf, their magnitudes, the argmax k,
    the number m of entries equal to the max, and deficit = 1/m - softmax_k = t' softmax_k / m,
    t' = sum of the exponentials of the other entries, within 32 eps relative)."""

    values: dict[str, list[Bound]]
    gaps: list[tuple]
    gap_floats: list[float]
    probabilities: list[float]
    weighted_gap: float
    max_gap: float
    tail: float
    log_tail: float
    special: bool
    argmax: int = 0
    tied: int = 1
    deficit: tuple = fzero

    def row_terms(self) -> dict[str, float]:
        return {"weighted_gap": self.weighted_gap, "max_gap": self.max_gap, "tail": self.tail,
                "log_tail": self.log_tail}


def forward_row(row: np.ndarray, precision: int) -> ForwardRow:
    """The three forward ops of one row at precision, as Bounds (module docstring)."""
    n = row.size
    special = _special_row(row)
    if special is not None:
        elementwise, reduced = special
        values = {"softmax": [Bound(elementwise, fzero)] * n, "log_softmax": [Bound(elementwise, fzero)] * n,
                  "logsumexp": [Bound(reduced, fzero)]}
        return ForwardRow(values, [fnan] * n, [0.0] * n, [math.nan] * n, 0.0, 0.0, 0.0, 0.0, True)
    k = int(np.argmax(row))
    if row[k] == row.min():
        return _equal_row(row, precision)
    a = from_float(float(row[k]))
    gaps = [mpf_sub(from_float(float(v)), a) for v in row]
    exps = [mpf_exp(d, precision, round_nearest) for d in gaps]
    tail = mpf_sum(exps[:k] + exps[k + 1 :], precision, round_nearest)
    tied = sum(d == fzero for d in gaps)
    rest = tail if tied == 1 else mpf_sum([e for d, e in zip(gaps, exps, strict=True) if d != fzero],
                                          precision, round_nearest)
    log_tail = fastpath.log1p(tail, precision)
    log_err = _scaled_eps(precision, log_tail, 12)
    denominator = mpf_add(fone, tail, precision, round_nearest)

    softmax = [Bound(value, _scaled_eps(precision, value))
               for value in (mpf_div(e, denominator, precision, round_nearest) for e in exps)]
    deficit = mpf_div(mpf_mul(rest, softmax[k].value, precision, round_nearest), from_int(tied), precision,
                      round_nearest)
    if tied & (tied - 1) == 0:  # 1/m is dyadic: the tied entries are 1/m less the deficit
        tied_value = near(from_man_exp(1, -(tied.bit_length() - 1)), mpf_neg(deficit),
                          _scaled_eps(precision, deficit, 32), precision)
        if tied_value.beyond:  # only a deficit below the precision: else e_k / (1 + t) is better
            softmax = [tied_value if d == fzero else value for d, value in zip(gaps, softmax, strict=True)]
    lse = near(a, log_tail, log_err, precision)
    log_softmax = [near(d, mpf_neg(log_tail), log_err, precision) for d in gaps]

    gap_floats = np.abs(np.array([to_float(d) for d in gaps]))
    probabilities = np.array([to_float(v.value) for v in softmax])
    finite = np.isfinite(gap_floats)
    t = to_float(tail)
    return ForwardRow(
        values={"softmax": softmax, "log_softmax": log_softmax, "logsumexp": [lse]},
        gaps=gaps,
        gap_floats=gap_floats.tolist(),
        probabilities=probabilities.tolist(),
        weighted_gap=float(np.sum(probabilities[finite] * gap_floats[finite])),
        max_gap=float(gap_floats[finite].max()),
        tail=t / (1.0 + t) if math.isfinite(t) else 1.0,
        log_tail=to_float(log_tail),
        special=False,
        argmax=k,
        tied=tied,
        deficit=deficit,
    )


def _equal_row(row: np.ndarray, precision: int) -> ForwardRow:
    """forward_row of n equal finite entries c, where every entry shares one value per op (a
    uniform row of the length ladder holds 2^20): softmax 1/n (exact for n = 2^k), log_softmax
    -log n, logsumexp c + log n."""
    n = row.size
    log_n = fastpath.log1p(from_int(n - 1), precision)
    log_err = _scaled_eps(precision, log_n, 12)
    if n & (n - 1) == 0:
        softmax = Bound(from_man_exp(1, -(n.bit_length() - 1)), fzero)
    else:
        share = mpf_div(fone, from_int(n), precision, round_nearest)
        softmax = Bound(share, _scaled_eps(precision, share))
    log_softmax = near(fzero, mpf_neg(log_n), log_err, precision)
    return ForwardRow(
        values={"softmax": [softmax] * n, "log_softmax": [log_softmax] * n,
                "logsumexp": [near(from_float(float(row[0])), log_n, log_err, precision)]},
        gaps=[fzero] * n,
        gap_floats=[0.0] * n,
        probabilities=[to_float(softmax.value)] * n,
        weighted_gap=0.0,
        max_gap=0.0,
        tail=(n - 1) / n,
        log_tail=to_float(log_n),
        special=False,
        argmax=0,
        tied=n,
    )


def _abs(value: tuple) -> tuple:
    return (0, *value[1:])
