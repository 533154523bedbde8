"""The loss ops' references (cross_entropy, cross_entropy_vjp): exact values from
softmax_suite.oracle.cross_entropy, and the terms their budgets are made of (oracle.budget).

Both budgets reduce to log_softmax's. With the smoothed, weighted target h_c = (1 - e) w_t [c = t]
+ e w_c / C of a kept row, its loss is sum_c h_c (-z_c), z = log_softmax(x), and its gradient, for a
loss cotangent F (over the kept rows' weight for "mean"), is log_softmax's VJP at the cotangent
-F h: -F h_c + p_c F sum h. So:

* the loss of a row errs by at most sum_c h_c (log_softmax's bound at c) plus the sum over c's
  rounding, c_sum ceil(log2 C) u loss, where e > 0 (terms "k_c0", "k_exp", "k_sum", "k_one": the
  multipliers of c0, c_exp, c_sum and 1, in units of u; "k_sub" and "k_tail", of the smallest
  subnormal and of the subnormal tail: docs/cross-entropy.md derives them); "sum" adds the sum
  over rows, c_sum ceil(log2 N) u total, and "mean" the division, c0 u mean;
* the gradient is judged by log_softmax_vjp's budget at that cotangent (its terms), plus the
  rounding of the factor F.

Where -F h is exact in float64 (no smoothing, and F w_t exact: every "none" and "sum", and "mean"
over a power-of-two weight), the gradient's exact values are log_softmax_vjp's, which the fast
path decides; elsewhere cross_entropy's own loop decides them. Either way the terms are
log_softmax_vjp's at -F h rounded to float64 (a bound needs no more).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.oracle import cross_entropy as exact
from softmax_suite.oracle.budget import summation_depth
from softmax_suite.oracle.exact import Reference, forward_references
from softmax_suite.oracle.gradients import vjp_references
from softmax_suite.oracle.rounding import split_mpf

DEFAULT_IGNORE_INDEX = -100


def references(vjp: bool, x: np.ndarray, axis: int, cotangent: np.ndarray | None, target: np.ndarray,
               reduction: str, ignore_index: int | None = None, label_smoothing: float | None = None,
               weight: np.ndarray | None = None) -> dict[str, Reference]:
    """{"cross_entropy": ...} of logits x (N, C: classes along the last axis), or with the loss's
    cotangent (one per row for reduction "none", a scalar otherwise) {"cross_entropy_vjp": ...}."""
    if x.ndim != 2 or axis % 2 != 1:
        raise ValueError(f"logits of shape {x.shape} reduced along axis {axis}: a loss takes (N, C), one "
                         "row of C class logits per sample, classes along the last axis")
    options = {"reduction": reduction, "label_smoothing": float(label_smoothing or 0.0),
               "ignore_index": DEFAULT_IGNORE_INDEX if ignore_index is None else int(ignore_index),
               "weight": None if weight is None else np.asarray(weight, dtype=np.float64)}
    target = np.asarray(target).astype(np.int64)
    if vjp:
        return {"cross_entropy_vjp": _gradient(x, target, np.asarray(cotangent, dtype=np.float64), options)}
    return {"cross_entropy": _loss(x, target, options)}


def smoothed_targets(x: np.ndarray, target: np.ndarray, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """(h, kept): h_c per row (0 on ignored rows: module docstring), and which rows are kept."""
    rows, classes = x.shape
    w = np.ones(classes) if options["weight"] is None else options["weight"]
    e = options["label_smoothing"]
    kept = target != options["ignore_index"]
    h = np.zeros((rows, classes))
    h[kept] = e * w / classes
    chosen = np.flatnonzero(kept)
    h[chosen, target[chosen]] += (1 - e) * w[target[chosen]]
    return h, kept


def _loss(x: np.ndarray, target: np.ndarray, options: dict) -> Reference:
    fmt = format_of(x.dtype)
    decided, precision = exact.exact_cross_entropy(x, target, **options)
    parts = np.array([split_mpf(value, precision) for value, _ in decided], dtype=np.float64)
    rounded = np.array([found for _, found in decided], dtype=np.float64)
    shape = (x.shape[0],) if options["reduction"] == "none" else ()
    terms = _loss_terms(x, target, options)
    return Reference(
        op="cross_entropy", dtype=fmt.name, rounded=rounded.astype(fmt.np_dtype).reshape(shape),
        mant=parts[:, 0].reshape(shape), mant_lo=parts[:, 1].reshape(shape),
        scale=parts[:, 2].astype(np.int64).reshape(shape),
        terms={name: np.asarray(value, dtype=np.float64).reshape(shape) for name, value in terms.items()},
        row_length=x.shape[1], max_precision=precision, certificate={"mpmath": int(rounded.size)})


def _loss_terms(x: np.ndarray, target: np.ndarray, options: dict) -> dict[str, np.ndarray]:
    """The budget's multipliers per output (module docstring): per row, then over the rows kept."""
    forward = forward_references(x, -1)["log_softmax"]
    h, kept = smoothed_targets(x, target, options)
    classes = x.shape[1]
    row = {name: np.asarray(forward.terms[name])[:, 0] for name in
           ("tail", "log_tail", "weighted_gap", "n_subnormal", "subnormal_tail")}
    weight = h.sum(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        counted = h > 0  # a -inf class of no weight costs nothing
        gap = np.where(counted, forward.terms["gap"], 0.0)
        z = np.ldexp(forward.mant + forward.mant_lo, forward.scale)
        losses = np.sum(np.where(counted, -h * z, 0.0), axis=1)
        smoothing = options["label_smoothing"] > 0
        depth = summation_depth(classes)
        terms = {
            "k_c0": weight * row["tail"] + losses,
            "k_exp": np.sum(h * gap, axis=1) + weight * row["weighted_gap"],
            "k_sum": depth * (weight * row["tail"] + (losses if smoothing else 0.0)),
            "k_one": weight * row["log_tail"] + losses,
            "k_sub": weight * row["n_subnormal"],
            "k_tail": weight * row["subnormal_tail"],
        }
    terms = {name: np.where(kept, value, 0.0) for name, value in terms.items()}
    if options["reduction"] == "none":
        return terms
    total = float(np.sum(losses[kept]))
    reduced = {name: float(np.sum(value)) for name, value in terms.items()}
    reduced["k_sum"] += summation_depth(int(kept.sum())) * total
    if options["reduction"] == "mean":
        denominator = float(kept_weight(target, kept, options))
        with np.errstate(divide="ignore", invalid="ignore"):
            reduced = {name: np.float64(value) / denominator for name, value in reduced.items()}
            reduced["k_c0"] += np.float64(total) / denominator
    return reduced


def kept_weight(target: np.ndarray, kept: np.ndarray, options: dict) -> Fraction:
    """The weight a mean divides by, exactly: sum over kept rows of w_t (their count without weights)."""
    w = options["weight"]
    return sum((Fraction(float(w[t])) for t in target[kept]), Fraction(0)) if w is not None \
        else Fraction(int(kept.sum()))


def _gradient(x: np.ndarray, target: np.ndarray, cotangent: np.ndarray, options: dict) -> Reference:
    h, kept = smoothed_targets(x, target, options)
    factor, exact_factor = _factors(target, cotangent, kept, options)
    g = np.where(kept[:, None], -h * factor[:, None], 0.0)
    found = vjp_references(x, g, np.zeros(x.shape[0]), -1)["log_softmax_vjp"]
    if exact_factor and options["label_smoothing"] == 0:
        rounded, mant, mant_lo, scale = found.rounded, found.mant, found.mant_lo, found.scale
        certificate, precision = dict(found.certificate), found.max_precision
    else:
        reduced = cotangent if options["reduction"] == "none" else float(cotangent)
        rows, precision = exact.exact_cross_entropy_vjp(x, target, reduced, **options)
        flat = [item for row in rows for item in row]
        parts = np.array([split_mpf(value, precision) for value, _ in flat], dtype=np.float64)
        rounded = np.array([found for _, found in flat], dtype=np.float64).reshape(x.shape).astype(x.dtype)
        mant, mant_lo = parts[:, 0].reshape(x.shape), parts[:, 1].reshape(x.shape)
        scale = parts[:, 2].astype(found.scale.dtype).reshape(x.shape)
        certificate = {"mpmath": int(x.size)}
    # An ignored row's gradient is 0 whatever it holds (NaN included): exact, with nothing to spend.
    dropped = ~kept[:, None]
    terms = {name: np.where(dropped, 0.0, value) for name, value in found.terms.items()}
    return Reference(op="cross_entropy_vjp", dtype=found.dtype,
                     rounded=np.where(dropped, x.dtype.type(0), rounded),
                     mant=np.where(dropped, 0.0, mant), mant_lo=np.where(dropped, 0.0, mant_lo),
                     scale=np.where(dropped, 0, scale), terms=terms, row_length=x.shape[1],
                     max_precision=precision, certificate=certificate)


def _factors(target: np.ndarray, cotangent: np.ndarray, kept: np.ndarray,
             options: dict) -> tuple[np.ndarray, bool]:
    """F per row (the cotangent, over the kept rows' weight for "mean") in float64, and whether
    every F w_t is exact there (then, without smoothing, -F h is exact: module docstring)."""
    rows = target.size
    if options["reduction"] == "none":
        exact_factors = [Fraction(float(g)) for g in cotangent]
    else:
        g = Fraction(float(cotangent))
        if options["reduction"] == "mean":
            denominator = kept_weight(target, kept, options)
            if not denominator:  # 0/0: the mean is NaN, and so is the gradient of a kept row
                return np.full(rows, np.nan), False
            g /= denominator
        exact_factors = [g] * rows
    w = options["weight"]
    products = [f * (Fraction(float(w[t])) if w is not None and k else 1)
                for f, t, k in zip(exact_factors, target, kept, strict=True)]
    exact_factor = all(Fraction(float(p)) == p for p in products)
    return np.array([float(f) for f in exact_factors]), exact_factor
