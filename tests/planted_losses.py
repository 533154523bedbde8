"""Cross-entropy backends for the loss hunt's self-tests (tests/test_loss_hunt.py): a correct one and
planted bugs, as `--backend tests.planted_losses:Name` (numpy arrays).

Float64Loss is the reference composition a numpy user writes: every quantity in float64, one
rounding into the input's dtype at the end. Its losses are log1p(sum_{c != t} e^(x_c - x_t)) where
the target leads its row (a confident row's loss ~1e-30 keeps its relative accuracy) and
lse(x) - x_t elsewhere (at least ln 2: nothing cancels), and its gradient forms 1 - p_t as
S / (1 + S) where the target leads, with torch's semantics for ignore_index, label_smoothing and
weight and the special values of docs/cross-entropy.md (a NaN or +inf logit, or a row of only
-inf: NaN; a -inf target: loss +inf; a mean over no weight: NaN). For float32 and 16-bit inputs its
float64 errors are far below an ULP: it must pass every budget.

MeanWithoutOneOverN is Float64Loss but for its VJP of reduction "mean", which forgets the mean's
1/N (the sum of the kept rows' weights): its gradient is N times too large, and right for every
other reduction and for a mean over one row of weight 1.
"""

from __future__ import annotations

import numpy as np

from softmax_suite.protocol import LOSS_OPTIONS

DEFAULT_IGNORE_INDEX = -100


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    """The logits in float64, classes along the last axis."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(x), axis, -1), dtype=np.float64)


class _Parts:
    """What the loss and its gradient are made of, row by row (float64): h (the smoothed, weighted
    target), the kept rows, the probabilities p, -log p per class, and 1 - p_t per row."""

    def __init__(self, x: np.ndarray, axis: int, target: np.ndarray, ignore_index: int,
                 label_smoothing: float, weight: np.ndarray | None) -> None:
        rows = _rows(x, axis)
        n, classes = rows.shape
        target = np.asarray(target, dtype=np.int64)
        w = np.ones(classes) if weight is None else np.asarray(weight, dtype=np.float64)
        e = float(label_smoothing)
        self.kept = target != ignore_index
        picked = np.where(self.kept, target, 0)
        self.w_t = np.where(self.kept, w[picked], 0.0)
        h = np.zeros((n, classes))
        if e > 0:
            h[self.kept] = e * w / classes
        h[np.flatnonzero(self.kept), picked[self.kept]] += (1 - e) * w[picked[self.kept]]
        self.h, self.w, self.e, self.classes, self.picked = h, w, e, classes, picked
        with np.errstate(all="ignore"):
            bad = np.isnan(rows).any(axis=1) | np.isposinf(rows).any(axis=1) | np.isneginf(rows).all(axis=1)
            top = np.max(np.where(np.isnan(rows), -np.inf, rows), axis=1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            d = rows - top
            ex = np.exp(d)
            total = np.sum(ex, axis=1, keepdims=True)
            lse = np.log(total)
            self.p = ex / total
            # -log p_c: lse - d_c, and for a class that leads its row (d_c = 0) log1p of the others.
            others = total - 1.0  # exact where one entry is the max (e^0 = 1); ties make it >= 1
            leading = d == 0
            rest = np.where(leading, np.sum(np.where(leading, 0.0, ex), axis=1, keepdims=True)
                            + (np.sum(leading, axis=1, keepdims=True) - 1), others)
            self.nll = np.where(leading, np.log1p(rest), lse - d)
            # 1 - p_t: S / (1 + S) where the target leads (S its rest), else 1 - p_t.
            t_leads = leading[np.arange(n), picked]
            rest_t = rest[np.arange(n), picked]
            self.one_minus = np.where(t_leads, rest_t / (1.0 + rest_t), 1.0 - self.p[np.arange(n), picked])
        self.bad = bad
        # A -inf target: a class of probability 0, loss +inf whatever its weight (the policy).
        self.impossible = self.kept & ~bad & np.isneginf(rows[np.arange(n), picked])

    def losses(self) -> np.ndarray:
        """The loss of each row (0 for an ignored row)."""
        n = self.h.shape[0]
        with np.errstate(all="ignore"):
            main = self.w_t * self.nll[np.arange(n), self.picked]
            loss = (1 - self.e) * main
            if self.e > 0:
                counted = self.w > 0  # a class of no weight costs nothing, even at -inf (0 * inf)
                smooth = np.sum(np.where(counted, self.w * self.nll, 0.0), axis=1)
                loss = loss + self.e / self.classes * smooth
            loss = np.where(self.bad, np.nan, np.where(self.impossible, np.inf, loss))
        return np.where(self.kept, loss, 0.0)

    def gradient(self, factor: np.ndarray) -> np.ndarray:
        """factor (per row) times d loss / d x: (sum h) p - h, the target's entry formed from 1 - p_t."""
        n = self.h.shape[0]
        with np.errstate(all="ignore"):
            weight = np.sum(self.h, axis=1, keepdims=True)
            dx = weight * self.p - self.h
            t = self.picked
            # (sum h) p_t - h_t = (1 - e) w_t (p_t - 1) + e / C (W p_t - w_t), with W p_t - w_t
            # = (W - w_t) p_t - w_t (1 - p_t).
            w_all = np.sum(self.w)
            smooth = self.e / self.classes * ((w_all - self.w_t) * self.p[np.arange(n), t]
                                              - self.w_t * self.one_minus)
            dx[np.arange(n), t] = -(1 - self.e) * self.w_t * self.one_minus + smooth
            dx = factor[:, None] * dx
            dx = np.where(self.bad[:, None], np.nan, dx)
        return np.where(self.kept[:, None], dx, 0.0)


def _reduced(losses: np.ndarray, parts: _Parts, reduction: str) -> np.ndarray:
    if reduction == "none":
        return losses
    total = np.sum(losses[parts.kept])
    if reduction == "sum":
        return np.asarray(total)
    weight = np.sum(parts.w_t[parts.kept])
    if np.isnan(total) or np.isinf(total):
        return np.asarray(total)  # NaN, or +inf (a -inf target), whatever the weight
    with np.errstate(all="ignore"):
        return np.asarray(total / weight if weight else np.nan)


def _factor(g: np.ndarray, parts: _Parts, reduction: str, mean_divides: bool = True) -> np.ndarray:
    rows = parts.kept.size
    if reduction == "none":
        return np.asarray(g, dtype=np.float64).reshape(rows)
    factor = float(np.asarray(g, dtype=np.float64).reshape(-1)[0])
    if reduction == "mean" and mean_divides:
        weight = np.sum(parts.w_t[parts.kept])
        factor = factor / weight if weight else np.nan
    return np.full(rows, factor)


class Float64Loss:
    """Correct: cross_entropy and its VJP in float64, rounded once into the input's dtype."""

    options = LOSS_OPTIONS
    mean_divides = True

    def cross_entropy(self, x: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                      ignore_index: int = DEFAULT_IGNORE_INDEX, label_smoothing: float = 0.0,
                      weight: np.ndarray | None = None) -> np.ndarray:
        parts = _Parts(x, axis, target, ignore_index, label_smoothing, weight)
        return _reduced(parts.losses(), parts, reduction).astype(x.dtype)

    def cross_entropy_vjp(self, x: np.ndarray, g: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                          ignore_index: int = DEFAULT_IGNORE_INDEX, label_smoothing: float = 0.0,
                          weight: np.ndarray | None = None) -> np.ndarray:
        parts = _Parts(x, axis, target, ignore_index, label_smoothing, weight)
        dx = parts.gradient(_factor(g, parts, reduction, self.mean_divides))
        return np.moveaxis(dx, -1, axis).astype(x.dtype)


class MeanWithoutOneOverN(Float64Loss):
    """Wrong: the VJP of a mean is the VJP of the sum (no 1/N)."""

    mean_divides = False
