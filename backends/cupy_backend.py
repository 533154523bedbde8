"""cupy (NVIDIA GPUs): cupyx.scipy.special's softmax, log_softmax and logsumexp, and the closed-form
VJPs y (g - <g, y>), g - y sum(g) and g y computed in cupy as backends/numpy_backend.py computes them.

float16 is widened to float32 for the VJPs and rounded once at the end; bfloat16 is unsupported.
load(functions) runs a user's own functions f(x, axis) on cupy arrays (`--backend cupy:package.module:attr`);
cupy has no automatic differentiation, so their VJPs are only those the user gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softmax_suite.protocol import OPS, Backend, BackendUnavailable

BFLOAT16_REASON = ("cupy has no bfloat16: its kernels are generated for numpy's own dtypes, and "
                   "ml_dtypes' bfloat16 is an extension type cupy cannot hold or compute in")


def device_index(device: str) -> int:
    """'cuda' is GPU 0; 'cuda:N' is GPU N."""
    return int(device.partition(":")[2] or 0)


def load(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """cupy's ops, or the user's forward functions on cupy arrays (functions)."""
    try:
        import cupy
        import cupyx.scipy.special
    except ImportError as error:
        raise BackendUnavailable(
            f"cupy is not installed ({error}); pip install cupy-cuda12x (needs an NVIDIA GPU)") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no driver, no device, a mismatched CUDA: cupy cannot start
        raise BackendUnavailable(f"cupy {cupy.__version__} finds no CUDA device "
                                 f"({type(error).__name__}: {error})") from None
    if count == 0:
        raise BackendUnavailable(f"cupy {cupy.__version__} finds no CUDA device (device count 0)")
    devices = ("cuda", *(f"cuda:{i}" for i in range(1, count)))

    def to_device(x: np.ndarray, device: str) -> Any:
        # One host-side copy into C order, so the transfer is a single contiguous memcpy.
        with cupy.cuda.Device(device_index(device)):
            return cupy.asarray(np.ascontiguousarray(x))

    def on_device_of_input(function: Any) -> Any:
        def call(x: Any, *rest: Any) -> Any:
            with x.device:
                return function(x, *rest)

        return call

    def rows(x: Any, axis: int) -> Any:
        """x with the reduction axis last, widened to float32 if narrower."""
        wide = cupy.float32 if x.dtype.itemsize < 4 else x.dtype
        return cupy.moveaxis(x, axis, -1).astype(wide)

    def softmax_rows(r: Any) -> Any:
        if not r.shape[-1]:
            return r  # cupy.max has no initial value for an empty row, whose softmax is empty
        e = cupy.exp(r - cupy.max(r, axis=-1, keepdims=True))
        return e / cupy.sum(e, axis=-1, keepdims=True)

    def back(dx: Any, axis: int, dtype: Any) -> Any:
        return cupy.moveaxis(dx, -1, axis).astype(dtype)

    def softmax_vjp(x: Any, g: Any, axis: int) -> Any:
        y, gr = softmax_rows(rows(x, axis)), rows(g, axis)
        return back(y * (gr - cupy.sum(gr * y, axis=-1, keepdims=True)), axis, x.dtype)

    def log_softmax_vjp(x: Any, g: Any, axis: int) -> Any:
        y, gr = softmax_rows(rows(x, axis)), rows(g, axis)
        return back(gr - y * cupy.sum(gr, axis=-1, keepdims=True), axis, x.dtype)

    def logsumexp_vjp(x: Any, g: Any, axis: int) -> Any:
        r = rows(x, axis)
        return back(softmax_rows(r) * g.astype(r.dtype)[..., None], axis, x.dtype)

    special = cupyx.scipy.special
    ops = dict(functions) if functions is not None else {
        "softmax": lambda x, axis: special.softmax(x, axis=axis),
        "log_softmax": lambda x, axis: special.log_softmax(x, axis=axis),
        "logsumexp": lambda x, axis: special.logsumexp(x, axis=axis),
        "softmax_vjp": softmax_vjp,
        "log_softmax_vjp": log_softmax_vjp,
        "logsumexp_vjp": logsumexp_vjp,
    }

    def synchronize(device: str, value: Any) -> None:
        with cupy.cuda.Device(device_index(device)):
            cupy.cuda.get_current_stream().synchronize()

    def describe(device: str) -> dict[str, Any]:
        properties = cupy.cuda.runtime.getDeviceProperties(device_index(device))
        return {"gpu": properties["name"].decode(),
                "capability": f"{properties['major']}.{properties['minor']}",
                "memory_bytes": properties["totalGlobalMem"],
                "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
                "cuda_driver": cupy.cuda.runtime.driverGetVersion()}

    return Backend(
        name="cupy",
        version=cupy.__version__,
        ops={op: on_device_of_input(function) for op, function in ops.items()},
        to_device=to_device,
        to_numpy=cupy.asnumpy,
        devices=devices,
        # bfloat16 stays in dtypes (the default) so that the suite reports why, per op.
        unsupported={(op, "bfloat16"): BFLOAT16_REASON for op in OPS},
        synchronize=synchronize,
        copy=on_device_of_input(cupy.copy),
        describe=describe,
    )
