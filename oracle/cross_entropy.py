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

The gradient (cross_entropy_vjp) of a kept row, times the loss's cotangent g (over the kept rows'
weight for "mean"), is p_c K - e w_c / C for c != t and e (W - w_t) / C - K S / (1 + S) for the
target, K = (1 - e) w_t + e W / C: 1 - p_t is formed as S / (1 + S), so a confident row's
-3.6e-35 keeps its bits where softmax - onehot gives 0. Its values are transcendental but where a
term vanishes exactly (p_c = 0 at a -inf logit), and the same loop decides them.

Special values (the policy the ops are judged by, docs/cross-entropy.md): any NaN or +inf logit in a
kept row, or a row of only -inf, makes its loss NaN; a -inf logit is a class of probability 0: as
the target, the loss is +inf; under label smoothing with a positive weight on it, the smoothed
term is +inf too. The gradient is log_softmax's VJP at the smoothed target's cotangent, and its
special values are that VJP's: NaN for a row holding a NaN or a +inf or only -inf; finite where the
loss is +inf (the limit as the target's logit goes to -inf: p - onehot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from mpmath.libmp import (
    finf,
    fnan,
    fone,
    from_float,
    from_int,
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
    round_nearest,
)

from softmax_suite.formats import format_of
from softmax_suite.ops import REDUCTIONS
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.exact import MAX_PRECISION, initial_precision
from softmax_suite.oracle.rounding import round_interval

# An exact value and its rounding into the output format.
Decided = tuple[tuple, float]
# A target this far (in nats) below its row's largest logit is pivoted on the largest: exp(x_c - x_t)
# of a wider gap may not fit mpmath's numbers (exp(6e38)), and log1p(S) is then about the gap.
FAR = 64.0


def _bound_add(a: tuple, b: tuple) -> tuple:
    return mpf_add(a, b, 64, round_ceiling)


def _eps(precision: int, magnitude: tuple, multiple: int) -> tuple:
    """multiple * 2^-precision * |magnitude|, rounded up (an mpf: 2^-4096 is no float64)."""
    return mpf_mul(from_man_exp(multiple, -precision), (0, *magnitude[1:]), 64, round_ceiling)


def _far_loss(x: np.ndarray, top: tuple, largest: float, precision: int) -> tuple[tuple, tuple]:
    """(L, its error bound) of a row whose target trails its largest logit a by more than FAR, where
    exp(x_c - x_t) may pass any exponent (3e38 - -3e38): L = (a - x_t) + log T, T = sum_c exp(x_c - a)
    >= 1 within 8 eps T; log T is then within 10 eps (1 + log T), and the sum rounds once more:
    within 24 eps L, as L > FAR > 1 and log T <= L."""
    pivot = from_float(largest)
    terms = [mpf_exp(mpf_sub(from_float(float(v)), pivot), precision, round_nearest)
             for v in x if np.isfinite(v)]
    log_total = mpf_log(mpf_sum(terms, precision, round_nearest), precision, round_nearest)
    loss = mpf_add(mpf_sub(pivot, top), log_total, precision, round_nearest)
    return loss, _eps(precision, loss, 24)


def _row_loss(x: np.ndarray, t: int, w: np.ndarray, smoothing: float, precision: int) -> tuple[tuple, tuple]:
    """(loss, absolute error bound) of one kept row at precision."""
    if np.isnan(x).any() or np.isposinf(x).any() or np.isneginf(x).all():
        return fnan, fzero
    if np.isneginf(x[t]):
        return finf, fzero
    if smoothing > 0 and np.any(np.isneginf(x) & (w > 0)):
        return finf, fzero
    top = from_float(float(x[t]))
    gaps = [mpf_sub(from_float(float(v)), top) for v in x]  # exact; -inf where a logit is -inf
    largest = float(np.max(x[np.isfinite(x)]))
    if largest - float(x[t]) > FAR:
        log_tail, log_err = _far_loss(x, top, largest, precision)
    else:
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
    e = from_float(smoothing)
    keep = mpf_sub(from_int(1), e)  # 1 - e, exact in mpf (in float64 1 - 0.1 would round)
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


def _checked(x: np.ndarray, targets: Sequence[int] | np.ndarray, reduction: str, ignore_index: int,
             label_smoothing: float, weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x in float64, targets, class weights) after checking each argument; a ValueError that says
    what to give."""
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
    return x64, targets, w


def cross_entropy(x: np.ndarray, targets: Sequence[int] | np.ndarray, *, reduction: str = "mean",
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  weight: np.ndarray | None = None) -> np.ndarray:
    """The correctly rounded cross-entropy of logits x (N, C) in x's dtype, with targets (N,) class
    indices: a loss per row ("none", 0 for an ignored row) or one value ("mean", "sum")."""
    decided, _ = exact_cross_entropy(x, targets, reduction=reduction, ignore_index=ignore_index,
                                     label_smoothing=label_smoothing, weight=weight)
    rounded = np.asarray([found for _, found in decided], dtype=format_of(x.dtype).np_dtype)
    return rounded if reduction == "none" else rounded.reshape(())


def exact_cross_entropy(x: np.ndarray, targets: Sequence[int] | np.ndarray, *, reduction: str = "mean",
                        ignore_index: int = -100, label_smoothing: float = 0.0,
                        weight: np.ndarray | None = None) -> tuple[list[Decided], int]:
    """cross_entropy's values, each exact (an mpf within the last precision's bound) and rounded,
    one per row or one in all, and the precision that decided them."""
    fmt = format_of(x.dtype)
    x64, targets, w = _checked(x, targets, reduction, ignore_index, label_smoothing, weight)
    precision = initial_precision(fmt)
    while True:
        losses = _losses(x64, targets, w, ignore_index, label_smoothing, precision)
        decided = _rounded(losses, targets, w, reduction, fmt, precision)
        if decided is not None or precision >= MAX_PRECISION:
            break
        precision *= 2
    if decided is None:  # no known input gets here (module docstring); rounded as computed
        decided = _rounded(losses, targets, w, reduction, fmt, precision, force=True)
    return decided, precision


def _rounded(losses: list, targets: np.ndarray, w: np.ndarray, reduction: str, fmt, precision: int,
             force: bool = False) -> list[Decided] | None:
    """The losses for the reduction with their roundings into fmt, or None where one is undecided."""
    def decide(value: tuple, err: tuple) -> Decided | None:
        found = round_interval(value, err, fmt, precision)
        if found is None and force:
            found = round_interval(value, fzero, fmt, precision)
        return None if found is None else (value, found)

    if reduction == "none":
        out = []
        for item in losses:
            found = (fzero, 0.0) if item is None else decide(*item)
            if found is None:
                return None
            out.append(found)
        return out
    decided = _reduced(losses, targets, w, reduction, precision, decide)
    return None if decided is None else [decided]


def _reduced(losses: list, targets: np.ndarray, w: np.ndarray, reduction: str, precision: int,
             decide) -> Decided | None:
    """The sum or the mean of the kept rows' losses."""
    kept = [item for item in losses if item is not None]
    if any(value == fnan for value, _ in kept):
        return fnan, math.nan
    if any(value == finf for value, _ in kept):
        return finf, math.inf
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
        return fnan, math.nan  # every row ignored (or of weight 0): 0/0
    mean = mpf_div(total, denominator, precision, round_nearest)
    return decide(mean, _bound_add(mpf_div(err, denominator, 64, round_ceiling), _eps(precision, mean, 2)))


def _row_gradient(x: np.ndarray, t: int, w: np.ndarray, smoothing: float, factor: tuple,
                  precision: int) -> list[tuple[tuple, tuple]]:
    """(value, absolute error bound) of d loss / d x_c for every class c of one kept row, times factor
    (the cotangent, with the reduction's 1 / sum of weights for mean), exact in mpf."""
    c_count = x.size
    if np.isnan(x).any() or np.isposinf(x).any() or np.isneginf(x).all() or factor == fnan:
        return [(fnan, fzero)] * c_count
    finite = np.isfinite(x)
    # The target's logit is the pivot; one far below the largest (FAR), or -inf (p_t = 0), pivots on
    # the largest, and its own exp(x_t - a) joins the denominator.
    largest = float(np.max(x[finite]))
    pivoted = bool(finite[t]) and largest - float(x[t]) <= FAR
    top = from_float(float(x[t]) if pivoted else largest)
    exps = [mpf_exp(mpf_sub(from_float(float(v)), top), precision, round_nearest) if ok and c != t else fzero
            for c, (v, ok) in enumerate(zip(x, finite, strict=True))]
    total = mpf_sum(exps, precision, round_nearest)  # S, within 8 eps S (exact.py's bound)
    own = fone if pivoted else (mpf_exp(mpf_sub(from_float(float(x[t])), top), precision, round_nearest)
                                if finite[t] else fzero)
    denominator = mpf_add(own, total, precision, round_nearest)
    weights = [from_float(float(v)) for v in w]
    e = from_float(smoothing)
    classes = from_int(c_count)
    # K = (1 - e) w_t + e W / C: what multiplies p_c; exact but for the division by C.
    keep = mpf_sub(from_int(1), e)  # exact
    total_weight = mpf_sum(weights, 0)  # exact
    spread = mpf_div(mpf_mul(e, total_weight), classes, precision, round_nearest)
    k = mpf_add(mpf_mul(keep, weights[t]), spread, precision, round_nearest)
    k_err = _eps(precision, k, 4)
    out = []
    for c in range(c_count):
        share = mpf_div(mpf_mul(e, weights[c]), classes, precision, round_nearest)  # e w_c / C
        share_err = _eps(precision, share, 2)
        if c != t:
            # p_c K - e w_c / C, with p_c = e_c / (1 + S) within 24 eps (exp, sum, division).
            p = mpf_div(exps[c], denominator, precision, round_nearest)
            p_err = _eps(precision, p, 24)
            product = mpf_mul(p, k, precision, round_nearest)
            value = mpf_sub(product, share, precision, round_nearest)
            err = _bound_add(_bound_add(mpf_mul(p_err, (0, *k[1:]), 64, round_ceiling),
                                        mpf_mul((0, *p[1:]), k_err, 64, round_ceiling)),
                             _bound_add(_eps(precision, product, 2), share_err))
        else:
            # p_t K - (1 - e) w_t - e w_t / C = e (W - w_t) / C - K S / (1 + S): no 1 - p_t formed.
            exact_one = own == fzero  # a -inf target: 1 - p_t = 1
            rest = from_int(1) if exact_one else mpf_div(total, denominator, precision, round_nearest)
            rest_err = fzero if exact_one else _eps(precision, rest, 24)  # 1 - p_t
            product = mpf_mul(k, rest, precision, round_nearest)
            # e (W - w_t) / C, one rounding: W - w_t and e (W - w_t) are exact.
            others = mpf_div(mpf_mul(e, mpf_sub(total_weight, weights[t])), classes, precision, round_nearest)
            value = mpf_sub(others, product, precision, round_nearest)
            err = _bound_add(_bound_add(mpf_mul(rest_err, (0, *k[1:]), 64, round_ceiling),
                                        mpf_mul((0, *rest[1:]), k_err, 64, round_ceiling)),
                             _bound_add(_eps(precision, product, 2), _eps(precision, others, 2)))
        err = _bound_add(err, _eps(precision, value, 2))
        scaled = mpf_mul(value, factor, precision, round_nearest)
        # 4 eps: the product's rounding and the factor's own (mean's division by the kept weight).
        out.append((scaled, _bound_add(mpf_mul(err, (0, *factor[1:]), 64, round_ceiling),
                                       _eps(precision, scaled, 4))))
    return out


def cross_entropy_vjp(x: np.ndarray, targets: Sequence[int] | np.ndarray, g: float | np.ndarray, *,
                      reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0,
                      weight: np.ndarray | None = None) -> np.ndarray:
    """The correctly rounded gradient of cross_entropy with respect to x, for the cotangent g of the
    loss (one per row for "none", a scalar for "mean" and "sum"): per kept row
    g ((1 - e) w_t (p - onehot_t) + e / C sum_k w_k (p - onehot_k)), divided by the kept rows' weight
    for "mean"; 0 on ignored rows."""
    rows, _ = exact_cross_entropy_vjp(x, targets, g, reduction=reduction, ignore_index=ignore_index,
                                      label_smoothing=label_smoothing, weight=weight)
    return np.asarray([[found for _, found in row] for row in rows],
                      dtype=np.float64).reshape(x.shape).astype(x.dtype)


def exact_cross_entropy_vjp(x: np.ndarray, targets: Sequence[int] | np.ndarray, g: float | np.ndarray, *,
                            reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0,
                            weight: np.ndarray | None = None) -> tuple[list[list[Decided]], int]:
    """cross_entropy_vjp's values row by row, each exact (an mpf) and rounded, and the precision
    that decided them."""
    fmt = format_of(x.dtype)
    x64, targets, w = _checked(x, targets, reduction, ignore_index, label_smoothing, weight)
    g64 = np.asarray(g, dtype=np.float64)
    wanted = (x64.shape[0],) if reduction == "none" else ()
    if g64.shape != wanted:
        raise ValueError(f"cotangent of shape {g64.shape}: reduction {reduction!r} takes one of shape "
                         f"{wanted}")
    precision = initial_precision(fmt)
    while True:
        out, undecided = _gradients(x64, targets, w, g64, reduction, ignore_index, label_smoothing, fmt,
                                    precision, force=precision >= MAX_PRECISION)
        if not undecided:
            return out, precision
        precision *= 2


def _gradients(x: np.ndarray, targets: np.ndarray, w: np.ndarray, g: np.ndarray, reduction: str,
               ignore_index: int, smoothing: float, fmt, precision: int,
               force: bool) -> tuple[list[list[Decided]], bool]:
    """The gradient rows, exact and rounded into fmt, and whether any element was left undecided."""
    kept = [int(t) != ignore_index for t in targets]
    factor_all = from_float(float(g)) if reduction != "none" else None
    if reduction == "mean":
        weights = [from_float(float(w[int(t)])) for t, k in zip(targets, kept, strict=True) if k]
        denominator = mpf_sum(weights, 0)
        # Every row ignored: the loss is 0/0 and so is its gradient.
        factor_all = fnan if denominator == fzero else \
            mpf_div(factor_all, denominator, precision, round_nearest)
    rows, undecided = [], False
    for i, (row, t) in enumerate(zip(x, targets, strict=True)):
        if not kept[i]:
            rows.append([(fzero, 0.0)] * row.size)
            continue
        factor = from_float(float(g[i])) if reduction == "none" else factor_all
        rounded = []
        for value, err in _row_gradient(row, int(t), w, smoothing, factor, precision):
            found = round_interval(value, err, fmt, precision)
            if found is None:
                if not force:
                    undecided = True
                found = round_interval(value, fzero, fmt, precision)
            rounded.append((value, found))
        rows.append(rounded)
    return rows, undecided
