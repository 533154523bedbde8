"""Kernels a user would hand the suite that the example project does not show: a forward-only torch
kernel, a jax kernel with no differentiation rule, and objects that name themselves."""

import jax
import numpy as np
import torch


def forward_only(x: torch.Tensor, dim: int) -> torch.Tensor:
    # As a Triton kernel without a backward: its output carries no grad_fn.
    with torch.no_grad():
        return torch.softmax(x, dim)


def _host_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def opaque(x: jax.Array, axis: int) -> jax.Array:
    # A host call has no differentiation rule: jax cannot take its VJP. Last axis only, as the cases ask.
    return jax.pure_callback(_host_softmax, jax.ShapeDtypeStruct(x.shape, x.dtype), x)


class Fused:
    """An object with op methods on torch tensors and a name of its own."""

    name = "fused"
    version = "1.2"

    def softmax(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.softmax(x, dim)

    def log_softmax(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.log_softmax(x, dim)


class FusedAgain(Fused):
    """Another object that calls itself "fused"."""
