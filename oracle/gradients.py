"""Exact VJPs of softmax, log_softmax and logsumexp from the exact input and cotangent bits.

For a row x with y = softmax(x), a cotangent g (a per-row scalar for logsumexp) and
G = sum_i g_i, A = sum_i |g_i| y_i:

    softmax_vjp_j     = y_j (g_j - <g, y>)
    log_softmax_vjp_j = g_j - y_j G
    logsumexp_vjp_j   = g y_j

Each row is evaluated at a working precision P (eps = 2^-P) from the forward evaluation of
softmax_suite.oracle.exact, whose softmax values carry |y^ - y| <= 16 eps y. Let T be the m entries equal to
the max (the tied group; usually m = 1, the argmax k), y0 = 1/(m + t') their softmax, t' the
sum of the other exponentials, and deficit = 1/m - y0 = t' y0 / m (within 32 eps relative).
Nothing is computed as 1/m - y0 or 1 - y_k, which cancel when the group dominates: with the
exact C_i = m g_i - sum_T g (m times g_i less the group's mean w0; for m = 1 the differences
g_i - g_k), S = sum_{i not in T} C_i y_i and B = sum_{i not in T} |C_i| y_i (so <g, y> = w0 + S/m),

    softmax_vjp_j     = y_j (C_j - S) / m                     (j not in T)
                      = C_j / m^2 - (C_j deficit + y0 S) / m   (j in T)
    log_softmax_vjp_j = g_j - y_j G                           (j not in T)
                      = (g_j - G/m) + G deficit                (j in T; for m = 1: (g_k - G) + G q)
    logsumexp_vjp_j   = g y_j                                 (j not in T)
                      = g/m - g deficit                        (j in T)

The rational part of each j in T (and g_j for log_softmax_vjp) is exact; where the rest falls
below the working precision (a far tail: deficit ~ e^-5000) and the rational is dyadic, it may
be a midpoint of the format, and its rounding goes by the rest's sign (softmax_suite.oracle.exact.near).
With every mpmath operation rounding with relative error at most 2 eps, and sums by fsum
(one rounding):

    S^              |err| <= 24 eps B     (products 18 eps |C_i| y_i, the sum 4 eps B)
    softmax_vjp     |err| <= 48 eps y_j (|C_j - S| + B) / m             (j not in T)
                    |err| <= 48 eps (|C_j| deficit + y0 B) / m, on the rest  (j in T)
    log_softmax_vjp |err| <= 24 eps |y_j G|, on the rest y_j G         (j not in T; G is exact)
                    |err| <= 36 eps |G| deficit, on the rest            (j in T)
    logsumexp_vjp   |err| <= 20 eps |g| y_j;  36 eps |g| deficit on the rest (j in T)

plus 2 eps of the sum's rounding where the rational and the rest are added, and the bounds
are used with the margins 64, 32 and 32 (40 for the rests of the tied entries), covering the
first-order terms' second-order rest and |C_j - S| taken from the computed value. An element
is accepted when both ends of its error interval round alike (Ziv's strategy, softmax_suite.oracle.exact);
otherwise the row is recomputed at twice the precision.

The loop needs every undecided value to be irrational, and exact zeros found exactly.
Both follow from the Lindemann-Weierstrass theorem: the exp(d) of distinct rationals d are
linearly independent over the rationals. Group the finite entries of a row by value (group
D with n_D entries and cotangent sum s_D); then

* sum_i (g_j - g_i) e_i = 0, i.e. softmax_vjp_j = 0, exactly when g_j = s_D / n_D for
  every group D (a constant cotangent is the common case);
* when the row has two or more groups, y_j is irrational, and so is every non-zero value of
  the three VJPs (for softmax_vjp compare the coefficients of exp(0) and exp(2 min d) in
  e_j sum_i (g_j - g_i) e_i - r (sum e_i)^2 = 0: they force r = 0), and so is each rest beyond
  a tied entry's rational, or it is exactly 0: (C_j deficit + y0 S) is a multiple of
  C_j t'^2 + m sum_{i not in T} (C_j + C_i) e_i, whose exp(2 min d) coefficient is C_j times a
  square; the loop ends on them too;
* when all finite entries are equal (one group: ties, a single entry, masks) y_j = 1/m and
  every VJP is rational: those rows are computed in exact rational arithmetic, so a value on
  a rounding boundary is rounded exactly.

Masked (-inf) entries have y_j = 0 exactly, so their softmax and logsumexp VJPs are exactly
0 and their log_softmax VJP is exactly g_j. Rows the forward policy makes NaN (a NaN or +inf
entry, or only -inf entries), and rows whose cotangent is not finite, have NaN VJPs.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import partial

import numpy as np
from mpmath.libmp import (
    fnan,
    from_float,
    from_int,
    from_man_exp,
    fzero,
    mpf_abs,
    mpf_add,
    mpf_div,
    mpf_mul,
    mpf_neg,
    mpf_sub,
    mpf_sum,
    round_ceiling,
    round_nearest,
)

from softmax_suite.formats import Format, format_of
from softmax_suite.ops import SOFTMAX_VJP_OPS
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.exact import Bound, ForwardRow, Reference, build_references, forward_row, near


def vjp_references(x: np.ndarray, g: np.ndarray, g_row: np.ndarray, axis: int,
                   fmt: Format | None = None) -> dict[str, Reference]:
    """Exact VJPs of the three ops: g (x's shape) for softmax and log_softmax, g_row (x's shape
    without axis) for logsumexp; rounded into fmt (x's own format unless given)."""
    if g.shape != x.shape:
        raise ValueError(f"cotangent shape {g.shape} differs from the input's {x.shape}")
    reduced = tuple(size for i, size in enumerate(x.shape) if i != axis % x.ndim)
    if g_row.shape != reduced:
        raise ValueError(f"logsumexp cotangent shape {g_row.shape}, expected {reduced}")
    return build_references(fmt or format_of(x.dtype), axis, [x, g, g_row], _evaluate_vjp_row,
                            SOFTMAX_VJP_OPS,
                            partial(fastpath.vjp_fast, zeros=_zero_softmax_vjp, terms=vjp_terms))


def _scaled(eps_multiple: int, precision: int, magnitude: tuple) -> tuple:
    """eps_multiple * 2^-precision * magnitude, rounded up."""
    return mpf_mul(from_man_exp(eps_multiple, -precision), magnitude, 32, round_ceiling)


def vjp_terms(x: np.ndarray, g: np.ndarray, g_row: np.ndarray, y: np.ndarray, gap: np.ndarray,
              row_terms: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The budget terms of the three VJPs for rows (the last axis) of x, with cotangents g and
    g_row (one per row), softmax values y, gaps |x_j - a| and the forward row terms; per-row
    values (sums, and logsumexp's |g|) have the rows' shape. Arrays the ops share are one
    object. The natural scales derive from them (softmax_suite.oracle.budget.natural_scale)."""
    finite = np.isfinite(x)
    g_abs = np.abs(g)
    with np.errstate(invalid="ignore"):
        weighted = g_abs * y
        sums = {"sum_abs_g_y": np.sum(weighted, axis=-1), "sum_abs_g": np.sum(g_abs, axis=-1)}
        # In place: a long row's VJP terms are the oracle's peak memory.
        if finite.all():
            weighted *= gap
        else:
            weighted *= np.where(finite, gap, 0.0)
            weighted[~finite] = 0.0
        sums["sum_abs_g_y_gap"] = np.sum(weighted, axis=-1)
    common = {"y": y, "gap": gap, **row_terms, **sums}
    return {op: {**common, "g_abs": g_abs if op != "logsumexp_vjp" else np.abs(g_row)}
            for op in SOFTMAX_VJP_OPS}


def _evaluate_vjp_row(rows: list[np.ndarray], precision: int) -> dict:
    row, g, g_scalar = rows[0], rows[1], float(rows[2])
    n = row.size
    forward = forward_row(row, precision)
    nan_row = forward.special or not (np.isfinite(g).all() and math.isfinite(g_scalar))
    finite = np.isfinite(row)
    y = np.full(n, math.nan) if nan_row else np.array(forward.probabilities)
    built = vjp_terms(row, g, np.float64(g_scalar), y, np.array(forward.gap_floats), forward.row_terms())
    terms = {op: {name: value.tolist() if np.ndim(value) else float(value) for name, value in named.items()}
             for op, named in built.items()}
    if nan_row:
        values = {op: [Bound(fnan, fzero)] * n for op in SOFTMAX_VJP_OPS}
    elif len(np.unique(row[finite])) == 1:
        values = _rational_row(row, g, g_scalar, precision)
    else:
        values = _transcendental_row(forward, row, g, g_scalar, precision)
    return {"values": values, "terms": terms}


def _zero_softmax_vjp(row: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Where sum_i (g_j - g_i) exp(x_i - a) is exactly 0: g_j equals the mean cotangent of every
    group of equal finite entries (Lindemann-Weierstrass; module docstring)."""
    none = np.zeros(row.size, dtype=bool)
    finite = np.isfinite(row)
    if not finite.any():
        return none
    entries, g_finite = (row, g) if finite.all() else (row[finite], g[finite])
    if np.all(g_finite == g_finite[0]):  # a constant cotangent: every group's mean is g_0
        return g == g_finite[0]
    # Float means first: groups whose means differ by more than their errors cannot share an exact
    # mean. A sum of m terms in any order errs by at most (m - 1) u sum |terms| (u = 2^-53), and
    # (m + 4) 2^-52 covers that, the division and the comparison's own roundings. The groups of
    # the largest and the smallest entry decide most rows without the sort below.
    means, errors = [], []
    for group in (entries == entries.max(), entries == entries.min()):
        members = g_finite[group]
        means.append(members.sum() / members.size)
        errors.append(np.abs(members).sum() * (members.size + 4) * 2.0**-52 / members.size)
    if abs(means[0] - means[1]) > errors[0] + errors[1]:
        return none
    _, inverse, counts = np.unique(entries, return_inverse=True, return_counts=True)
    # Only candidates go on to exact rational means.
    sums = np.bincount(inverse, weights=g_finite)
    slack = np.bincount(inverse, weights=np.abs(g_finite)) * (counts + 4) * 2.0**-52
    means, errors = sums / counts, slack / counts
    if np.ptp(means) > 2 * errors.max():
        return none
    order = np.argsort(inverse, kind="stable")
    mean = None
    for members in np.split(g_finite[order], np.cumsum(counts)[:-1]):
        exact = sum(map(Fraction, members.tolist()), Fraction(0)) / len(members)
        if mean is None:
            mean = exact
        elif exact != mean:
            return none
    # Only a float equal to the mean can be a zero: the mean must be a float itself.
    candidate = float(mean)
    return g == candidate if Fraction(candidate) == mean else none


def _transcendental_row(forward: ForwardRow, row: np.ndarray, g: np.ndarray, g_scalar: float,
                        precision: int) -> dict[str, list[Bound]]:
    """The VJPs with error bounds when the finite entries are not all equal (module docstring)."""
    ys = [bound.value for bound in forward.values["softmax"]]
    gs = [from_float(v) for v in g.tolist()]
    m = forward.tied
    tied = [d == fzero for d in forward.gaps]
    k = forward.argmax
    y0, deficit = ys[k], forward.deficit
    # C_i = m (g_i - w0), w0 the mean cotangent of the tied entries: exact (prec=0), and for
    # m = 1 the differences g_i - g_k, so that nothing is computed as 1 - y_k.
    tied_sum = mpf_sum([gi for gi, t in zip(gs, tied, strict=True) if t])
    count = from_int(m)
    scaled = [mpf_sub(mpf_mul(count, gi) if m > 1 else gi, tied_sum) for gi in gs]
    others = [i for i, t in enumerate(tied) if not t]
    spread = mpf_sum([mpf_mul(scaled[i], ys[i], precision, round_nearest) for i in others],
                     precision, round_nearest)
    weight = mpf_sum([mpf_mul(mpf_abs(scaled[i]), ys[i], precision, round_ceiling) for i in others],
                     precision, round_ceiling)
    total = mpf_sum(gs)  # exact: prec=0 rounds nothing
    zeros = _zero_softmax_vjp(row, g)
    g_row = from_float(g_scalar)

    softmax_vjp, log_softmax_vjp, logsumexp_vjp = [], [], []
    for j, (gj, yj) in enumerate(zip(gs, ys, strict=True)):
        if yj == fzero or zeros[j]:
            softmax_vjp.append(Bound(fzero, fzero))
        elif tied[j]:  # C_j / m^2 - (C_j deficit + y0 S) / m
            beyond = mpf_add(mpf_mul(scaled[j], deficit, precision, round_nearest),
                             mpf_mul(y0, spread, precision, round_nearest), precision, round_nearest)
            size = mpf_add(mpf_mul(mpf_abs(scaled[j]), deficit, 32, round_ceiling),
                           mpf_mul(y0, weight, 32, round_ceiling), 32, round_ceiling)
            softmax_vjp.append(near(_fraction(scaled[j]) / m**2,
                                    mpf_neg(mpf_div(beyond, count, precision, round_nearest)),
                                    _scaled(64, precision, mpf_div(size, count, 32, round_ceiling)),
                                    precision))
        else:  # y_j (C_j - S) / m
            difference = mpf_sub(scaled[j], spread, precision, round_nearest)
            value = mpf_mul(yj, difference, precision, round_nearest)
            size = mpf_mul(yj, mpf_add(mpf_abs(difference), weight, 32, round_ceiling), 32, round_ceiling)
            if m > 1:
                value, size = mpf_div(value, count, precision, round_nearest), mpf_div(size, count, 32,
                                                                                       round_ceiling)
            softmax_vjp.append(Bound(value, _scaled(64, precision, size)))
        if yj == fzero or total == fzero:
            log_softmax_vjp.append(Bound(gj, fzero))
        elif tied[j]:  # g_j - G/m + G deficit
            term = mpf_mul(total, deficit, precision, round_nearest)
            log_softmax_vjp.append(near(_fraction(gj) - _fraction(total) / m, term,
                                        _scaled(40, precision, mpf_abs(term)), precision))
        else:
            term = mpf_neg(mpf_mul(yj, total, precision, round_nearest))
            log_softmax_vjp.append(near(gj, term, _scaled(32, precision, mpf_abs(term)), precision))
        if tied[j] and g_row != fzero:  # g/m - g deficit
            term = mpf_neg(mpf_mul(g_row, deficit, precision, round_nearest))
            logsumexp_vjp.append(near(_fraction(g_row) / m, term, _scaled(40, precision, mpf_abs(term)),
                                      precision))
        else:
            value = mpf_mul(g_row, yj, precision, round_nearest)
            logsumexp_vjp.append(Bound(value, fzero if value == fzero
                                       else _scaled(32, precision, mpf_abs(value))))
    return {"softmax_vjp": softmax_vjp, "log_softmax_vjp": log_softmax_vjp,
            "logsumexp_vjp": logsumexp_vjp}


def _fraction(value: tuple) -> Fraction:
    """A finite mpf as an exact Fraction."""
    sign, man, exp, _ = value
    magnitude = Fraction(man << exp) if exp >= 0 else Fraction(man, 1 << -exp)
    return -magnitude if sign else magnitude


def _rational_row(row: np.ndarray, g: np.ndarray, g_scalar: float,
                  precision: int) -> dict[str, list[Bound]]:
    """The VJPs of a row whose m finite entries are equal (y_j = 1/m), in exact rationals."""
    finite = np.isfinite(row)
    m = int(finite.sum())
    inner = _exact_sum(g[finite]) / m
    total = _exact_sum(g)
    outputs: dict[str, list[tuple]] = {op: [] for op in SOFTMAX_VJP_OPS}
    # Entries with equal cotangents share their values: a uniform row of 2^20 under a constant
    # cotangent is three rationals, not three million.
    seen: dict[tuple[float, bool], tuple[Bound, Bound, Bound]] = {}
    for key in zip(g.tolist(), finite.tolist(), strict=True):
        if key not in seen:
            gj, f = Fraction(key[0]), key[1]
            yj = Fraction(1, m) if f else Fraction(0)
            seen[key] = (_rational(yj * (gj - inner), precision), _rational(gj - yj * total, precision),
                         _rational(Fraction(g_scalar) * yj, precision))
        for op, value in zip(SOFTMAX_VJP_OPS, seen[key], strict=True):
            outputs[op].append(value)
    return outputs


def _exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of finite floats, by distinct value (few in a narrow format's cotangent)."""
    distinct, counts = np.unique(values, return_counts=True)
    pairs = zip(distinct.tolist(), counts.tolist(), strict=True)
    return sum((Fraction(v) * c for v, c in pairs), Fraction(0))


def _rational(value: Fraction, precision: int) -> Bound:
    """An exact rational as a Bound: exact when its denominator is a power of two."""
    return near(value, fzero, fzero, precision)
