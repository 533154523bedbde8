"""mlx: mx.softmax, mlx.nn.log_softmax's formula and mx.logsumexp on mlx's cpu (and gpu where mlx
has one); their VJPs through mx.vjp. Every dtype crosses as its bit pattern, unconverted. load(functions)
runs a user's own functions f(x, axis) the same way (`--backend mlx:package.module:attr`).

Attention's forms are composed as an mlx user writes them (mx.softmax and mx.logsumexp have neither a
scale nor a mask argument): mx.where(mask, x * scale, -inf), then the op; their VJPs through mx.vjp of
that composition. A row with nothing kept gives softmax and log_softmax NaN (0/0), logsumexp -inf
(measured, mlx 0.32.4): the "nan" convention. mx.where's VJP multiplies the cotangent by the condition
(Select::vjp: cond * ct) instead of selecting it, so a NaN the op's VJP gives on such a row reaches
the masked inputs' gradient as 0 * NaN = NaN: a real mlx deviation, left for the suite to report.

cross_entropy is mlx.nn.losses.cross_entropy with its reduction and label_smoothing (mlx takes
smoothing in [0, 1)); its VJP through mx.vjp. mlx's `weights` are one per sample, not torch's class
weights, and it has no ignore_index: neither is listed in `options`, so those cases are not asked.
Integer targets cross as they are (mx.array of the int64 array).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softmax_suite.ops import LOSS_OPS
from softmax_suite.protocol import ATTENTION_OPTIONS, DTYPES, FLOAT8_DTYPES, Backend, BackendUnavailable

# Unsigned integers of each width: arrays cross between numpy and mlx as these, then are
# reinterpreted. mx.array(float64 array) would silently round to float32, its default float.
UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _not_differentiable(mx: Any, op: str, function: Any) -> str | None:
    """Why mx.vjp cannot differentiate a user's function, or None; undecided (None) when the forward
    itself fails on the probe, as its own results then show."""
    probe = mx.array([[0.5, 1.0, 2.0]])
    # A loss op is probed on one row whose target is class 0, summed.
    keywords = {"target": mx.array([0]), "reduction": "sum"} if op in LOSS_OPS else {}
    try:
        out = function(probe, -1, **keywords)
        mx.eval(out)
    except Exception:  # the forward's own results report it
        return None
    try:
        mx.eval(mx.vjp(lambda x: function(x, -1, **keywords), [probe], [mx.ones_like(out)]))
    except Exception as error:
        signature = "x, g, axis, target, reduction, ..." if keywords else "x, g, axis"
        return (f"mlx cannot differentiate {op} ({type(error).__name__}: {error}); give the object an "
                f"{op}_vjp({signature}) method to test its VJP")
    return None


def load(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """mlx's own ops, or the user's forward functions f(x, axis) on mlx arrays (functions), with their
    VJPs through mx.vjp."""
    try:
        import ml_dtypes
        import mlx.core as mx
        import mlx.nn as nn
    except ImportError as error:
        raise BackendUnavailable(
            f"mlx is not installed ({error}); pip install 'mlx[cpu]' (Linux) or mlx (macOS)") from None
    to_mlx = {np.dtype(np.float16): mx.float16, np.dtype(ml_dtypes.bfloat16): mx.bfloat16,
              np.dtype(np.float32): mx.float32, np.dtype(np.float64): mx.float64}
    to_numpy_dtype = {mlx_type: numpy_type for numpy_type, mlx_type in to_mlx.items()}
    unsigned_mlx = {2: mx.uint16, 4: mx.uint32, 8: mx.uint64}
    streams = {"cpu": mx.cpu}
    absent = {}
    if mx.is_available(mx.gpu):
        streams["gpu"] = mx.gpu
    else:
        absent["gpu"] = (f"mlx {mx.__version__} has no gpu backend here (mx.is_available(mx.gpu) is "
                         "False: Metal is macOS only, CUDA needs the mlx[cuda] build and a GPU)")

    def to_device(x: np.ndarray, device: str) -> Any:
        # mlx arrays live in unified memory and its device is the stream its ops run on: placing
        # an input makes that device the default for the ops called on it next.
        mx.set_default_device(streams[device])
        if x.dtype.kind in "biu":  # a mask or a loss's targets: no bit pattern to keep
            array = mx.array(x)
            mx.eval(array)
            return array
        array = mx.array(x.view(UNSIGNED[x.dtype.itemsize])).view(to_mlx[x.dtype])
        mx.eval(array)
        return array

    def to_numpy(array: Any) -> np.ndarray:
        bits = array.view(unsigned_mlx[array.dtype.size])
        return np.array(bits, copy=True).view(to_numpy_dtype[array.dtype])

    def log_softmax(x: Any, axis: int) -> Any:
        # mlx.nn.log_softmax's own body, called without its mx.compile(shapeless=True) wrapper: the
        # compiled function crashes the process (SIGSEGV) on rows of length 1 (mlx 0.32.4).
        shifted = x - mx.stop_gradient(mx.max(x, axis=axis, keepdims=True))
        return shifted - mx.logsumexp(shifted, axis=axis, keepdims=True)

    def composed(function: Any) -> Any:
        def call(x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
            # A Python scalar keeps x's dtype in mlx (float16, bfloat16 and float64 alike).
            if scale is not None:
                x = x * scale
            if mask is not None:
                x = mx.where(mask, x, float("-inf"))
            return function(x, axis)

        return call

    def cross_entropy(x: Any, axis: int, target: Any, reduction: str, label_smoothing: float = 0.0) -> Any:
        return nn.losses.cross_entropy(x, target, axis=axis, label_smoothing=label_smoothing,
                                       reduction=reduction)

    forwards = dict(functions) if functions is not None else {
        **{op: composed(f) for op, f in (("softmax", lambda x, axis: mx.softmax(x, axis=axis)),
                                         ("log_softmax", log_softmax),
                                         ("logsumexp", lambda x, axis: mx.logsumexp(x, axis=axis)))},
        "cross_entropy": cross_entropy}

    def forward(function: Any) -> Any:
        return lambda x, axis, **options: function(x, axis, **options)

    def vjp(function: Any) -> Any:
        def pullback(x: Any, g: Any, axis: int, **options: Any) -> Any:
            _, (dx,) = mx.vjp(lambda v: function(v, axis, **options), [x], [g])
            return dx

        return pullback

    # mlx has no float8 arrays (mx.to_fp8 packs float8_e4m3fn bits into uint8 arrays, and mx.from_fp8
    # unpacks them; no op computes on them): the float8 formats are unsupported, saying so.
    unsupported = {(name, dtype): f"mlx {mx.__version__} has no {dtype} arrays (mx.to_fp8 and mx.from_fp8 "
                   "only convert to and from uint8 bits)"
                   for op in forwards for name in (op, f"{op}_vjp") for dtype in FLOAT8_DTYPES}
    if functions is not None:
        for op, function in forwards.items():
            reason = _not_differentiable(mx, op, function)
            unsupported.update({(f"{op}_vjp", dtype): reason for dtype in DTYPES if reason})
    return Backend(
        name="mlx",
        version=mx.__version__,
        ops={**{op: forward(f) for op, f in forwards.items()},
             **{f"{op}_vjp": vjp(f) for op, f in forwards.items()}},
        unsupported=unsupported,
        to_device=to_device,
        to_numpy=to_numpy,
        devices=tuple(streams),
        absent_devices=absent,
        # mlx is lazy: nothing is computed until the graph is evaluated.
        synchronize=lambda device, value: mx.eval(value),
        copy=mx.array,
        describe=lambda device: {"device": device, **mx.device_info()},
        # mlx.nn.losses.cross_entropy has no ignore_index, and its weights are per sample, not per class.
        options=(*ATTENTION_OPTIONS, "label_smoothing") if functions is None else (),
        # Measured (mlx 0.32.4): a fully masked row gives softmax and log_softmax NaN, logsumexp -inf.
        fully_masked="nan",
    )
