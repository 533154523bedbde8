"""The built-in adapters by name, and the module whose load() makes each (or `module:function`, where one
module makes several): names only, so that listing them imports no framework."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

BUILTIN: dict[str, str] = {
    "numpy": "softmax_suite.backends.numpy_backend",
    "scipy": "softmax_suite.backends.scipy_backend",
    "torch": "softmax_suite.backends.torch_backend",
    "jax": "softmax_suite.backends.jax_backend",
    "array_api_strict": "softmax_suite.backends.array_api_backend",
    "onnxruntime": "softmax_suite.backends.onnxruntime_backend",
    "mlx": "softmax_suite.backends.mlx_backend",
    "tensorflow": "softmax_suite.backends.tensorflow_backend",
    "cupy": "softmax_suite.backends.cupy_backend",
    "triton": "softmax_suite.backends.triton_backend",
    "torch-compile": "softmax_suite.backends.torch_compile_backend",
    # Fused attention kernels through the exact embedding (Q = X, K = V = I): one module, a loader each.
    "torch-sdpa-math": "softmax_suite.backends.attention_backend:load_torch_sdpa_math",
    "torch-sdpa-flash": "softmax_suite.backends.attention_backend:load_torch_sdpa_flash",
    "torch-sdpa-efficient": "softmax_suite.backends.attention_backend:load_torch_sdpa_efficient",
    "torch-sdpa-cudnn": "softmax_suite.backends.attention_backend:load_torch_sdpa_cudnn",
    "torch-attention": "softmax_suite.backends.attention_backend:load_torch_attention",
    "jax-attention": "softmax_suite.backends.attention_backend:load_jax_attention",
    "mlx-attention": "softmax_suite.backends.attention_backend:load_mlx_attention",
}

# Built-ins a run asks only by name (--backend NAME): what the default run would pay for them, and
# the verdict's "not run" line says so. torch.compile compiles every op, dtype, option set and
# reduction apart (inductor's C++ on a CPU, seconds each): 10 minutes cold on 2 cores alone, about
# twice the whole default run without it.
OPT_IN: dict[str, str] = {
    "torch-compile": "asked by name only (--backend torch-compile): it compiles every op, dtype and option "
                     "set, about 10 minutes cold on 2 CPU cores",
}

# The built-ins whose load(functions) runs a user's own functions on the framework's arrays
# (`--backend torch:package.module:attr`), with the framework's conversions, devices and, where it
# has automatic differentiation, VJPs through it.
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax", "mlx", "cupy", "torch-attention")


def loader(name: str) -> Callable[..., Any]:
    """The function that makes the built-in backend of this name (load(), or load(functions) for a
    framework): its module's load, or the function BUILTIN names."""
    module, _, function = BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), function or "load")
