"""numpy: the hand-written shifted formulas, with the log1p form for logsumexp and log_softmax,
and the analytic VJPs y (g - <g, y>), g - y sum(g) and g y.

float16 and bfloat16 are computed in float32 and rounded once at the end, as the serious
libraries do: ml_dtypes sums bfloat16 recursively in bfloat16, which stalls at 256.

Attention's forms (scale, mask) are composed as a numpy user writes them, on the widened rows:
np.where(mask, x * scale, -inf), and the VJPs times scale with 0 where masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softmax_suite.protocol import ATTENTION_OPTIONS, Backend


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


def log_softmax(x: np.ndarray, axis: int, scale: float | None = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        a, d, t = _shifted(_rows(x, axis, scale, mask))
        # inf - inf at a +inf entry is NaN, and the policy makes the whole row NaN.
        z = np.where(np.isposinf(a), np.nan, d - np.log1p(t))
    return np.moveaxis(z, -1, axis).astype(x.dtype)


def logsumexp(x: np.ndarray, axis: int, scale: float | None = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        a, _, t = _shifted(_rows(x, axis, scale, mask))
        # A row with +inf, or only -inf (or nothing), has a = +-inf: logsumexp is a itself.
        lse = np.where(np.isinf(a), a, a + np.log1p(t))
    return lse[..., 0].astype(x.dtype)


def load(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """These ops, or the user's functions f(x, axis) on numpy arrays (functions: numpy has no automatic
    differentiation, so VJPs only as the user gives them)."""
    own = functions is None
    return Backend(
        name="numpy",
        version=np.__version__,
        ops={"softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp,
             "softmax_vjp": softmax_vjp, "log_softmax_vjp": log_softmax_vjp,
             "logsumexp_vjp": logsumexp_vjp} if own else dict(functions),
        to_device=lambda x, device: x,
        to_numpy=np.asarray,
        copy=np.copy,
        # numpy's ufuncs and reductions run on one thread; a user's function may call more.
        describe=lambda device: {"threads": 1} if own else {},
        options=ATTENTION_OPTIONS if own else (),
    )
