"""The oracle's certified fast path: whole rows at once in float64 or double-word arithmetic,
each element with a proven error bound, accepted only where the bound decides its rounding.

Rows the fast path takes ("regular"): at least MIN_ROW entries, no NaN or +inf, at least two
distinct finite values (so every value below is irrational, softmax_suite.oracle.gradients), and a largest
gap |x_j - a| <= MAX_GAP. Every other row is structural or out of range and goes to the
mpmath evaluation of softmax_suite.oracle.exact, as does every row with an element the fast path cannot
decide (Ziv's strategy, one level up). Masked (-inf) entries are exact: softmax 0,
log_softmax -inf, VJPs 0 (log_softmax_vjp: g_j).

Bounds (u = 2^-53, eps_exp the exponential's bound of softmax_suite.oracle.exponential, relative).

* d_j = x_j - a is exact as a double-word (two_sum). e_j = exp(d_j) = m_j 2^E_j within eps_exp.
* t = sum_{j != k} e_j: the terms m_j 2^E_j are scaled into float64 (exact unless they fall
  below 2^-1022, where each word errs by at most 2^-1075: counted), then summed pairwise in
  float64 (depth * u * t, Higham 4.2) or in double-words (softmax_suite.oracle.doubleword.tree_error):
      |t^ - t| <= err_t = (eps_exp + eps_sum) t^ (1 + 2^-40) + n_sub 2^-1073.
* Per row, in mpmath at ROW_PRECISION bits from the exact t^: R = 1/(1 + t^), L = log1p(t^),
  q = t^ R. Since d/dt 1/(1+t) = -R^2 and d/dt log1p(t) = R, the true values are within
  eps_R = err_t / (1 + t^ - err_t) relative (R), dL = err_t / (1 + t^ - err_t) absolute (L),
  and eps_q = err_t / t^ + eps_R relative (q), plus 2^-104 for their double-word roundings.
  logsumexp = a + L is decided per row (softmax_suite.oracle.rounding.round_interval).
* softmax_j = e_j R: float64 path m_j * fl(R) (two roundings, 2u); double-word path
  mul(m_j, R) (MUL_ERROR): relative error eps_exp + eps_R + 2u, resp. + MUL_ERROR.
* log_softmax_j = d_j - L = (dh + dl) - (Lh + Ll) is split exactly by two_sum into
  high + low + rest + last; only third = rest + last rounds (u |third|). Kept apart, the third
  word lets a tie of the format minus a tiny L be decided (softmax_suite.oracle.rounding.round_certified).
  Absolute error dL + u |third|.
* VJPs, on either tier: M, A and T are the relative errors of a product, a sum and a tree sum
  (to the sum of |terms|): MUL_ERROR, ADD_ERROR, tree_error(n) in double words; u, u and
  float_tree_error(n) = gamma_depth on the float64 tier, where every low word is 0, R and q
  are rounded to one float64 (u more in eps_R, eps_q) and the difference g_i - g_k rounds once
  (D = u; two_sum makes it exact in double words, D = 0), which adds D (|g_j - g_k| + B) to the
  softmax VJP's absolute error. Below, written for double words (MUL_ERROR = M and so on).
  y_j = softmax_j within eps_y; G = sum g_i, and S, B below, are tree sums with absolute error
  tree_error(n) times the sum of |terms|:
      logsumexp_vjp_j   = g y_j:                       eps_y + MUL_ERROR relative
      log_softmax_vjp_j = g_j - y_j G (j != k):        (eps_y + MUL_ERROR) |y_j G| + y_j dG
                        = G q - (G - g_k) (j = k):     (eps_q + MUL_ERROR) |G q| + q dG + dG
                                                       + ADD_ERROR |G - g_k|, absolute,
                                                       then ADD_ERROR |value|;
                        = -y_j G where g_j = 0, keeping y_j's exponent: eps_y + MUL_ERROR + dG / |G|
      softmax_vjp_j     = y_j ((g_j - g_k) - S), S = sum_{i != k} (g_i - g_k) y_i, with
                        B = sum |(g_i - g_k) y_i|, dS = (eps_y + MUL_ERROR + tree) B:
                        relative eps_y + 2 MUL_ERROR + ADD_ERROR + dS / |f_j|,
                        f_j = (g_j - g_k) - S; exact zeros are found first (softmax_suite.oracle.gradients).
  y_j scaled into float64 may fall below 2^-1022: each word then errs by at most 2^-1075,
  which adds 2^-1070 (1 + |G|) resp. n 2^-1070 (1 + max |g_i - g_k|) absolute.

All error arithmetic runs in float64 and is inflated by (1 + 2^-40), which covers its own
roundings and the second-order products of the relative bounds (all below 2^-40).

Deciding. The double-word tier hands (high, low, third, relative error) to
softmax_suite.oracle.rounding.round_certified. The float64 tier, whose outputs have 24 bits or
fewer, turns each value v and its bound into two float64 ends outside the exact value's
interval (rounding.relative_ends: v (1 -+ e) for a relative bound e; rounding.absolute_ends:
v -+ w, where w holds the bound, 2^-52 |v| for v's own rounding and the ends', and a factor
1 + 2^-40), and accepts the value where both ends round alike into the format
(rounding.round_between): rounding to nearest is monotone. A value below 2^-1022 scaled into
float64 errs by up to 2^-1075 there, which only moves values that round to zero in every such
format. The float64 tier also skips two_sum for the gaps where every entry of a chunk is at
least 2^(p - 42) in magnitude (then x_j - a is exact: ForwardState.float_gaps), and keeps the
exact three-word split of log_softmax for rows whose L is below 2^-38, where d_j - L may lie a
hair from a tie of the format (a tie d_j itself), which its ends could not decide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from mpmath.libmp import (
    fone,
    from_float,
    fzero,
    mpf_add,
    mpf_div,
    mpf_log,
    mpf_mul,
    mpf_sub,
    round_nearest,
    to_float,
)

from softmax_suite.formats import Format
from softmax_suite.oracle import doubleword as dw
from softmax_suite.oracle.exponential import DOUBLE_ERROR, FLOAT_ERROR, MAX_GAP, exp_double, exp_float
from softmax_suite.oracle.progress import progress
from softmax_suite.oracle.rounding import (
    absolute_ends,
    relative_ends,
    round_between,
    round_certified,
    round_interval,
    split_mpf,
)

MIN_ROW = 2
# Columns per chunk: numpy's per-call cost is paid per chunk, its temporaries live per chunk;
# 2^15 (256 KB a float64 temporary) measured fastest of 2^14 to 2^17 at n = 1e5 and 1e6.
CHUNK = 1 << 15
ROW_PRECISION = 192
FLOAT_TIER, DOUBLE_TIER = "float64", "double_double"
PRECISION = {FLOAT_TIER: 53, DOUBLE_TIER: 106}
SLACK = 1 + 2.0**-40
TINY = 2.0**-1070
_settings: dict = {"enabled": True, "widen": 1.0, "input_bits": None}


@contextmanager
def disabled() -> Iterator[None]:
    """Every row through mpmath alone: the naive oracle, for comparisons and benchmarks."""
    previous = _settings["enabled"]
    _settings["enabled"] = False
    try:
        yield
    finally:
        _settings["enabled"] = previous


@contextmanager
def widened(factor: float) -> Iterator[None]:
    """Multiply every fast-path error bound by factor: for self-tests of the slower paths."""
    if not factor >= 1:
        raise ValueError(f"widening factor {factor!r}: use a number >= 1 (1 leaves bounds as proven)")
    previous = _settings["widen"]
    _settings["widen"] = previous * factor
    try:
        yield
    finally:
        _settings["widen"] = previous


@contextmanager
def inputs_of(bits: int) -> Iterator[None]:
    """Inputs with up to bits significant bits (exact products scale * x, oracle.scaled), not
    values of the output's format: the gaps' shortcut (ForwardState.float_gaps) needs their width."""
    previous = _settings["input_bits"]
    _settings["input_bits"] = bits
    try:
        yield
    finally:
        _settings["input_bits"] = previous


@dataclass
class Columns:
    """One op's results with rows first: (rows, n) for elementwise ops, (rows,) for reduced
    ones; a term may be per row ((rows,)) for an elementwise op."""

    rounded: np.ndarray
    mant: np.ndarray
    mant_lo: np.ndarray
    scale: np.ndarray
    terms: dict[str, np.ndarray]

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: np.dtype) -> Columns:
        """Uninitialised (every row is written once, by the fast path or by mpmath) but for mant_lo,
        zeros, which the float64 tier leaves as they are; rounded values in the output dtype,
        which holds them exactly, and scales within SCALE_LIMIT."""
        return cls(np.empty(shape, dtype), np.empty(shape), np.zeros(shape), np.empty(shape, np.int32), {})


def regular_rows(x: np.ndarray) -> np.ndarray:
    """Rows (of the 2-D array x) the fast path takes (module docstring)."""
    rows, n = x.shape
    if not _settings["enabled"] or n < MIN_ROW:
        return np.zeros(rows, dtype=bool)
    top = x.max(axis=1)  # NaN where the row holds one
    bottom = x.min(axis=1)
    masked = np.flatnonzero(np.isneginf(bottom))  # the smallest finite entry of these
    if masked.size:
        bottom[masked] = np.where(np.isneginf(x[masked]), np.inf, x[masked]).min(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        spread = top - bottom
    return np.isfinite(top) & (bottom < top) & (spread <= MAX_GAP)


def row_blocks(indices: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """Runs of row indices holding about CHUNK elements together."""
    per = max(1, CHUNK // max(n, 1))
    for start in range(0, indices.size, per):
        yield indices[start:start + per]


def _column_chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK):
        yield slice(start, min(n, start + CHUNK))


@dataclass
class RowScalars:
    """Per-row values from the exact t^ (module docstring), as arrays over the rows."""

    r: tuple[np.ndarray, np.ndarray]
    eps_r: np.ndarray
    log_tail: tuple[np.ndarray, np.ndarray]
    d_log_tail: np.ndarray
    share: tuple[np.ndarray, np.ndarray]
    eps_share: np.ndarray
    tail: np.ndarray


def log1p(t: tuple, precision: int) -> tuple:
    """log1p of a non-negative mpf t at precision (1 + t is formed exactly)."""
    if t == fzero:
        return fzero
    if t[2] + t[3] < -precision - 8:
        return t  # log1p(t) = t (1 - t/2 + ...): relative error below 2^-precision
    return mpf_log(mpf_add(fone, t), precision, round_nearest)


def _double_word(value: tuple) -> tuple[float, float]:
    high = to_float(value, rnd=round_nearest)
    return high, to_float(mpf_sub(value, from_float(high), ROW_PRECISION, round_nearest))


def _row_scalars(t_high: np.ndarray, t_low: np.ndarray, err_t: np.ndarray) -> RowScalars:
    columns: list[list[float]] = [[] for _ in range(9)]
    for high, low, err in zip(t_high.tolist(), t_low.tolist(), err_t.tolist(), strict=True):
        t = mpf_add(from_float(high), from_float(low))  # exact
        one_t = mpf_add(fone, t)  # exact
        r = mpf_div(fone, one_t, ROW_PRECISION, round_nearest)
        log_tail = log1p(t, ROW_PRECISION)
        share = mpf_mul(t, r, ROW_PRECISION, round_nearest)
        # A bound past 1 + t^ leaves R and L unbounded (only bounds widened for self-tests get there).
        room = 1.0 + high + low - err
        spread = err * SLACK / room if room > 0 else math.inf
        t_float = high + low
        values = (*_double_word(r), *_double_word(log_tail), *_double_word(share))
        for column, value in zip(columns, values, strict=False):
            column.append(value)
        columns[6].append(spread)
        columns[7].append(err * SLACK / t_float if t_float > 0 else math.inf)
        columns[8].append(t_float / (1.0 + t_float))
    rh, rl, lh, ll, qh, ql, spread, relative_t, tail = (np.array(c, dtype=np.float64) for c in columns)
    rounding = 2.0**-104
    return RowScalars(r=(rh, rl), eps_r=spread + rounding, log_tail=(lh, ll),
                      d_log_tail=spread + np.abs(lh) * rounding, share=(qh, ql),
                      eps_share=relative_t + spread + 2 * rounding, tail=tail)


@dataclass
class ForwardState:
    """A block of regular rows after the exponentials and their sum: e_j = (mh + ml) 2^E (ml is
    zero on the float64 tier); the gaps are recomputed chunk by chunk (gaps(), float_gaps())."""

    x: np.ndarray
    argmax: np.ndarray
    top: np.ndarray
    mh: np.ndarray
    ml: np.ndarray
    exponent: np.ndarray
    eps_exp: float
    scalars: RowScalars
    double: bool
    masked: bool
    exact_above: float
    inexact: dict[int, bool]

    def gaps(self, span: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dh, dl, masked) of the columns in span: d = x - a exactly, 0 where masked."""
        return _gaps(self.x[:, span], self.top)

    def float_gaps(self, span: slice) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """gaps() without the work a chunk does not need: dl is None where every x_j - a is exact
        in float64, masked None where no entry of the block is masked. Entries of p bits (the
        format's, or those of inputs_of) at least 2^(p - 42) in magnitude (and 0) are multiples
        of 2^-41, and so are their differences, which a regular row keeps below 2^12: 53-bit
        multiples of 2^-41, exact."""
        x = self.x[:, span]
        if span.start not in self.inexact:
            tiny = np.abs(x) < self.exact_above
            self.inexact[span.start] = bool(tiny.any()) and bool(np.any(x[tiny] != 0))
        if self.inexact[span.start]:
            dh, dl, masked = _gaps(x, self.top)
            return dh, dl, masked if self.masked else None
        dh = x - column(self.top)
        if not self.masked:
            return dh, None, None
        masked = np.isneginf(x)
        dh[masked] = 0.0
        return dh, None, masked


def _at(columns: np.ndarray, span: slice, width: int) -> np.ndarray:
    """A (rows, width) mask of the chunk span, true in each row at its column columns[row]."""
    mask = np.zeros((columns.size, width), dtype=bool)
    inside = np.flatnonzero((columns >= span.start) & (columns < span.stop))
    mask[inside, columns[inside] - span.start] = True
    return mask


def _set_at(values: np.ndarray, columns: np.ndarray, span: slice, per_row: np.ndarray | float) -> None:
    """Set, in place, each row's entry at its column columns[row], where that lies in span, to
    per_row (one value per row, or one for all)."""
    inside = np.flatnonzero((columns >= span.start) & (columns < span.stop))
    values[inside, columns[inside] - span.start] = per_row[inside] if np.ndim(per_row) else per_row


def _gaps(x: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masked = np.isneginf(x)
    with np.errstate(invalid="ignore"):
        high, low = dw.two_sum(x, -top[:, None])
    return np.where(masked, 0.0, high), np.where(masked, 0.0, low), masked


def forward_state(x: np.ndarray, tier: str, fmt: Format) -> ForwardState:
    """Exponentials, their sum with its bound, and the per-row scalars of a block of rows (of
    the format fmt)."""
    double = tier == DOUBLE_TIER
    widen = _settings["widen"]
    rows, n = x.shape
    every = np.arange(rows)
    argmax = np.argmax(x, axis=1)
    top = x[every, argmax]
    mh, exponent = np.empty_like(x), np.empty(x.shape, dtype=np.int32)
    ml = np.empty_like(x) if double else np.zeros((rows, 1))
    eps_exp = (DOUBLE_ERROR if double else FLOAT_ERROR) * widen
    state = ForwardState(x, argmax, top, mh, ml, exponent, eps_exp, None, double,
                         masked=bool(np.isneginf(x.min())),
                         exact_above=2.0 ** ((_settings["input_bits"] or fmt.p) - 42), inexact={})
    partial_high, partial_low, below = [], [], np.zeros(rows, dtype=np.int64)
    for span in _column_chunks(n):
        with np.errstate(under="ignore"):
            if double:
                dh, dl, masked = state.gaps(span)
                mh[:, span], ml[:, span], exponent[:, span] = exp_double(dh, dl)
                low = np.ldexp(ml[:, span], exponent[:, span])
            else:
                dh, dl, masked = state.float_gaps(span)
                mh[:, span], exponent[:, span] = exp_float(dh, 0.0 if dl is None else dl)
            high = np.ldexp(mh[:, span], exponent[:, span])
        for word in (high, low) if double else (high,):
            _set_at(word, argmax, span, 0.0)
            if masked is not None:
                word[masked] = 0.0
        # A word scaled below 2^-1022 errs by up to 2^-1075; m < 2 puts e_j there only for
        # E <= -1022, which the cheap minimum rules out in most chunks (an overcount only widens).
        # A low word can fall there on its own.
        if double:
            tiny = (exponent[:, span] < -1021) | ((np.abs(low) < 2.0**-1022) & (ml[:, span] != 0))
            below += np.count_nonzero(tiny, axis=1)
            sums = dw.tree_sum(high, low)
            partial_high.append(sums[0])
            partial_low.append(sums[1])
        else:
            if exponent[:, span].min() < -1021:
                below += np.count_nonzero(exponent[:, span] < -1021, axis=1)
            partial_high.append(dw.float_tree_sum(high, overwrite=True))
    # Chunk sums, then a sum of the chunks: one more level than a single tree at most.
    if double:
        t_high, t_low = dw.tree_sum(np.stack(partial_high, 1), np.stack(partial_low, 1))
        eps_sum = dw.tree_error(2 * n)
    else:
        t_high, t_low = dw.float_tree_sum(np.stack(partial_high, 1), overwrite=True), np.zeros(rows)
        eps_sum = dw.float_tree_error(2 * n)
    err_t = ((eps_exp + eps_sum * widen) * t_high * SLACK + below * 2.0**-1073) * SLACK
    state.scalars = _row_scalars(t_high, t_low, err_t)
    return state


def split(high: np.ndarray, low: np.ndarray, exponent: np.ndarray | int) -> tuple[np.ndarray, ...]:
    """(mant, mant_lo, scale) of (high + low) 2^exponent with 1 <= |mant| < 2 and scale the binade
    of the whole value (softmax_suite.oracle.exact): a high word that is a power of two with a low
    word against it (1 - 4.2e-18) lies in the binade below, whose ULP is half as large."""
    fraction, binade = np.frexp(high)
    below = (np.abs(fraction) == 0.5) & (low * high < 0)
    binade = binade - below
    with np.errstate(under="ignore"):
        mant_lo = np.ldexp(low, 1 - binade)
        mant = np.ldexp(fraction, 1 + below)
    return mant, mant_lo, binade - 1 + np.asarray(exponent, dtype=np.int64)


def _place(columns: Columns, ids: np.ndarray, span: slice, rounded: np.ndarray,
           parts: tuple[np.ndarray, ...]) -> None:
    columns.rounded[ids, span] = rounded
    mant, mant_lo, scale = parts
    columns.mant[ids, span], columns.scale[ids, span] = mant, scale
    if not np.isscalar(mant_lo):  # a scalar 0 (the float64 tier, always the first): already there
        columns.mant_lo[ids, span] = mant_lo


def _shared(out: dict[str, Columns], ops: tuple[str, ...], name: str,
            shape: tuple[int, ...]) -> np.ndarray:
    """The term array name, one object shared by ops (allocated on first use)."""
    for op in ops:
        if name in out[op].terms:
            return out[op].terms[name]
    array = np.empty(shape)
    for op in ops:
        out[op].terms[name] = array
    return array


def _row_terms(weighted_gap: np.ndarray, max_gap: np.ndarray, scalars: RowScalars) -> dict[str, np.ndarray]:
    """The forward row terms of softmax_suite.oracle.exact.Reference, per row."""
    return {"weighted_gap": weighted_gap, "max_gap": max_gap, "tail": scalars.tail,
            "log_tail": scalars.log_tail[0]}


def _decide_reduced(top: np.ndarray, state: ForwardState, fmt: Format, out: Columns,
                    ids: np.ndarray) -> np.ndarray:
    """logsumexp = a + L per row: the exact sum of three floats, within dL (module docstring)."""
    lh, ll = state.scalars.log_tail
    decided = np.zeros(top.size, dtype=bool)
    errors = (state.scalars.d_log_tail * SLACK).tolist()
    for i, (a, high, low, err) in enumerate(zip(top.tolist(), lh.tolist(), ll.tolist(), errors,
                                                strict=True)):
        value = mpf_add(mpf_add(from_float(a), from_float(high)), from_float(low))
        rounded = round_interval(value, from_float(err), fmt, ROW_PRECISION)
        if rounded is not None:
            decided[i] = True
            row = ids[i]
            out.rounded[row] = rounded
            out.mant[row], out.mant_lo[row], out.scale[row] = split_mpf(value, ROW_PRECISION)
    return decided


def forward_block(inputs: list[np.ndarray], ids: np.ndarray, tier: str, fmt: Format,
                  out: dict[str, Columns], pending: Pending) -> np.ndarray:
    """softmax, log_softmax and logsumexp of a block of regular rows into out (rows ids);
    returns which rows were decided in full."""
    x = inputs[0]
    state = forward_state(x, tier, fmt)
    scalars = state.scalars
    rh, rl = (column(v) for v in scalars.r)
    lh, ll = (column(-v) for v in scalars.log_tail)
    rounding = dw.MUL_ERROR if state.double else 2 * dw.U
    eps_softmax = column((state.eps_exp + scalars.eps_r + rounding) * SLACK)
    d_log_tail = column(scalars.d_log_tail * SLACK)
    ok = _decide_reduced(state.top, state, fmt, out["logsumexp"], ids)
    rows, n = out["softmax"].rounded.shape
    elementwise = ("softmax", "log_softmax")
    gap_terms = _shared(out, elementwise, "gap", (rows, n))
    weighted_gap, max_gap = np.zeros(ids.size), np.zeros(ids.size)
    target = _target(ids)
    # Rows whose L is tiny: there d_j - L may lie a hair from a tie of the format (d_j one), which
    # only the exact split into three words decides (module docstring).
    small = np.flatnonzero(scalars.log_tail[0] < 2.0**-38)
    # Finite bounds make finite ends (round_between need not look for NaN).
    finite = bool(np.isfinite(eps_softmax).all() and np.isfinite(d_log_tail).all())
    for span in pending.spans(ids, n):
        if state.double:
            dh, dl, hidden = state.gaps(span)
            exponent = state.exponent[:, span]
            high, low = dw.mul(state.mh[:, span], state.ml[:, span], rh, rl)
            settled = _place_decided(out["softmax"], target, span, fmt, high, low, exponent, eps_softmax,
                                     hidden, 0.0)
            with np.errstate(under="ignore"):
                y = np.ldexp(high, exponent)
            high, low, third, error = _log_softmax_words(dh, dl, lh, ll, d_log_tail)
            settled &= _place_decided(out["log_softmax"], target, span, fmt, high, low, 0, error, hidden,
                                      -np.inf, third)
        else:
            dh, dl, hidden = state.float_gaps(span)
            high, exponent = state.mh[:, span] * rh, state.exponent[:, span]
            with np.errstate(under="ignore"):
                y = np.ldexp(high, exponent)
            chunk = _Chunk.of(out["softmax"], target, span, y.shape)
            settled = chunk.decide(relative_ends(y, eps_softmax), fmt, finite)
            chunk.split(high, exponent)
            settled = chunk.exact(hidden, 0.0, settled)
            chunk.write()
            settled &= _float_log_softmax(dh, dl, hidden, (lh, ll, d_log_tail), small, fmt,
                                          _Chunk.of(out["log_softmax"], target, span, y.shape), finite)
        pending.settle(ids, span, settled)
        if pending.first:
            gap = np.abs(dh)  # 0 where masked
            weighted_gap += np.sum(y * gap, axis=1)
            max_gap = np.maximum(max_gap, gap.max(axis=1))
            if state.masked:
                gap[hidden] = np.inf
            gap_terms[target, span] = gap

    if pending.first:
        for name, values in _row_terms(weighted_gap, max_gap, scalars).items():
            _shared(out, (*elementwise, "logsumexp"), name, (rows,))[ids] = values
    return ok & pending.clear(ids)


def _target(ids: np.ndarray) -> np.ndarray | slice:
    """Rows ids as an index: a slice where they are consecutive (a view, and faster to write)."""
    if ids.size and ids[-1] - ids[0] == ids.size - 1:
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def _log_softmax_words(dh: np.ndarray, dl: np.ndarray, lh: np.ndarray, ll: np.ndarray,
                       d_log_tail: np.ndarray) -> tuple[np.ndarray, ...]:
    """log_softmax_j = (dh + dl) + (lh + ll), with (lh, ll) = -L, split exactly by two_sum into
    high + low + rest + last; third = rest + last rounds once. (high, low, third, relative error)."""
    high, tail = dw.two_sum(dh, lh)
    middle, last = dw.two_sum(dl, ll)
    middle, rest = dw.two_sum(tail, middle)
    high, low = dw.fast_two_sum(high, middle)
    third = rest + last  # value = high + low + third up to u |third|
    with np.errstate(divide="ignore", invalid="ignore"):
        error = (d_log_tail + dw.U * np.abs(third)) * SLACK / np.abs(high)
    return high, low, third, error


@dataclass
class _Chunk:
    """One op's results for a chunk of rows on the float64 tier: views into its columns where the
    rows are consecutive (written in place, no copy), else arrays that write() copies there.
    mant_lo is left as the columns' zeros unless a row needs it (low is then set)."""

    columns: Columns
    target: np.ndarray | slice
    span: slice
    rounded: np.ndarray
    mant: np.ndarray
    scale: np.ndarray
    low: np.ndarray | None = None

    @classmethod
    def of(cls, columns: Columns, target: np.ndarray | slice, span: slice, shape: tuple[int, int]) -> _Chunk:
        if isinstance(target, slice):
            return cls(columns, target, span, columns.rounded[target, span], columns.mant[target, span],
                       columns.scale[target, span])
        return cls(columns, target, span, np.empty(shape, columns.rounded.dtype), np.empty(shape),
                   np.empty(shape, np.int32))

    def decide(self, ends: tuple[np.ndarray, np.ndarray], fmt: Format, finite: bool) -> np.ndarray:
        """Round both ends into the chunk (round_between); which elements that decided."""
        return round_between(*ends, fmt, out=self.rounded, finite=finite)[1]

    def split(self, high: np.ndarray, exponent: np.ndarray | int) -> None:
        """mant and scale of the values high 2^exponent (mant_lo 0)."""
        np.frexp(high, out=(self.mant, self.scale))
        self.mant *= 2.0
        self.scale -= 1
        if not isinstance(exponent, int):
            self.scale += exponent

    def exact(self, mask: np.ndarray | None, value: float, decided: np.ndarray) -> np.ndarray:
        """Entries of mask (None: none) are exactly value; decided, with them."""
        if mask is None:
            return decided
        self.rounded[mask], self.mant[mask], self.scale[mask] = value, value, 0
        if self.low is not None:
            self.low[mask] = 0.0
        return decided | mask

    def write(self) -> None:
        """Into the columns (where the chunk is not a view of them already)."""
        if self.low is not None:
            self.columns.mant_lo[self.target, self.span] = self.low
        if not isinstance(self.target, slice):
            _place(self.columns, self.target, self.span, self.rounded, (self.mant, 0.0, self.scale))


def _float_log_softmax(dh: np.ndarray, dl: np.ndarray | None, hidden: np.ndarray | None, words: tuple,
                       small: np.ndarray, fmt: Format, chunk: _Chunk, finite: bool) -> np.ndarray:
    """log_softmax_j = d_j - L on the float64 tier: value = fl(dh - Lh) within u |value| + |dl| + |Ll|
    + dL; rows in small (tiny L) through the exact split (_log_softmax_words). Which are decided."""
    lh, ll, d_log_tail = words
    value = dh + lh
    bound = (d_log_tail + np.abs(ll)) * SLACK
    if dl is not None:
        bound = bound + np.abs(dl) * SLACK
    # (bound + 2^-52 |value|) (1 + 2^-40), the value's rounding and the ends' (absolute_ends),
    # formed in two roundings, which the margin between 2^-40 and 2^-41 covers.
    error = np.abs(value)
    error *= 2.0**-52 * SLACK
    error += bound
    decided = chunk.decide(absolute_ends(value, error), fmt, finite)
    chunk.split(value, 0)
    if small.size:
        lows = np.zeros((small.size, dh.shape[1])) if dl is None else dl[small]
        high, low, third, relative = _log_softmax_words(dh[small], lows, lh[small], ll[small],
                                                        d_log_tail[small])
        chunk.rounded[small], decided[small] = round_certified(high, low, 0, relative, fmt, third)
        chunk.low = np.zeros_like(value)
        chunk.mant[small], chunk.low[small], chunk.scale[small] = split(high, low, 0)
    decided = chunk.exact(hidden, -np.inf, decided)
    chunk.write()
    return decided


@dataclass
class Pending:
    """The elements of the regular rows that no tier has decided yet. A row's first tier computes
    every element and writes the row's terms; a later tier (a retry) recomputes only the column
    chunks that hold an undecided element, and keeps the first tier's terms: a long row with a
    few elements near a rounding boundary does not pay for the whole row twice."""

    mask: np.ndarray
    first: bool = True

    def spans(self, ids: np.ndarray, n: int) -> Iterator[slice]:
        """The column chunks of rows ids to compute on this tier."""
        for span in _column_chunks(n):
            if self.first or self.mask[ids, span].any():
                yield span

    def settle(self, ids: np.ndarray, span: slice, settled: np.ndarray) -> None:
        """Record which elements of a computed chunk this tier decided (or found exact)."""
        self.mask[ids, span] = ~settled

    def clear(self, ids: np.ndarray) -> np.ndarray:
        """Which of rows ids have no undecided element left."""
        return ~self.mask[ids].any(axis=1)


@dataclass
class Certificate:
    """How the fast path decided a family's values: elements of the elementwise ops, and rows
    (for a reduced op) by tier, and those it left "undecided"."""

    elements: dict[str, int]
    rows: dict[str, int]


Block = Callable[[list[np.ndarray], np.ndarray, str, Format, dict[str, Columns], Pending], np.ndarray]


def run_tiers(inputs: list[np.ndarray], regular: np.ndarray, tiers: tuple[str, ...], fmt: Format,
              out: dict[str, Columns], block: Block) -> tuple[np.ndarray, Certificate]:
    """Each tier in turn on the regular rows the tiers before it left undecided. The certificate
    counts the elements decided by each tier in the rows the fast path decides, and the elements
    of the rows it leaves "undecided" (for mpmath); and, for reduced ops, rows by the tier that
    finished them."""
    rows, n = inputs[0].shape
    done = np.zeros(rows, dtype=bool)
    pending = Pending(np.ones((rows, n), dtype=bool))
    settled = {tier: np.zeros(rows, dtype=np.int64) for tier in tiers}
    finished = dict.fromkeys(tiers, 0)
    with progress(int(regular.sum()) * n, f"oracle {fmt.name} fast path") as advance:
        for tier in tiers:
            for ids in row_blocks(np.flatnonzero(regular & ~done), n):
                before = pending.mask[ids].sum(axis=1)
                decided = block([_rows(a, ids) for a in inputs], ids, tier, fmt, out, pending)
                settled[tier][ids] += before - pending.mask[ids].sum(axis=1)
                done[ids[decided]] = True
                finished[tier] += int(decided.sum())
                if pending.first:
                    advance(ids.size * n)
            pending.first = False
    left = int((regular & ~done).sum())
    return done, Certificate(elements={**{tier: int(settled[tier][done].sum()) for tier in tiers},
                                       "undecided": left * n},
                             rows={**finished, "undecided": left})


def _rows(array: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """array[ids], as a view where ids are consecutive (a long row is a block of its own)."""
    if ids.size and ids[-1] - ids[0] == ids.size - 1:
        return array[ids[0]:ids[-1] + 1]
    return array[ids]


def forward_fast(inputs: list[np.ndarray], fmt: Format,
                 out: dict[str, Columns]) -> tuple[np.ndarray, Certificate]:
    """The forward ops of the regular rows: float64 first for outputs of 24 bits or fewer."""
    tiers = (FLOAT_TIER, DOUBLE_TIER) if fmt.p <= 24 else (DOUBLE_TIER,)
    return run_tiers(inputs, regular_rows(inputs[0]), tiers, fmt, out, forward_block)


@dataclass(frozen=True)
class Arithmetic:
    """A tier's arithmetic on (high, low) words and its errors, relative to the result: double
    words (softmax_suite.oracle.doubleword), or float64 with every low word 0, whose operations round once
    (u) and which drops the low word of R and q (u more, word_rounding)."""

    mul: Callable[..., tuple]
    add: Callable[..., tuple]
    difference: Callable[[np.ndarray, np.ndarray], tuple]
    tree_sum: Callable[[np.ndarray, np.ndarray], tuple]
    tree_error: Callable[[int], float]
    mul_error: float
    add_error: float
    difference_error: float
    word_rounding: float


DOUBLE_WORDS = Arithmetic(dw.mul, dw.add, dw.two_sum, dw.tree_sum, dw.tree_error, dw.MUL_ERROR,
                          dw.ADD_ERROR, 0.0, 0.0)


ZeroFinder = Callable[[np.ndarray, np.ndarray], np.ndarray]
TermsBuilder = Callable[..., dict[str, dict[str, np.ndarray]]]


def vjp_fast(inputs: list[np.ndarray], fmt: Format, out: dict[str, Columns], zeros: ZeroFinder,
             terms: TermsBuilder) -> tuple[np.ndarray, Certificate]:
    """The three VJPs of the regular rows with finite cotangents below 2^1000: float64 first for
    outputs of 24 bits or fewer, then double words. zeros(row, g) marks the exact zeros of
    softmax_vjp; terms(x, g, g_row, y, gap, row_terms) builds the budget terms (oracle.gradients)."""
    x, g, g_row = inputs
    largest = np.abs(g).max(axis=1, initial=0.0)
    with np.errstate(invalid="ignore"):
        regular = regular_rows(x) & np.isfinite(g).all(axis=1) & (largest <= 2.0**1000) \
            & (np.abs(g_row) <= 2.0**1000)

    def block(rows: list[np.ndarray], ids: np.ndarray, tier: str, fmt: Format,
              out: dict[str, Columns], pending: Pending) -> np.ndarray:
        return _vjp_block(rows, ids, tier, fmt, out, pending, zeros, terms)

    tiers = (FLOAT_TIER, DOUBLE_TIER) if fmt.p <= 24 else (DOUBLE_TIER,)
    return run_tiers(inputs, regular, tiers, fmt, out, block)


def _softmax_words(state: ForwardState, span: slice, words: Arithmetic) -> tuple[np.ndarray, ...]:
    """y_j = softmax_j on span as (yh, yl, E) and scaled into float64 (yf, yfl); 0 where masked."""
    dh, _, hidden = state.gaps(span)
    rh, rl = (column(v) for v in state.scalars.r)
    yh, yl = words.mul(state.mh[:, span], state.ml[:, span], rh, rl)
    exponent = state.exponent[:, span]
    with np.errstate(under="ignore"):
        yf = np.where(hidden, 0.0, np.ldexp(yh, exponent))
        yfl = np.where(hidden, 0.0, np.ldexp(yl, exponent))
    return yh, yl, exponent, yf, yfl, dh, hidden


def _vjp_block(inputs: list[np.ndarray], ids: np.ndarray, tier: str, fmt: Format,
               out: dict[str, Columns], pending: Pending, zeros: ZeroFinder,
               terms: TermsBuilder) -> np.ndarray:
    x, g = inputs[:2]
    # Before the exponentials: finding the zeros may sort the row, and a long row's peak memory
    # is then this or the state, not both.
    zero = np.stack([zeros(x[i], g[i]) for i in range(x.shape[0])])
    state = forward_state(x, tier, fmt)
    if state.double:
        _vjp_words(inputs, ids, fmt, out, pending, zero, terms, state)
    else:
        _vjp_float(inputs, ids, fmt, out, pending, zero, terms, state)
    return pending.clear(ids)


def _vjp_words(inputs: list[np.ndarray], ids: np.ndarray, fmt: Format, out: dict[str, Columns],
               pending: Pending, zero: np.ndarray, terms: TermsBuilder, state: ForwardState) -> None:
    """The VJPs of a block on the double-word tier (module docstring)."""
    x, g, g_row = inputs
    words = DOUBLE_WORDS
    scalars = state.scalars
    rows, n = x.shape
    every = np.arange(rows)
    k = state.argmax
    g_k = g[every, k]
    mul_error, add_error, difference_error = words.mul_error, words.add_error, words.difference_error
    eps_y = (state.eps_exp + scalars.eps_r + words.word_rounding + mul_error) * SLACK
    sums: dict[str, list] = {"S": [], "S_low": [], "B": [], "G": [], "G_low": [], "A": []}
    spread = np.zeros(rows)
    for span in _column_chunks(n):
        _, _, _, yf, yfl, _, hidden = _softmax_words(state, span, words)
        gs = g[:, span]
        delta_h, delta_l = words.difference(gs, -column(g_k))
        ph, pl = words.mul(delta_h, delta_l, yf, yfl)
        skip = hidden | _at(k, span, hidden.shape[1])
        ph, pl = np.where(skip, 0.0, ph), np.where(skip, 0.0, pl)
        for name, value in zip(("S", "S_low"), words.tree_sum(ph, pl), strict=True):
            sums[name].append(value)
        sums["B"].append(dw.float_tree_sum(np.abs(ph)))
        for name, value in zip(("G", "G_low"), words.tree_sum(gs, np.zeros_like(gs)), strict=True):
            sums[name].append(value)
        sums["A"].append(dw.float_tree_sum(np.abs(gs)))
        spread = np.maximum(spread, np.abs(delta_h).max(axis=1))
    stacked = {name: np.stack(values, 1) for name, values in sums.items()}
    s_high, s_low = words.tree_sum(stacked["S"], stacked["S_low"])
    g_high, g_low = words.tree_sum(stacked["G"], stacked["G_low"])
    upper = (1 + 3 * dw.U) * (1 + dw.float_tree_error(2 * n)) * SLACK
    weight = dw.float_tree_sum(stacked["B"]) * upper
    magnitude = dw.float_tree_sum(stacked["A"])
    tree = words.tree_error(2 * n)
    d_total = tree * magnitude * upper
    d_spread = ((eps_y + difference_error + mul_error + tree) * weight + n * TINY * (1 + spread)) * SLACK
    qh, ql = scalars.share
    rest_h, rest_l = words.add(g_high, g_low, -g_k, np.zeros(rows))
    product_h, product_l = words.mul(g_high, g_low, qh, ql)
    top_h, top_l = words.add(product_h, product_l, -rest_h, -rest_l)
    # A row whose terms fall below the words' range (a gap of ~760 in float32) makes inf * 0 here:
    # its NaN bound decides no element, and the row goes on to mpmath (see the self-test).
    with np.errstate(invalid="ignore"):
        top_err = ((scalars.eps_share + words.word_rounding + mul_error) * np.abs(product_h) + qh * d_total
                   + d_total + add_error * np.abs(rest_h) + TINY * (1 + np.abs(g_high))) * SLACK
    g_mant, g_exp = np.frexp(g_row)

    y_all, gap_all = (np.empty_like(x), np.empty_like(x)) if pending.first else (None, None)
    for span in pending.spans(ids, n):
        yh, yl, exponent, yf, yfl, dh, hidden = _softmax_words(state, span, words)
        gs = g[:, span]
        at_k = _at(k, span, hidden.shape[1])
        if pending.first:
            y_all[:, span], gap_all[:, span] = yf + yfl, np.where(hidden, np.inf, np.abs(dh))

        high, low = words.mul(yh, yl, column(g_mant), np.zeros((rows, 1)))
        error = column(eps_y + mul_error) * SLACK
        settled = _place_decided(out["logsumexp_vjp"], ids, span, fmt, high, low, exponent + column(g_exp),
                             error, hidden | column(g_row == 0), 0.0)

        ph, pl = words.mul(yf, yfl, column(g_high), column(g_low))
        high, low = words.add(gs, np.zeros_like(gs), -ph, -pl)
        absolute = column(eps_y + mul_error) * np.abs(ph) + yf * column(d_total) \
            + TINY * (1 + np.abs(column(g_high)))
        high = np.where(at_k, column(top_h), np.where(hidden, gs + 0.0, high))
        low = np.where(at_k, column(top_l), np.where(hidden, 0.0, low))
        absolute = np.where(at_k, column(top_err), np.where(hidden, 0.0, absolute * SLACK))
        absolute = np.where(column(magnitude == 0), 0.0, absolute)  # g = 0: exact zeros
        with np.errstate(divide="ignore", invalid="ignore"):
            error = np.where(absolute == 0, 0.0, (absolute / np.abs(high) + add_error) * SLACK)
        # g_j = 0: the value is -y_j G, which keeps y_j's exponent (y_j may lie below float64).
        scaled = (gs == 0) & ~hidden & ~at_k & column(magnitude > 0)
        product_h, product_l = words.mul(yh, yl, -column(g_high), -column(g_low))
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 where g = 0: not selected below
            relative = column(eps_y + mul_error + d_total / np.abs(g_high)) * SLACK
        high, low = np.where(scaled, product_h, high), np.where(scaled, product_l, low)
        error = np.where(scaled, relative, error)
        settled &= _place_decided(out["log_softmax_vjp"], ids, span, fmt, high, low,
                                  np.where(scaled, exponent, 0), error, np.zeros_like(hidden), 0.0)

        delta_h, delta_l = words.difference(gs, -column(g_k))
        fh, fl = words.add(delta_h, delta_l, -column(s_high), -column(s_low))
        high, low = words.mul(yh, yl, fh, fl)
        with np.errstate(divide="ignore", invalid="ignore"):
            error = (column(eps_y + 2 * mul_error + add_error)
                     + (column(d_spread) + difference_error * np.abs(delta_h)) / np.abs(fh)) * SLACK
        settled &= _place_decided(out["softmax_vjp"], ids, span, fmt, high, low, exponent, error,
                                  hidden | zero[:, span], 0.0)
        pending.settle(ids, span, settled)

    if pending.first:
        finite_gap = np.where(np.isinf(gap_all), 0.0, gap_all)
        row_terms = _row_terms(np.sum(y_all * finite_gap, axis=1), finite_gap.max(axis=1), scalars)
        _write_terms(out, ids, terms(x, g, g_row, y_all, gap_all, row_terms))


def _float_softmax(state: ForwardState, span: slice, rh: np.ndarray) -> tuple[np.ndarray, ...]:
    """(h, E, y, hidden) on the float64 tier: y_j = h 2^E with h = fl(m_j fl(R)), scaled into
    float64 (0 where masked, where hidden is true; None where no entry is)."""
    high, exponent = state.mh[:, span] * rh, state.exponent[:, span]
    y = np.ldexp(high, exponent)
    hidden = np.isneginf(state.x[:, span]) if state.masked else None
    if hidden is not None:
        y[hidden] = 0.0
    return high, exponent, y, hidden


def _either(shape: tuple[int, ...], *masks: np.ndarray | None) -> np.ndarray | None:
    """The union of masks (broadcast to shape), None where none is given or all are empty."""
    present = [mask for mask in masks if mask is not None and mask.any()]
    if not present:
        return None
    return np.logical_or.reduce(np.broadcast_arrays(*present, np.zeros(shape, dtype=bool)))


def _vjp_float(inputs: list[np.ndarray], ids: np.ndarray, fmt: Format, out: dict[str, Columns],
               pending: Pending, zero: np.ndarray, terms: TermsBuilder, state: ForwardState) -> None:
    """The VJPs of a block on the float64 tier: the double-word formulas with every low word 0 and
    M = A = D = u, T = float_tree_error (module docstring), decided by round_between."""
    x, g, g_row = inputs
    scalars = state.scalars
    rows, n = x.shape
    u = dw.U
    k = state.argmax
    g_k = g[np.arange(rows), k]
    rh = column(scalars.r[0])
    eps_y = (state.eps_exp + scalars.eps_r + 2 * u) * SLACK
    # Rows whose terms fall below float64's range (a gap of ~760 in float32) make inf * 0 in the
    # bounds: their NaN bounds decide no element, and the rows go on (see the self-test).
    with np.errstate(all="ignore"):
        # S, B, G and A in one tree: the terms (g_i - g_k) y_i (0 at k, where delta is 0, and where
        # masked, where y is), their magnitudes, g_i and |g_i|, side by side in one scratch array.
        parts, spread = [], np.zeros(rows)
        for span in _column_chunks(n):
            _, _, y, _ = _float_softmax(state, span, rh)
            gs = g[:, span]
            scratch = np.empty((4, *gs.shape))
            delta = np.subtract(gs, column(g_k), out=scratch[2])
            spread = np.maximum(spread, np.abs(delta).max(axis=1))
            np.multiply(delta, y, out=scratch[0])
            np.abs(scratch[0], out=scratch[1])
            scratch[2] = gs
            np.abs(gs, out=scratch[3])
            parts.append(dw.float_tree_sum(scratch, overwrite=True))
        s_high, weight, g_high, magnitude = dw.float_tree_sum(np.stack(parts, -1), overwrite=True)
        tree = dw.float_tree_error(2 * n)
        upper = (1 + 3 * u) * (1 + tree) * SLACK
        weight = weight * upper
        d_total = tree * magnitude * upper
        d_spread = ((eps_y + 2 * u + tree) * weight + n * TINY * (1 + spread)) * SLACK
        qh = scalars.share[0]
        rest = g_high - g_k
        product = g_high * qh
        top = product - rest
        top_err = ((scalars.eps_share + 2 * u) * np.abs(product) + qh * d_total + d_total + u * np.abs(rest)
                   + TINY * (1 + np.abs(g_high))) * SLACK
        g_mant, g_exp = np.frexp(g_row)
        eps_sum = column((eps_y + u) * SLACK)
        # A relative error of 1 or more decides nothing; at 2 the ends stay finite.
        eps_scaled = column(np.fmin((eps_y + u + d_total / np.abs(g_high)) * SLACK, 2.0))
        eps_softmax = column((eps_y + 3 * u) * SLACK)
        # Finite bounds make finite ends (round_between need not look for NaN).
        finite = bool(np.isfinite([eps_y, d_total, d_spread, top_err]).all())
        row_zero = column(g_row == 0)
        exact_rows = column(magnitude == 0)
        tiny = column(TINY * (1 + np.abs(g_high)))
        target = _target(ids)
        weighted_gap, max_gap = np.zeros(rows), np.zeros(rows)
        y_all, gap_all = (np.empty_like(x), np.empty_like(x)) if pending.first else (None, None)
        for span in pending.spans(ids, n):
            high, exponent, y, hidden = _float_softmax(state, span, rh)
            gs = g[:, span]
            shape = gs.shape

            # logsumexp_vjp_j = g y_j: relative eps_y + M.
            product = high * column(g_mant)
            scale = exponent + column(g_exp)
            chunk = _Chunk.of(out["logsumexp_vjp"], target, span, shape)
            settled = chunk.decide(relative_ends(np.ldexp(product, scale), eps_sum), fmt, finite)
            chunk.split(product, scale)
            settled = chunk.exact(_either(shape, hidden, row_zero), 0.0, settled)
            chunk.write()

            # log_softmax_vjp_j = g_j - y_j G: absolute (eps_y + M) |y_j G| + y_j dG + TINY (1 + |G|),
            # then A |value|; exact g_j where masked; G q - (G - g_k) at k; g = 0 gives exact zeros.
            product = y * column(g_high)
            value = gs - product
            absolute = column(eps_y + u) * np.abs(product) + y * column(d_total) + tiny
            if hidden is not None:
                absolute[hidden] = 0.0
            _set_at(value, k, span, top)
            _set_at(absolute, k, span, top_err)
            absolute[np.broadcast_to(exact_rows, shape)] = 0.0
            value += 0.0  # an exact zero is +0 (mpmath's zero has no sign)
            error = absolute * SLACK**4 + np.abs(value) * (2.0**-52 * SLACK**3)
            chunk = _Chunk.of(out["log_softmax_vjp"], target, span, shape)
            decided = chunk.decide(absolute_ends(value, error), fmt, finite)
            chunk.split(value, 0)
            # g_j = 0: the value is -y_j G, relative eps_y + M + dG / |G|, with y_j's exponent (y_j
            # may lie below float64's range, where the absolute bound leaves even its sign open).
            scaled = _either(shape, gs == 0)
            if scaled is not None:
                scaled &= ~exact_rows
                if hidden is not None:
                    scaled &= ~hidden
                _set_at(scaled, k, span, False)
                product = high * column(-g_high)
                rounded, sure = round_between(*relative_ends(np.ldexp(product, exponent), eps_scaled), fmt,
                                              finite=True)
                chunk.rounded[scaled], decided[scaled] = rounded[scaled], sure[scaled]
                mant, scale = np.frexp(product)
                chunk.mant[scaled], chunk.scale[scaled] = 2.0 * mant[scaled], (scale + exponent - 1)[scaled]
            chunk.write()
            settled &= decided

            # softmax_vjp_j = y_j ((g_j - g_k) - S): relative eps_y + 2M + A + (dS + D |g_j - g_k|) / |f_j|.
            delta = gs - column(g_k)
            difference = delta - column(s_high)
            product = high * difference
            error = eps_softmax + (column(d_spread) + u * np.abs(delta)) * SLACK / np.abs(difference)
            np.fmin(error, 2.0, out=error)  # a relative error of 1 or more decides nothing
            chunk = _Chunk.of(out["softmax_vjp"], target, span, shape)
            decided = chunk.decide(relative_ends(np.ldexp(product, exponent), error), fmt, finite)
            chunk.split(product, exponent)
            settled &= chunk.exact(_either(shape, hidden, zero[:, span]), 0.0, decided)
            chunk.write()
            pending.settle(ids, span, settled)

            if pending.first:
                gap = np.abs(x[:, span] - column(state.top))
                if hidden is not None:
                    gap[hidden] = 0.0
                weighted_gap += np.sum(y * gap, axis=1)
                max_gap = np.maximum(max_gap, gap.max(axis=1))
                if hidden is not None:
                    gap[hidden] = np.inf
                y_all[:, span], gap_all[:, span] = y, gap
    if pending.first:
        row_terms = _row_terms(weighted_gap, max_gap, scalars)
        _write_terms(out, ids, terms(x, g, g_row, y_all, gap_all, row_terms))


def _write_terms(out: dict[str, Columns], ids: np.ndarray, built: dict[str, dict[str, np.ndarray]]) -> None:
    """Write a block's terms into out; an array several ops share stays one array. A block of
    every row in order hands its arrays over instead of copying them (a long row is one block)."""
    targets: dict[int, np.ndarray] = {}
    for op, named in built.items():
        rows = out[op].rounded.shape[0]
        whole = ids.size == rows and bool(np.all(ids == np.arange(rows)))
        for name, values in named.items():
            if id(values) not in targets:
                target = out[op].terms.get(name)
                if whole and values.flags.owndata and values.flags.writeable:
                    target = values  # replaces what an earlier tier wrote, for every op at once
                else:
                    if target is None:
                        target = np.empty((rows, *values.shape[1:]))
                    target[ids] = values
                targets[id(values)] = target
            out[op].terms[name] = targets[id(values)]


def column(values: np.ndarray) -> np.ndarray:
    """A per-row array as a column, to broadcast along the rows."""
    return values[:, None]


def _place_decided(columns: Columns, ids: np.ndarray, span: slice, fmt: Format, high: np.ndarray,
                   low: np.ndarray, exponent: np.ndarray | int, error: np.ndarray,
                   exact: np.ndarray, exact_value: float, third: np.ndarray | float = 0.0) -> np.ndarray:
    """Decide and write one chunk of (high + low + third) 2^exponent; entries marked exact take
    exact_value. Which elements were decided (or exact)."""
    rounded, decided = round_certified(high, low, exponent, error, fmt, third)
    mant, mant_lo, scale = split(high, low, exponent)
    if exact.any():
        rounded, mant = np.where(exact, exact_value, rounded), np.where(exact, exact_value, mant)
        mant_lo, scale = np.where(exact, 0.0, mant_lo), np.where(exact, 0, scale)
        decided = decided | exact
    _place(columns, ids, span, rounded, (mant, mant_lo, scale))
    return decided
