"""The `example` backend: numpy softmax, log_softmax and logsumexp in float32 working precision,
max-shifted in two passes; float16 and bfloat16 widened, no float64 and no VJPs (unsupported)."""

from __future__ import annotations

from importlib import metadata

import numpy as np

from softmax_suite import Backend


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    # Contiguous rows: numpy sums pairwise only along a contiguous axis.
    return np.ascontiguousarray(np.moveaxis(x, axis, -1), dtype=np.float32)


def _two_pass(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, d, t): pass 1, the row max m (-inf for an empty row); pass 2, d = x - m and t = the sum
    of exp(d) without one argmax entry, so that the row sum is 1 + t and log1p(t) keeps t."""
    m = np.max(rows, axis=-1, keepdims=True, initial=-np.inf)
    d = rows - m
    e = np.exp(d)
    if rows.shape[-1]:
        np.put_along_axis(e, np.argmax(rows, axis=-1, keepdims=True), 0.0, axis=-1)
    return m, d, np.sum(e, axis=-1, keepdims=True)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    rows = _rows(x, axis)
    with np.errstate(all="ignore"):
        e = np.exp(rows - np.max(rows, axis=-1, keepdims=True, initial=-np.inf))
        y = e / np.sum(e, axis=-1, keepdims=True)
    return np.moveaxis(y, -1, axis).astype(x.dtype)


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        m, d, t = _two_pass(_rows(x, axis))
        # Only the +inf entry's d is NaN (inf - inf); the suite's policy makes the whole row NaN.
        z = np.where(np.isposinf(m), np.nan, d - np.log1p(t))
    return np.moveaxis(z, -1, axis).astype(x.dtype)


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        m, _, t = _two_pass(_rows(x, axis))
        # A row holding +inf, or only -inf, or nothing, has logsumexp m itself.
        lse = np.where(np.isinf(m), m, m + np.log1p(t))
    return lse[..., 0].astype(x.dtype)


def load() -> Backend:
    """The entry point's object: softmax-suite calls it once per run."""
    return Backend(
        name="example",
        version=metadata.version("softmax-suite-example-plugin"),
        ops={"softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp},
        to_device=lambda x, device: x,
        to_numpy=np.asarray,
        # float32 arithmetic cannot reach float64's accuracy: float64 is not offered.
        dtypes=("float16", "bfloat16", "float32"),
        copy=np.copy,
        describe=lambda device: {"threads": 1},
    )
