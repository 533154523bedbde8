"""A kernel author's module, as softmax-suite meets it: softmax written three ways, each on its own
framework's arrays, none with any softmax-suite hook.

MYKERNELS_PLANT_BUG=1 plants a bug in the torch kernel's hand-written backward (it drops the
-<g, y> term), to see the suite catch it.
"""

import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import torch

PLANT_BUG = os.environ.get("MYKERNELS_PLANT_BUG") == "1"


class _Softmax(torch.autograd.Function):
    """softmax with its own backward, as a fused kernel (Triton, CUDA) would have one."""

    @staticmethod
    def forward(ctx, x, dim):
        y = torch.softmax(x, dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if PLANT_BUG:
            return y * g, None
        return y * (g - (g * y).sum(ctx.dim, keepdim=True)), None


def torch_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return _Softmax.apply(x, dim)


@partial(jax.jit, static_argnames="axis")
def jax_softmax(x: jax.Array, axis: int) -> jax.Array:
    # The max carries no gradient: without stop_gradient its (zero) gradient leaves rounding residue.
    e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def numpy_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    # Computed in float32 at least: numpy would sum float16 and bfloat16 in their own precision.
    wide = x.astype(np.promote_types(x.dtype, np.float32))
    e = np.exp(wide - np.max(wide, axis=axis, keepdims=True))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)
