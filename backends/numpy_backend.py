"""numpy: the hand-written shifted formulas, with the log1p form for logsumexp and log_softmax,
and the analytic VJPs y (g - <g, y>), g - y sum(g) and g y.

float16 and bfloat16 are computed in float32 and rounded once at the end, as the serious
libraries do: ml_dtypes sums bfloat16 recursively in bfloat16, which stalls at 256. So are the
float8 formats (float8_e4m3fn, float8_e5m2): ml_dtypes' float32 -> float8 cast rounds once, to
nearest even, overflowing to NaN in float8_e4m3fn (its float64 -> float8 cast goes through float32
and rounds twice, which is why the results are float32 when they are cast; tests/test_float8.py).

Attention's forms (scale, mask) are composed as a numpy user writes them, on the widened rows:
np.where(mask, x * scale, -inf), and the VJPs times scale with 0 where masked.

numpy has no cross-entropy of its own: cross_entropy is the suite's composition as a numpy user writes
it, with every option of torch's (ignore_index, label_smoothing, weight): the smoothed, weighted target
h_c = (1 - e) w_t [c = t] + e w_c / C of each kept row against this adapter's log_softmax z, the row's
loss sum_c h_c (-z_c) (a class of no weight costs nothing, even at z = -inf), 0 on an ignored row,
then the sum or the mean over the kept rows' weight w_t. Its VJP is the formula F (p sum_c h_c - h),
p the softmax and F the cotangent (over the kept weight for "mean"), 0 on ignored rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softmax_suite.protocol import ATTENTION_OPTIONS, DTYPES, LOSS_OPTIONS, STANDARD_DTYPES, Backend

# torch's default ignore_index: no target of a case that sets none holds it.
DEFAULT_IGNORE_INDEX = -100


def _rows(x: np.ndarray, axis: int, scale: float | None = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    """x with the reduction axis last and contiguous (so that numpy sums pairwise), widened, times
    scale, -inf where mask is False."""
    wide = np.float32 if x.dtype.itemsize < 4 else x.dtype
    rows = np.ascontiguousarray(np.moveaxis(x, axis, -1), dtype=wide)
    if (scale is not None or mask is not None) and np.shares_memory(rows, x):
        rows = rows.copy()  # x is the suite's read-only input
    if scale is not None:
        rows *= rows.dtype.type(scale)
    if mask is not None:
        rows[~np.moveaxis(np.broadcast_to(mask, x.shape), axis, -1)] = -np.inf
    return rows


def _gradient(dx: np.ndarray, x: np.ndarray, axis: int, scale: float | None,
              mask: np.ndarray | None) -> np.ndarray:
    """A VJP of the rows back in x's layout and dtype: times scale (the chain rule), 0 where masked."""
    if scale is not None:
        dx = dx * dx.dtype.type(scale)
    if mask is not None:
        dx = np.where(np.moveaxis(np.broadcast_to(mask, x.shape), axis, -1), dx, 0)
    return np.moveaxis(dx, -1, axis).astype(x.dtype)


def _cotangent(g: np.ndarray, axis: int, mask: np.ndarray | None) -> np.ndarray:
    """g's rows, 0 where masked: a masked output is a constant, its cotangent reaches nothing."""
    rows = _rows(g, axis)
    if mask is not None:
        rows = rows.copy() if np.shares_memory(rows, g) else rows
        rows[~np.moveaxis(np.broadcast_to(mask, g.shape), axis, -1)] = 0
    return rows


def _shifted(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, d, t): row max (-inf for an empty row), d = x - a, and t = the sum of exp(d) over
    every entry but one argmax, so that the row sum is 1 + t."""
    a = np.max(rows, axis=-1, keepdims=True, initial=-np.inf)
    d = rows - a
    e = np.exp(d)
    if rows.shape[-1]:
        np.put_along_axis(e, np.argmax(rows, axis=-1, keepdims=True), 0.0, axis=-1)
    return a, d, np.sum(e, axis=-1, keepdims=True)


def _softmax_rows(rows: np.ndarray) -> np.ndarray:
    e = np.exp(rows - np.max(rows, axis=-1, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=-1, keepdims=True)


def softmax(x: np.ndarray, axis: int, scale: float | None = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        y = _softmax_rows(_rows(x, axis, scale, mask))
    return np.moveaxis(y, -1, axis).astype(x.dtype)


def softmax_vjp(x: np.ndarray, g: np.ndarray, axis: int, scale: float | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        y, gr = _softmax_rows(_rows(x, axis, scale, mask)), _cotangent(g, axis, mask)
        dx = y * (gr - np.sum(gr * y, axis=-1, keepdims=True))
        return _gradient(dx, x, axis, scale, mask)


def log_softmax_vjp(x: np.ndarray, g: np.ndarray, axis: int, scale: float | None = None,
                    mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        y, gr = _softmax_rows(_rows(x, axis, scale, mask)), _cotangent(g, axis, mask)
        dx = gr - y * np.sum(gr, axis=-1, keepdims=True)
        return _gradient(dx, x, axis, scale, mask)


def logsumexp_vjp(x: np.ndarray, g: np.ndarray, axis: int, scale: float | None = None,
                  mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        rows = _rows(x, axis, scale, mask)
        dx = _softmax_rows(rows) * np.asarray(g, dtype=rows.dtype)[..., None]
        return _gradient(dx, x, axis, scale, mask)


def _log_softmax_rows(rows: np.ndarray) -> np.ndarray:
    a, d, t = _shifted(rows)
    # inf - inf at a +inf entry is NaN, and the policy makes the whole row NaN.
    return np.where(np.isposinf(a), np.nan, d - np.log1p(t))


def log_softmax(x: np.ndarray, axis: int, scale: float | None = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        z = _log_softmax_rows(_rows(x, axis, scale, mask))
    return np.moveaxis(z, -1, axis).astype(x.dtype)


def logsumexp(x: np.ndarray, axis: int, scale: float | None = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        a, _, t = _shifted(_rows(x, axis, scale, mask))
        # A row with +inf, or only -inf (or nothing), has a = +-inf: logsumexp is a itself.
        lse = np.where(np.isinf(a), a, a + np.log1p(t))
    return lse[..., 0].astype(x.dtype)


def _smoothed(rows: np.ndarray, target: np.ndarray, ignore_index: int, label_smoothing: float,
              weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h, kept, w_t): the smoothed, weighted targets of the (N, C) rows (0 on an ignored row), which
    rows are kept, and each kept row's target weight (0 on an ignored row), in the rows' dtype."""
    count, classes = rows.shape
    w = np.ones(classes, rows.dtype) if weight is None else np.asarray(weight).astype(rows.dtype)
    target = np.asarray(target)
    kept = target != ignore_index
    chosen = np.where(kept, target, 0)  # an ignored row's index may lie outside the classes
    e = rows.dtype.type(label_smoothing)
    h = np.where(kept[:, None], e * w / rows.dtype.type(classes), rows.dtype.type(0))
    picked = np.where(kept, w[chosen], rows.dtype.type(0))
    h[np.arange(count), chosen] += (1 - e) * picked
    return h, kept, picked


def _loss_rows(x: np.ndarray, axis: int, target: np.ndarray, ignore_index: int, label_smoothing: float,
               weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, h, kept, w_t) of the logits x, the rows widened with the classes last."""
    rows = _rows(x, axis)
    if rows.ndim != 2:
        raise ValueError(f"cross_entropy takes logits (N, C), not of shape {x.shape}")
    return (rows, *_smoothed(rows, target, ignore_index, label_smoothing, weight))


def cross_entropy(x: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                  ignore_index: int = DEFAULT_IGNORE_INDEX, label_smoothing: float = 0.0,
                  weight: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        rows, h, kept, picked = _loss_rows(x, axis, target, ignore_index, label_smoothing, weight)
        z = _log_softmax_rows(rows)
        # A class of no weight costs nothing, even where its log-probability is -inf (0 * inf).
        loss = np.sum(np.where(h > 0, -h * z, rows.dtype.type(0)), axis=-1)
        loss = np.where(kept, loss, rows.dtype.type(0))
        if reduction == "sum":
            loss = np.sum(loss)
        elif reduction == "mean":
            # torch's mean: over the kept rows' target weights (0/0 = NaN when nothing is kept).
            loss = np.sum(loss) / np.sum(picked)
        elif reduction != "none":
            raise ValueError(f"reduction {reduction!r}: use none, mean or sum")
    return np.asarray(loss).astype(x.dtype)


def cross_entropy_vjp(x: np.ndarray, g: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                      ignore_index: int = DEFAULT_IGNORE_INDEX, label_smoothing: float = 0.0,
                      weight: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        rows, h, kept, picked = _loss_rows(x, axis, target, ignore_index, label_smoothing, weight)
        factor = np.asarray(g, dtype=rows.dtype)
        if reduction == "mean":
            factor = factor / np.sum(picked)
        elif reduction not in ("none", "sum"):
            raise ValueError(f"reduction {reduction!r}: use none, mean or sum")
        factor = np.broadcast_to(factor, kept.shape)[:, None]
        dx = factor * (_softmax_rows(rows) * np.sum(h, axis=-1, keepdims=True) - h)
        # An ignored row is a constant 0: its gradient is 0, whatever the factor (0/0 when none is kept).
        dx = np.where(kept[:, None], dx, rows.dtype.type(0))
        return np.moveaxis(dx, -1, axis).astype(x.dtype)


def load(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """These ops, or the user's functions f(x, axis) on numpy arrays (functions: numpy has no automatic
    differentiation, so VJPs only as the user gives them)."""
    own = functions is None
    return Backend(
        name="numpy",
        version=np.__version__,
        ops={"softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp,
             "softmax_vjp": softmax_vjp, "log_softmax_vjp": log_softmax_vjp,
             "logsumexp_vjp": logsumexp_vjp, "cross_entropy": cross_entropy,
             "cross_entropy_vjp": cross_entropy_vjp} if own else dict(functions),
        to_device=lambda x, device: x,
        to_numpy=np.asarray,
        copy=np.copy,
        # numpy's ufuncs and reductions run on one thread; a user's function may call more.
        describe=lambda device: {"threads": 1} if own else {},
        options=(*ATTENTION_OPTIONS, *LOSS_OPTIONS) if own else (),
        # Its own ops compute the float8 formats in float32 too; a user's functions declare theirs.
        dtypes=DTYPES if own else STANDARD_DTYPES,
    )
