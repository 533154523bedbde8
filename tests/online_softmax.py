"""A numpy model of the tile-by-tile "online softmax" of fused attention kernels (FlashAttention), a custom
backend for the suite's self-tests: `OnlineSoftmax` is correct, each subclass plants one real bug class."""

from __future__ import annotations

from typing import NamedTuple

import ml_dtypes
import numpy as np

NEG_INF = np.float32(-np.inf)


class Online(NamedTuple):
    """What one online pass over 2-D rows gives: the three forward ops, and the final running max and
    running sum (one per row) that a kernel keeps for its backward pass."""

    softmax: np.ndarray
    log_softmax: np.ndarray
    logsumexp: np.ndarray
    max: np.ndarray
    sum: np.ndarray


def online_rows(z: np.ndarray, mask: np.ndarray | None, tile: int, *, initial_max: float = -np.inf,
                max_before_mask: bool = False) -> Online:
    """softmax, log_softmax and logsumexp of each row of the scaled logits z (rows x n, float32), taken
    tile columns at a time with a running max m and a running sum l, in float32; mask (True = keep) or None.

    Masked positions give exactly 0 (softmax) and -inf (log_softmax), whatever z holds there; a row with
    no kept entry gives softmax 0, log_softmax -inf and logsumexp -inf (the "zero" convention).
    initial_max and max_before_mask exist only to plant bugs: a correct kernel starts the max at -inf and
    masks before it takes any max.
    """
    z = np.asarray(z, dtype=np.float32)
    keep = np.ones(z.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rows, n = z.shape
    with np.errstate(all="ignore"):
        # Masking first is what keeps a huge, infinite or NaN logit under the mask out of every max,
        # exponential and sum below.
        kept = np.where(keep, z, NEG_INF)
        m = np.full(rows, initial_max, dtype=np.float32)
        total = np.zeros(rows, dtype=np.float32)
        for start in range(0, n, tile):
            block = kept[:, start:start + tile]
            seen = z[:, start:start + tile] if max_before_mask else block
            m_new = np.maximum(m, np.max(seen, axis=1))
            # No kept entry yet: m and m_new are both -inf, and exp(m - m_new) would be exp(nan); the
            # running sum is 0 then, so any finite factor is right, and 1 is what the kernels use.
            # Shifting such a row by 0 instead of -inf makes its exponentials exp(-inf) = 0, not NaN.
            none_yet = m_new == NEG_INF
            alpha = np.where(none_yet, np.float32(1), np.exp(m - m_new))
            shift = np.where(none_yet, np.float32(0), m_new)
            total = total * alpha + np.sum(np.exp(block - shift[:, None]), axis=1, dtype=np.float32)
            m = m_new
        # A row whose max is still -inf has no kept finite logit: the zero convention, decided here
        # rather than computed (exp(z - m) / l would be exp(nan) / 0 there).
        empty = (m == NEG_INF)[:, None]
        live = keep & ~empty
        shift = np.where(empty, np.float32(0), m[:, None])
        softmax = np.where(live, np.exp(kept - shift) / total[:, None], np.float32(0))
        log_softmax = np.where(live, kept - shift - np.log(total)[:, None], NEG_INF)
        logsumexp = np.where(empty[:, 0], NEG_INF, m + np.log(total))
    return Online(softmax.astype(np.float32), log_softmax.astype(np.float32),
                  logsumexp.astype(np.float32), m, total)


def _to_rows(x: np.ndarray, axis: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """x (as float32) and the mask (broadcast to x, all True for None) as 2-D rows along axis, and the
    shape with axis last that puts them back. Both C-contiguous: numpy sums pairwise only along
    contiguous rows, so the rounding would otherwise depend on the layout of x and of the mask."""
    x = np.asarray(x, dtype=np.float32)
    keep = np.ones(x.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape)
    moved = np.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    return (np.ascontiguousarray(moved.reshape(-1, n)),
            np.ascontiguousarray(np.moveaxis(keep, axis, -1).reshape(-1, n)), moved.shape)


def _from_rows(values: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    return np.moveaxis(values.reshape(shape), -1, axis)


class OnlineSoftmax:
    """Correct: the online softmax of a fused kernel, with the scale multiplied in and the mask applied
    before any max, in float32. A custom backend object for the suite."""

    name = "online"
    version = "0"
    dtypes = ("float32",)
    fully_masked = "zero"
    tile = 64
    options = ("scale", "mask")
    # The planted bugs' switches (see online_rows); a correct kernel has these values.
    initial_max = -np.inf
    max_before_mask = False

    def _scale(self, scale: float | None) -> np.float32:
        """The scale as the kernel holds it: a float32 (1 for None)."""
        return np.float32(1.0 if scale is None else scale)

    def _online(self, x: np.ndarray, axis: int, scale: float | None,
                mask: np.ndarray | None) -> tuple[Online, np.ndarray, np.ndarray, tuple]:
        rows, keep, shape = _to_rows(x, axis, mask)
        with np.errstate(all="ignore"):
            # The product in float32, as a kernel forms it; an overflow to inf under the mask is harmless.
            z = self._scale(scale) * rows
        return online_rows(z, keep, self.tile, initial_max=self.initial_max,
                           max_before_mask=self.max_before_mask), z, keep, shape

    def softmax(self, x: np.ndarray, axis: int, *, scale: float | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
        result, _, _, shape = self._online(x, axis, scale, mask)
        return _from_rows(result.softmax, shape, axis)

    def log_softmax(self, x: np.ndarray, axis: int, *, scale: float | None = None,
                    mask: np.ndarray | None = None) -> np.ndarray:
        result, _, _, shape = self._online(x, axis, scale, mask)
        return _from_rows(result.log_softmax, shape, axis)

    def logsumexp(self, x: np.ndarray, axis: int, *, scale: float | None = None,
                  mask: np.ndarray | None = None) -> np.ndarray:
        result, _, _, shape = self._online(x, axis, scale, mask)
        return result.logsumexp.reshape(shape[:-1])

    # The backward pass. A kernel recomputes the softmax from the saved running max and sum; the hooks
    # below are where the jax-style `where` NaN-gradient bug plants itself.

    def _backward_softmax(self, result: Online, z: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """The softmax the VJPs multiply by: the forward's, exactly 0 under the mask."""
        return result.softmax

    def _zero_masked(self, values: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """values with the masked positions set to exactly 0 (selected, so a NaN there goes too)."""
        return np.where(keep, values, np.float32(0))

    def _vjp_rows(self, x: np.ndarray, g: np.ndarray, axis: int, scale: float | None,
                  mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.float32, tuple]:
        result, z, keep, shape = self._online(x, axis, scale, mask)
        with np.errstate(all="ignore"):
            y = self._backward_softmax(result, z, keep)
        return y, keep, np.asarray(g, dtype=np.float32), self._scale(scale), shape

    def _cotangent_rows(self, g: np.ndarray, axis: int, y: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        """A cotangent of x's shape as rows, 0 under the mask (a masked output is a constant: its
        cotangent takes no part in the row's sums)."""
        return self._zero_masked(np.ascontiguousarray(np.moveaxis(g, axis, -1).reshape(y.shape)), keep)

    def softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int, *, scale: float | None = None,
                    mask: np.ndarray | None = None) -> np.ndarray:
        y, keep, g, s, shape = self._vjp_rows(x, g, axis, scale, mask)
        g = self._cotangent_rows(g, axis, y, keep)
        with np.errstate(all="ignore"):
            dot = np.sum(g * y, axis=1, keepdims=True, dtype=np.float32)
            values = self._zero_masked(s * (y * (g - dot)), keep)
        return _from_rows(values, shape, axis)

    def log_softmax_vjp(self, x: np.ndarray, g: np.ndarray, axis: int, *, scale: float | None = None,
                        mask: np.ndarray | None = None) -> np.ndarray:
        y, keep, g, s, shape = self._vjp_rows(x, g, axis, scale, mask)
        g = self._cotangent_rows(g, axis, y, keep)
        with np.errstate(all="ignore"):
            total = np.sum(g, axis=1, keepdims=True, dtype=np.float32)
            values = self._zero_masked(s * (g - y * total), keep)
        return _from_rows(values, shape, axis)

    def logsumexp_vjp(self, x: np.ndarray, g: np.ndarray, axis: int, *, scale: float | None = None,
                      mask: np.ndarray | None = None) -> np.ndarray:
        y, keep, g, s, shape = self._vjp_rows(x, g, axis, scale, mask)
        g = g.reshape(-1, 1)
        with np.errstate(all="ignore"):
            values = self._zero_masked(s * (g * y), keep)
        return _from_rows(values, shape, axis)


class RunningMaxFromZero(OnlineSoftmax):
    """Wrong: the running max starts at 0, not -inf, so a row whose logits all lie far below 0 is shifted
    by 0: its exponentials underflow (exp(-104) is 0 in float32), l is 0 and the output 0/0 = NaN."""

    name = "online-max-from-zero"
    initial_max = 0.0


class MaxBeforeMask(OnlineSoftmax):
    """Wrong: each tile's max is taken over all its entries, masked ones included, so a huge or +inf
    logit under the mask becomes the shift that drives every kept exponential to 0 (0/0 = NaN)."""

    name = "online-max-before-mask"
    max_before_mask = True


class ScaleInBfloat16(OnlineSoftmax):
    """Wrong: the scale is rounded to bfloat16 (8 significant bits, nearest even) before the product, a
    relative error up to 2^-9 in every logit (1.1e-4 for 1/sqrt(96))."""

    name = "online-bf16-scale"

    def _scale(self, scale: float | None) -> np.float32:
        return np.float32(ml_dtypes.bfloat16(super()._scale(scale)))


class NanGradientUnderMask(OnlineSoftmax):
    """Wrong: the backward applies the mask to the forward value only (jax's `where` NaN-gradient bug):
    it recomputes exp(z - m) / l over the unmasked logits and multiplies by the mask afterwards, so a
    masked inf or NaN gives 0 * inf or 0 * NaN = NaN in the gradient. The forward ops are correct."""

    name = "online-nan-grad"

    def _backward_softmax(self, result: Online, z: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return self._zero_masked(np.exp(z - result.max[:, None]) / result.sum[:, None], keep)

    def _zero_masked(self, values: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return values * keep.astype(np.float32)
