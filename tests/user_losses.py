"""Cross-entropy as a user hands it to the suite: objects with a cross_entropy(x, axis, target, reduction,
...) method on numpy arrays (`--backend tests.user_losses:NumpyLoss`) and on a framework's arrays
(`--backend torch:tests.user_losses:TorchLoss`, jax:, mlx:), each declaring the loss options it takes in
`options`, and a plain softmax function that claims no loss."""

from __future__ import annotations

from typing import Any

import numpy as np


def _numpy_log_softmax(rows: np.ndarray) -> np.ndarray:
    """log_softmax of float64 rows, classes last: x - max - log(sum exp(x - max))."""
    shifted = rows - np.max(rows, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


class NumpyLoss:
    """Weighted cross-entropy with ignored rows, computed in float64 and rounded once; no label smoothing.
    Its VJP is its own method: numpy has no automatic differentiation."""

    name = "numpy-loss"
    version = "0.1"
    options = ("ignore_index", "weight")

    @staticmethod
    def _parts(x: np.ndarray, target: np.ndarray, ignore_index: int,
               weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = np.asarray(x, dtype=np.float64)
        kept = target != ignore_index
        index = np.where(kept, target, 0)
        w = np.ones(rows.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
        picked = np.where(kept, w[index], 0.0)
        return rows, kept, index, picked

    def cross_entropy(self, x: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                      ignore_index: int = -100, weight: np.ndarray | None = None) -> np.ndarray:
        with np.errstate(all="ignore"):
            rows, kept, index, picked = self._parts(x, target, ignore_index, weight)
            z = np.take_along_axis(_numpy_log_softmax(rows), index[:, None], axis=-1)[:, 0]
            loss = np.where(kept, -picked * z, 0.0)
            if reduction == "mean":
                loss = np.sum(loss) / np.sum(picked)
            elif reduction == "sum":
                loss = np.sum(loss)
        return np.asarray(loss).astype(x.dtype)

    def cross_entropy_vjp(self, x: np.ndarray, g: np.ndarray, axis: int, target: np.ndarray, reduction: str,
                          ignore_index: int = -100, weight: np.ndarray | None = None) -> np.ndarray:
        with np.errstate(all="ignore"):
            rows, kept, index, picked = self._parts(x, target, ignore_index, weight)
            factor = np.asarray(g, dtype=np.float64)
            if reduction == "mean":
                factor = factor / np.sum(picked)
            onehot = np.zeros_like(rows)
            onehot[np.arange(rows.shape[0]), index] = 1.0
            dx = np.broadcast_to(factor, kept.shape)[:, None] * picked[:, None] * (
                np.exp(_numpy_log_softmax(rows)) - onehot)
            dx = np.where(kept[:, None], dx, 0.0)
        return dx.astype(x.dtype)


class NumpyForwardOnly:
    """A loss without its VJP on numpy arrays: the VJP is unsupported, with what to give."""

    def cross_entropy(self, x: np.ndarray, axis: int, target: np.ndarray, reduction: str) -> np.ndarray:
        return NumpyLoss().cross_entropy(x, axis, target, reduction)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """A plain softmax function: tested as softmax only, never as a loss."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


class TorchLoss:
    """Label-smoothed cross-entropy on torch tensors, composed of torch.log_softmax and a gather as a
    user writes it; its VJP through autograd."""

    options = ("label_smoothing",)

    def cross_entropy(self, x: Any, dim: int, target: Any, reduction: str,
                      label_smoothing: float = 0.0) -> Any:
        import torch

        z = torch.log_softmax(x, dim)
        picked = -z.gather(dim, target.unsqueeze(dim)).squeeze(dim)
        loss = (1 - label_smoothing) * picked - label_smoothing * z.mean(dim) if label_smoothing else picked
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


class JaxLoss:
    """Cross-entropy with ignored rows on jax arrays, composed of jax.nn.log_softmax as a user writes it
    (ignore_index and reduction reach it as Python values); its VJP through jax.vjp."""

    options = ("ignore_index",)

    def cross_entropy(self, x: Any, axis: int, target: Any, reduction: str, ignore_index: int = -100) -> Any:
        import jax.numpy as jnp
        from jax import nn

        kept = target != ignore_index
        index = jnp.where(kept, target, 0)
        z = jnp.take_along_axis(nn.log_softmax(x, axis=axis), index[:, None], axis=axis)[:, 0]
        loss = jnp.where(kept, -z, jnp.zeros((), x.dtype))
        if reduction == "none":
            return loss
        total = jnp.sum(loss)
        return total if reduction == "sum" else total / jnp.sum(kept).astype(x.dtype)


class MlxLoss:
    """Cross-entropy on mlx arrays, composed of mx.logsumexp and a gather; its VJP through mx.vjp."""

    def cross_entropy(self, x: Any, axis: int, target: Any, reduction: str) -> Any:
        import mlx.core as mx

        z = mx.take_along_axis(x, mx.expand_dims(target, axis), axis).squeeze(axis)
        loss = mx.logsumexp(x, axis=axis) - z
        return {"none": loss, "mean": mx.mean(loss), "sum": mx.sum(loss)}[reduction]


def _host_loss(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = _numpy_log_softmax(np.asarray(x, dtype=np.float64))
    return (-np.take_along_axis(z, np.asarray(target)[:, None], axis=-1)[:, 0]).astype(x.dtype)


class JaxOpaqueLoss:
    """A jax loss through a host callback, which has no differentiation rule: its VJP is unsupported."""

    def cross_entropy(self, x: Any, axis: int, target: Any, reduction: str) -> Any:
        import jax
        import jax.numpy as jnp

        loss = jax.pure_callback(_host_loss, jax.ShapeDtypeStruct(x.shape[:1], x.dtype), x, target)
        return {"none": loss, "mean": jnp.mean(loss), "sum": jnp.sum(loss)}[reduction]
