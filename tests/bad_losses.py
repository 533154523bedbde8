"""Deliberately wrong cross-entropies, and one correct one, as backends of numpy arrays (`backend(name)`).

Each computes in float64 and rounds once into the input's dtype; the wrong ones differ from the
correct Float64Loss by one planted bug each, the bugs real code has shipped.
"""

from __future__ import annotations

import numpy as np

from softmax_suite.protocol import LOSS_OPTIONS, Backend
from tests.bad_softmax import Float64Upcast


class Float64Loss:
    """Correct: log_softmax in float64 by the shifted log1p formula, the smoothed, weighted target h,
    torch's reductions and special values, one rounding at the end."""

    def log_softmax64(self, x: np.ndarray) -> np.ndarray:
        _, regular, _, d, _, t, _ = Float64Upcast()._parts(x, -1)
        with np.errstate(all="ignore"):
            return np.where(regular, d - np.log1p(t), np.nan)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.exp(self.log_softmax64(x))

    def smoothed(self, x: np.ndarray, target: np.ndarray, ignore_index: int, label_smoothing: float,
                 weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(h, kept, w): the smoothed weighted target of each row, which rows count, the class weights."""
        rows, classes = x.shape
        w = np.ones(classes) if weight is None else np.asarray(weight, dtype=np.float64)
        kept = target != ignore_index
        h = np.zeros((rows, classes))
        h[kept] = label_smoothing * w / classes
        chosen = np.flatnonzero(kept)
        h[chosen, target[chosen]] += (1 - label_smoothing) * w[target[chosen]]
        return h, kept, w

    def denominator(self, target: np.ndarray, kept: np.ndarray, w: np.ndarray) -> float:
        return float(np.sum(w[target[kept]]))

    def row_losses(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        z = self.log_softmax64(x)
        with np.errstate(all="ignore"):
            return np.sum(np.where(h > 0, -h * z, 0.0), axis=1)

    def cross_entropy(self, x: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                      ignore_index: int = -100, label_smoothing: float = 0.0,
                      weight: np.ndarray | None = None) -> np.ndarray:
        h, kept, w = self.smoothed(x, target, ignore_index, label_smoothing, weight)
        losses = np.where(kept, self.row_losses(x, h), 0.0)
        with np.errstate(all="ignore"):
            if reduction == "none":
                return losses.astype(x.dtype)
            total = np.sum(losses[kept])
            if reduction == "sum":
                return np.asarray(total).astype(x.dtype)
            return np.asarray(total / self.denominator(target, kept, w)).astype(x.dtype)

    def factors(self, g: np.ndarray, target: np.ndarray, kept: np.ndarray, w: np.ndarray,
                reduction: str) -> np.ndarray:
        g = np.asarray(g, dtype=np.float64)
        if reduction == "none":
            return g
        with np.errstate(all="ignore"):
            scalar = g / self.denominator(target, kept, w) if reduction == "mean" else g
        return np.full(target.shape, float(scalar))

    def cross_entropy_vjp(self, x: np.ndarray, g: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                          ignore_index: int = -100, label_smoothing: float = 0.0,
                          weight: np.ndarray | None = None) -> np.ndarray:
        h, kept, w = self.smoothed(x, target, ignore_index, label_smoothing, weight)
        factor = self.factors(g, target, kept, w, reduction)
        y = self.probabilities(x)
        with np.errstate(all="ignore"):
            grad = factor[:, None] * (h.sum(axis=1, keepdims=True) * y - h)
        return np.where(kept[:, None], grad, 0.0).astype(x.dtype)


class NegLogOfSoftmax(Float64Loss):
    """-log(softmax[t]), with softmax rounded into the dtype first (as a model's probabilities are):
    a confident correct prediction's p_t rounds to 1 and its loss to 0."""

    def log_softmax64(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            y = np.exp(super().log_softmax64(x)).astype(x.dtype).astype(np.float64)
            return np.log(y)


class SmoothingOverOthers(Float64Loss):
    """Label smoothing spread over the C - 1 other classes (e / (C - 1) each), torch's is over all C."""

    def smoothed(self, x, target, ignore_index, label_smoothing, weight):
        h, kept, w = super().smoothed(x, target, ignore_index, 0.0, weight)
        rows, classes = x.shape
        chosen = np.flatnonzero(kept)
        spread = np.zeros((rows, classes))
        spread[kept] = label_smoothing * w / (classes - 1)
        spread[chosen, target[chosen]] = 0.0
        return (1 - label_smoothing) * h + spread, kept, w


class MeanCountsIgnored(Float64Loss):
    """A mean over every row, the ignored ones included."""

    def denominator(self, target, kept, w):
        return float(target.size)


class VjpWithoutMean(Float64Loss):
    """The mean's gradient without its 1/N: the sum's."""

    def factors(self, g, target, kept, w, reduction):
        return super().factors(g, target, kept, w, "sum" if reduction == "mean" else reduction)


def backend(name: str) -> Backend:
    """The class of this module by name as a backend of numpy arrays, with log_softmax (for the
    invariants) and every loss option."""
    implementation = globals()[name]()
    return Backend(
        name=f"tests.bad_losses:{name}", version="test",
        ops={"log_softmax": Float64Upcast().log_softmax, "cross_entropy": implementation.cross_entropy,
             "cross_entropy_vjp": implementation.cross_entropy_vjp},
        to_device=lambda x, device: x, to_numpy=np.asarray, options=LOSS_OPTIONS)
