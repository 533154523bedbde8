"""cupy (NVIDIA GPUs): cupyx.scipy.special's softmax, log_softmax and logsumexp, and the closed-form
VJPs y (g - <g, y>), g - y sum(g) and g y computed in cupy as backends/numpy_backend.py computes them.

float16 is widened to float32 for the VJPs and rounded once at the end; bfloat16 is unsupported.
load(functions) runs a user's own functions f(x, axis) on cupy arrays (`--backend cupy:package.module:attr`);
cupy has no automatic differentiation, so their VJPs are only those the user gives.

Attention's forms are composed as a cupy user writes them (cupyx.scipy.special has no mask argument):
cupy.where(mask, x * scale, -inf) in x's dtype, then the op, as scipy_backend composes scipy's; the VJPs
on the widened rows as numpy_backend's, times scale with 0 where masked, their cotangent 0 where
masked. A row with nothing kept is all -inf: cupyx's softmax and log_softmax give NaN (-inf - -inf),
its logsumexp -inf (it replaces a non-finite max by 0): the "nan" convention, read from cupyx's
source (not measured here: the development machine has no cupy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softmax_suite.protocol import ATTENTION_OPTIONS, OPS, Backend, BackendUnavailable

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
        def call(x: Any, *rest: Any, **options: Any) -> Any:
            with x.device:
                return function(x, *rest, **options)

        return call

    def kept(mask: Any, x: Any, axis: int) -> Any:
        """mask broadcast to x, the reduction axis last."""
        return cupy.moveaxis(cupy.broadcast_to(mask, x.shape), axis, -1)

    def rows(x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        """x with the reduction axis last, widened to float32 if narrower, times scale, -inf where
        mask is False."""
        wide = cupy.float32 if x.dtype.itemsize < 4 else x.dtype
        r = cupy.moveaxis(x, axis, -1).astype(wide)
        if scale is not None:
            r = r * r.dtype.type(scale)  # exact: scale is already rounded into x's dtype
        if mask is not None:
            r = cupy.where(kept(mask, x, axis), r, r.dtype.type(-np.inf))
        return r

    def cotangent(g: Any, axis: int, mask: Any) -> Any:
        """g's rows, 0 where masked: a masked output is a constant, its cotangent reaches nothing."""
        gr = rows(g, axis)
        return gr if mask is None else cupy.where(kept(mask, g, axis), gr, gr.dtype.type(0))

    def softmax_rows(r: Any) -> Any:
        if not r.shape[-1]:
            return r  # cupy.max has no initial value for an empty row, whose softmax is empty
        e = cupy.exp(r - cupy.max(r, axis=-1, keepdims=True))
        return e / cupy.sum(e, axis=-1, keepdims=True)

    def back(dx: Any, x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        """A VJP's rows in x's layout and dtype: times scale (the chain rule), 0 where masked."""
        if scale is not None:
            dx = dx * dx.dtype.type(scale)
        if mask is not None:
            dx = cupy.where(kept(mask, x, axis), dx, dx.dtype.type(0))
        return cupy.moveaxis(dx, -1, axis).astype(x.dtype)

    def softmax_vjp(x: Any, g: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        y, gr = softmax_rows(rows(x, axis, scale, mask)), cotangent(g, axis, mask)
        return back(y * (gr - cupy.sum(gr * y, axis=-1, keepdims=True)), x, axis, scale, mask)

    def log_softmax_vjp(x: Any, g: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        y, gr = softmax_rows(rows(x, axis, scale, mask)), cotangent(g, axis, mask)
        return back(gr - y * cupy.sum(gr, axis=-1, keepdims=True), x, axis, scale, mask)

    def logsumexp_vjp(x: Any, g: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
        r = rows(x, axis, scale, mask)
        return back(softmax_rows(r) * g.astype(r.dtype)[..., None], x, axis, scale, mask)

    def composed(x: Any, scale: float | None, mask: Any) -> Any:
        """x * scale, -inf where mask is False, in x's dtype (the one cupyx.scipy.special computes in)."""
        if scale is not None:
            x = x * x.dtype.type(scale)
        if mask is not None:
            x = cupy.where(mask, x, x.dtype.type(-np.inf))
        return x

    def special_op(function: Any) -> Any:
        def call(x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
            return function(composed(x, scale, mask), axis=axis)

        return call

    special = cupyx.scipy.special
    ops = dict(functions) if functions is not None else {
        "softmax": special_op(special.softmax),
        "log_softmax": special_op(special.log_softmax),
        "logsumexp": special_op(special.logsumexp),
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
        options=ATTENTION_OPTIONS if functions is None else (),
        # Read from cupyx's source, not measured here (see the docstring): NaN softmax and log_softmax,
        # -inf logsumexp on a fully masked row.
        fully_masked="nan",
    )
