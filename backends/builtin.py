"""The built-in adapters by name, and the module whose load() makes each: names only, so that
listing them imports no framework."""

BUILTIN: dict[str, str] = {
    "numpy": "softmax_suite.backends.numpy_backend",
    "scipy": "softmax_suite.backends.scipy_backend",
    "torch": "softmax_suite.backends.torch_backend",
    "torch-compile": "softmax_suite.backends.torch_compile_backend",
    "jax": "softmax_suite.backends.jax_backend",
    "array_api_strict": "softmax_suite.backends.array_api_backend",
    "onnxruntime": "softmax_suite.backends.onnxruntime_backend",
    "mlx": "softmax_suite.backends.mlx_backend",
    "tensorflow": "softmax_suite.backends.tensorflow_backend",
    "cupy": "softmax_suite.backends.cupy_backend",
    "triton": "softmax_suite.backends.triton_backend",
}

# The built-ins whose load(functions) runs a user's own functions on the framework's arrays
# (`--backend torch:package.module:attr`), with the framework's conversions, devices and, where it
# has automatic differentiation, VJPs through it.
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax", "mlx", "cupy")
