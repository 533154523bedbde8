"""Exact categorical cross-entropy of the exact logit bits, correctly rounded (mpmath): the loss that
training calls softmax through, with torch.nn.functional.cross_entropy's options.

For a row x of C logits, target t (not ignored), class weights w (1 when none) and label smoothing e:

    d_c = x_c - x_t (exact),  S = sum_{c != t} exp(d_c),  L = log1p(S) = -log softmax(x)_t
    -log softmax(x)_c = L - d_c
    loss = (1 - e) w_t L + e (L W - D) / C,   W = sum_c w_c,  D = sum_c w_c d_c (exact)

the log1p form: a confident correct row, loss ~ S ~ 1e-30, keeps its relative accuracy, where
-log(softmax[t]) loses it all. An ignored row (t == ignore_index) contributes nothing. The
reductions: "none" (a loss per row), "sum", and "mean": the sum over the weight of the rows kept,
sum_i w_{t_i} (0/0 = NaN when every row is ignored, as torch gives).

Bounds, with eps = 2^-P and every mpmath operation rounding with relative error at most 2 eps (the
convention of softmax_suite.oracle.exact): |L^ - L| <= 12 eps L (exact.py's derivation for
log1p(t)); the products and sums below add their own rounding, each bounded from the computed
value; D and W are exact. A value is accepted when both ends of its interval round alike
(Ziv's strategy); otherwise everything is recomputed at twice the precision. Every loss with an
S > 0 is transcendental (Lindemann-Weierstrass: a log of an algebraic number other than 1, plus a
rational), so the loop ends; S = 0 (one class, or every other logit -inf) gives L = 0 exactly.

Special values (the policy the op will be judged by): any NaN or +inf logit in a kept row makes its
loss NaN; a -inf logit is a class of probability 0: as the target, the loss is +inf; under label
smoothing with a positive weight on it, the smoothed term is +inf too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from mpmath.libmp import (
    finf,
    fnan,
    from_float,
    from_int,
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
)

from softmax_suite.formats import format_of
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.exact import MAX_PRECISION, initial_precision
from softmax_suite.oracle.rounding import round_interval

REDUCTIONS = ("none", "mean", "sum")


def _bound_add(a: tuple, b: tuple) -> tuple:
    return mpf_add(a, b, 64, round_ceiling)


def _eps(precision: int, magnitude: tuple, multiple: int) -> tuple:
    """multiple * 2^-precision * |magnitude|, rounded up (an mpf: 2^-4096 is no float64)."""
    return mpf_mul(from_man_exp(multiple, -precision), (0, *magnitude[1:]), 64, round_ceiling)


def _row_loss(x: np.ndarray, t: int, w: np.ndarray, smoothing: float, precision: int) -> tuple[tuple, tuple]:
    """(loss, absolute error bound) of one kept row at precision."""
    if np.isnan(x).any() or np.isposinf(x).any():
        return fnan, fzero
    if np.isneginf(x[t]):
        return finf, fzero
    if smoothing > 0 and np.any(np.isneginf(x) & (w > 0)):
        return finf, fzero
    top = from_float(float(x[t]))
    gaps = [mpf_sub(from_float(float(v)), top) for v in x]  # exact; -inf where a logit is -inf
    others = [mpf_exp(d, precision, round_nearest) for c, d in enumerate(gaps)
              if c != t and np.isfinite(x[c])]
    total = mpf_sum(others, precision, round_nearest) if others else fzero
    if total == fzero:
        log_tail, log_err = fzero, fzero  # S = 0 exactly: L = log1p(0) = 0
    else:
        log_tail = fastpath.log1p(total, precision)
        log_err = _eps(precision, log_tail, 12)
    w_t = from_float(float(w[t]))
    nll = mpf_mul(w_t, log_tail, precision, round_nearest)
    nll_err = _bound_add(mpf_mul(from_float(abs(float(w[t]))), log_err, 64, round_ceiling),
                         _eps(precision, nll, 2))
    if smoothing == 0:
        return nll, nll_err
    weights = [from_float(float(v)) for v in w]
    total_weight = mpf_sum(weights, 0)  # exact
    kept = [mpf_mul(wc, d) for wc, d, v in zip(weights, gaps, x, strict=True) if np.isfinite(v)]
    weighted_gaps = mpf_sum(kept, 0) if kept else fzero  # exact (products of floats are exact)
    classes = from_int(x.size)
    spread = mpf_sub(mpf_mul(log_tail, total_weight, precision, round_nearest), weighted_gaps, precision,
                     round_nearest)
    spread_err = _bound_add(_bound_add(mpf_mul(log_err, (0, *total_weight[1:]), 64, round_ceiling),
                                       _eps(precision, mpf_mul(log_tail, total_weight, 64), 2)),
                            _eps(precision, spread, 2))
    keep = from_float(1.0 - smoothing) if smoothing != 1.0 else fzero  # 1 - e is exact for e in [0, 1]
    e = from_float(smoothing)
    smooth = mpf_div(mpf_mul(e, spread, precision, round_nearest), classes, precision, round_nearest)
    smooth_err = _bound_add(mpf_div(mpf_mul(e, spread_err, 64, round_ceiling), classes, 64, round_ceiling),
                            _eps(precision, smooth, 4))
    main = mpf_mul(keep, nll, precision, round_nearest)
    main_err = _bound_add(mpf_mul(keep, nll_err, 64, round_ceiling), _eps(precision, main, 2))
    loss = mpf_add(main, smooth, precision, round_nearest)
    return loss, _bound_add(_bound_add(main_err, smooth_err), _eps(precision, loss, 2))


def _losses(x: np.ndarray, targets: np.ndarray, w: np.ndarray, ignore_index: int, smoothing: float,
            precision: int) -> list[tuple[tuple, tuple] | None]:
    """Each row's (loss, error bound), None for an ignored row."""
    return [None if int(t) == ignore_index else _row_loss(row, int(t), w, smoothing, precision)
            for row, t in zip(x, targets, strict=True)]


def cross_entropy(x: np.ndarray, targets: Sequence[int] | np.ndarray, *, reduction: str = "mean",
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  weight: np.ndarray | None = None) -> np.ndarray:
    """The correctly rounded cross-entropy of logits x (N, C) in x's dtype, with targets (N,) class
    indices: a loss per row ("none", 0 for an ignored row) or one value ("mean", "sum")."""
    fmt = format_of(x.dtype)
    x64 = np.asarray(x, dtype=np.float64)
    if x64.ndim != 2:
        raise ValueError(f"logits of shape {x64.shape}: give (N, C), one row of C class logits per sample")
    targets = np.asarray(targets)
    if targets.shape != (x64.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets of shape {targets.shape} and dtype {targets.dtype}: give one integer "
                         f"class index per row, shape ({x64.shape[0]},)")
    kept = targets != ignore_index
    if np.any(kept & ((targets < 0) | (targets >= x64.shape[1]))):
        raise ValueError(f"a target outside 0..{x64.shape[1] - 1} that is not ignore_index ({ignore_index})")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: use one of {', '.join(REDUCTIONS)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing {label_smoothing!r}: use a number in [0, 1]")
    w = np.ones(x64.shape[1]) if weight is None else np.asarray(weight, dtype=np.float64)
    if w.shape != (x64.shape[1],) or not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"weight of shape {w.shape}: give one finite, non-negative weight per class "
                         f"({x64.shape[1]})")
    precision = initial_precision(fmt)
    while True:
        losses = _losses(x64, targets, w, ignore_index, label_smoothing, precision)
        decided = _rounded(losses, targets, w, reduction, fmt, precision)
        if decided is not None or precision >= MAX_PRECISION:
            break
        precision *= 2
    if decided is None:  # no known input gets here (module docstring); rounded as computed
        decided = _rounded(losses, targets, w, reduction, fmt, precision, force=True)
    return np.asarray(decided, dtype=fmt.np_dtype)


def _rounded(losses: list, targets: np.ndarray, w: np.ndarray, reduction: str, fmt, precision: int,
             force: bool = False) -> list[float] | float | None:
    """The losses rounded into fmt for the reduction, or None where one is undecided."""
    def decide(value: tuple, err: tuple) -> float | None:
        found = round_interval(value, err, fmt, precision)
        if found is None and force:
            found = round_interval(value, fzero, fmt, precision)
        return found

    if reduction == "none":
        out = []
        for item in losses:
            found = 0.0 if item is None else decide(*item)
            if found is None:
                return None
            out.append(found)
        return out
    kept = [item for item in losses if item is not None]
    if any(value == fnan for value, _ in kept):
        return math.nan
    if any(value == finf for value, _ in kept):
        return math.inf
    total = mpf_sum([value for value, _ in kept], precision, round_nearest) if kept else fzero
    err = fzero
    for _, e in kept:
        err = _bound_add(err, e)
    err = _bound_add(err, _eps(precision, total, 2))
    if reduction == "sum":
        return decide(total, err)
    denominator = mpf_sum([from_float(float(w[int(t)])) for t, item in zip(targets, losses, strict=True)
                           if item is not None], 0)
    if denominator == fzero:
        return math.nan  # every row ignored (or of weight 0): 0/0
    mean = mpf_div(total, denominator, precision, round_nearest)
    return decide(mean, _bound_add(mpf_div(err, denominator, 64, round_ceiling), _eps(precision, mean, 2)))
