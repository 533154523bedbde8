"""Fused attention kernels as softmax backends, through an exact embedding.

Attention computes O = softmax(scale * Q K^T + mask) V. With Q = X (the case's rows as queries, the row
length n as the head dimension) and K = V = I_n, each score is one product x * 1 plus zeros, so
Q K^T = X exactly, and P V = P exactly: the kernel's output is its own softmax of scale * X over the
mask, row by row, which the suite's exact oracle judges. Through autograd with dO = g, dQ is the VJP of
the scaled softmax with respect to x (the chain rule's scale included, as the suite's softmax_vjp is).
So each backend has two ops, softmax(x, axis, *, scale=None, mask=None) and its softmax_vjp; the others
are absent (reported unsupported by the suite).

The axis goes last and the leading dims flatten into L queries: Q is (1, 1, L, n) (torch's and mlx's
batch, heads, length, head dim) or (1, L, 1, n) (jax's batch, length, heads, head dim), K = V = I_n in
x's dtype on x's device. The scale is always passed (1.0 for None: a kernel's default is 1/sqrt(n)),
the mask (True = keep, broadcast to x) goes to the kernel's own boolean mask argument. A masked entry's
value never reaches a kernel in a real attention call (its score is a finite Q K^T); here it is written
as 0 into Q before the call, so that the inf, NaN and format max the cases put under masks do not make
Q K^T NaN through 0 * inf. Kept entries must be finite for the same reason (finite_only), and rows are
at most MAX_LENGTH long (max_length).

The backends (softmax_suite.backends.builtin.BUILTIN):

- torch-sdpa-math, torch-sdpa-flash (cpu and cuda), torch-sdpa-efficient, torch-sdpa-cudnn (cuda):
  torch.nn.functional.scaled_dot_product_attention under torch.nn.attention.sdpa_kernel(one kernel).
  What each kernel takes (dtypes, the mask, its VJP, the longest row) is measured at load on every
  device present, by a tiny call: a kernel refuses what it does not take by raising, and the backend
  declares it unsupported with the kernel's own reason. A backend runs on several devices with one
  declaration, so it takes what every present device's kernel takes (torch-sdpa-flash on a machine
  with CUDA: CUDA's flash kernel takes no float32 and no mask, so neither is asked on its cpu either).
- torch-attention: scaled_dot_product_attention with torch's own choice of kernel; and the framework
  that runs a user's attention function attn(q, k, v, *, scale, mask) -> out on torch tensors (SDPA's
  signature) through the same embedding: load({"softmax": attn}).
- jax-attention: jax.nn.dot_product_attention(implementation=None, which is XLA's), jitted with the
  scale traced and the mask an argument, x64 on; its VJP through jax.vjp.
- mlx-attention: mlx.core.fast.scaled_dot_product_attention (on Linux's CPU: mlx's composed fallback);
  its VJP through mx.vjp.

Conversions, devices, synchronisation and describe are the framework's own adapter's. None is timed
(no copy): through the embedding a call's time is two n x n matmuls', not the kernel's softmax.

Each name's loader is a function of this module (builtin.BUILTIN names it as module:function).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from softmax_suite.backends import jax_backend, mlx_backend, torch_backend
from softmax_suite.protocol import ATTENTION_OPTIONS, DTYPES, STANDARD_DTYPES, Backend, BackendUnavailable

# K = V = I_n hold n^2 entries: 4096^2 float64 is 128 MiB (and autograd keeps more), while the catalogue's
# 65536-column row would need 32 GiB. No CPU kernel here refuses longer rows; the cap is memory's.
MAX_LENGTH = 4096
OPS = ("softmax", "softmax_vjp")
# Row lengths the load-time probe tries, from MAX_LENGTH down (a kernel's head-dimension limit).
PROBED_LENGTHS = tuple(MAX_LENGTH >> k for k in range(10))  # 4096 ... 8


@dataclass(frozen=True)
class TorchKernel:
    """One of torch's SDPA kernels: its backend name, its torch.nn.attention.SDPBackend member, the
    device kinds it is wired for, and what it gives on a fully masked row."""

    name: str
    sdp: str
    devices: tuple[str, ...]
    fully_masked: str


# fully_masked: measured on the cpu (torch 2.13: softmax 0 on the row, and a VJP of 0) for math and flash;
# on cuda FlashAttention's convention, not measured here (no CUDA device).
TORCH_KERNELS = (
    TorchKernel("torch-sdpa-math", "MATH", ("cpu", "cuda"), "zero"),
    TorchKernel("torch-sdpa-flash", "FLASH_ATTENTION", ("cpu", "cuda"), "zero"),
    TorchKernel("torch-sdpa-efficient", "EFFICIENT_ATTENTION", ("cuda",), "zero"),
    TorchKernel("torch-sdpa-cudnn", "CUDNN_ATTENTION", ("cuda",), "zero"),
)


def _kernel_backend(base: Backend, **fields: Any) -> Backend:
    """A kernel's Backend: the framework adapter's conversions, devices, synchronisation and
    description unless fields replace them; finite kept entries only; not timed (through the
    embedding a call's time is two n x n matmuls', not the kernel's softmax)."""
    adapter = {"to_device": base.to_device, "to_numpy": base.to_numpy, "devices": base.devices,
               "absent_devices": base.absent_devices, "synchronize": base.synchronize,
               "describe": base.describe}
    return Backend(**{**adapter, **fields, "copy": None, "finite_only": True})


# -- torch -----------------------------------------------------------------------------------------------

def _torch_embedding(torch: Any, attend: Callable[..., Any],
                     context: Callable[[], AbstractContextManager]) -> dict[str, Callable[..., Any]]:
    """softmax and softmax_vjp of x through attend(q, k, v, scale=, mask=) -> out on (1, 1, L, n)
    queries, K = V = I_n, called inside context()."""

    def queries(x: Any, axis: int, mask: Any) -> tuple[Any, Any, Any, tuple[int, ...]]:
        moved = torch.movedim(x, axis, -1)
        shape = tuple(moved.shape)
        n, rows = shape[-1], math.prod(shape[:-1])
        # Contiguous, as a projection's output is: fused kernels take only a unit-stride head dimension
        # (torch's CPU flash kernel raises "No available kernel" on the strided and transposed cases' rows).
        q = moved.reshape(1, 1, rows, n).contiguous()
        keep = None
        if mask is not None:
            keep = torch.movedim(torch.broadcast_to(mask, x.shape), axis, -1).reshape(1, 1, rows, n)
            # What lies under the mask never reaches a kernel in attention: 0, not inf or NaN, in Q.
            q = torch.where(keep, q, torch.zeros((), dtype=q.dtype, device=q.device))
        eye = torch.eye(n, dtype=x.dtype, device=x.device).reshape(1, 1, n, n)
        return q, eye, keep, shape

    def back(out: Any, shape: tuple[int, ...], axis: int) -> Any:
        return torch.movedim(out.reshape(shape), -1, axis)

    def softmax(x: Any, axis: int, *, scale: float | None = None, mask: Any = None) -> Any:
        q, eye, keep, shape = queries(x, axis, mask)
        with context():
            out = attend(q, eye, eye, scale=1.0 if scale is None else scale, mask=keep)
        return back(out, shape, axis)

    def softmax_vjp(x: Any, g: Any, axis: int, *, scale: float | None = None, mask: Any = None) -> Any:
        q, eye, keep, shape = queries(x, axis, mask)
        with context(), torch.enable_grad():
            leaf = q.detach().requires_grad_(True)
            out = attend(leaf, eye, eye, scale=1.0 if scale is None else scale, mask=keep)
            (dq,) = torch.autograd.grad(out, leaf, torch.movedim(g, axis, -1).reshape(out.shape))
        return back(dq, shape, axis)

    return {"softmax": softmax, "softmax_vjp": softmax_vjp}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _refusal(call: Callable[[], Any]) -> str | None:
    """Why call() raised, with the warnings torch gave on the way (SDPA says there why a kernel was not
    used), or None when it ran."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as error:  # the kernel's refusal is the reason
            said = [str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()]
            return "; ".join(dict.fromkeys([*said, _first_line(error)]))
    return None


@dataclass
class _Measured:
    unsupported: dict[tuple[str, str], str]
    takes_mask: bool
    max_length: int


def _measure(name: str, ops: Mapping[str, Callable[..., Any]], to_device: Callable[[np.ndarray, str], Any],
             synchronize: Callable[[str, Any], None], devices: tuple[str, ...]) -> _Measured:
    """What the kernel behind ops takes on every present device, by tiny calls through the embedding: each
    dtype (forward and VJP), the mask, and the longest row up to MAX_LENGTH (a head-dimension limit)."""
    import ml_dtypes

    numpy_dtypes = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
                    "float64": np.float64}

    def refusal(op: str, x: np.ndarray, device: str, **options: Any) -> str | None:
        def call() -> None:
            inputs = [to_device(a, device) for a in ([x] if op == "softmax" else [x, np.ones_like(x)])]
            keywords = {option: to_device(value, device) for option, value in options.items()}
            synchronize(device, ops[op](*inputs, -1, scale=0.125, **keywords))

        return _refusal(call)

    unsupported: dict[tuple[str, str], str] = {}
    takes_mask, longest = True, MAX_LENGTH
    for device in devices:
        taken = []
        for dtype in STANDARD_DTYPES:  # float8: an attention kernel declares none (Backend.dtypes)
            x = np.linspace(-2.0, 2.0, 16).reshape(2, 8).astype(numpy_dtypes[dtype])
            forward = refusal("softmax", x, device)
            if forward:
                for op in OPS:
                    unsupported.setdefault((op, dtype), f"{name} on {device} refuses {dtype}: {forward}")
                continue
            taken.append(dtype)
            backward = refusal("softmax_vjp", x, device)
            if backward:
                unsupported.setdefault(("softmax_vjp", dtype),
                                       f"{name} on {device} has no VJP for {dtype}: {backward}")
        if not taken:
            continue
        dtype = numpy_dtypes[taken[0]]
        x = np.linspace(-2.0, 2.0, 16).reshape(2, 8).astype(dtype)
        keep = np.array([[True] * 7 + [False], [False, *[True] * 7]])
        takes_mask = takes_mask and not refusal("softmax", x, device, mask=keep)
        longest = next((length for length in PROBED_LENGTHS if length <= longest
                        and not refusal("softmax", np.zeros((1, length), dtype), device)), 1)
    return _Measured(unsupported, takes_mask, longest)


def _load_torch(kernel: TorchKernel | None, functions: Mapping[str, Callable[..., Any]] | None = None
                ) -> Backend:
    """A torch SDPA kernel (kernel), torch's own choice of kernel (neither), or a user's attention
    function (functions["softmax"]: attn(q, k, v, *, scale, mask) -> out), through the embedding."""
    base = torch_backend.load()  # torch's conversions, devices and hooks; BackendUnavailable without torch
    import torch

    name = kernel.name if kernel else "torch-attention"
    if kernel is None:
        wired = base.devices
        absent = dict(base.absent_devices)
        context: Callable[[], AbstractContextManager] = nullcontext
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        wired = tuple(device for device in kernel.devices if device in base.devices)
        absent = {device: base.absent_devices[device] for device in kernel.devices
                  if device in base.absent_devices}
        if not wired:
            raise BackendUnavailable(f"{name}: torch's {kernel.sdp} kernel of scaled_dot_product_attention "
                                     f"runs on {' and '.join(kernel.devices)} only, and here "
                                     f"{'; '.join(absent.values())}")
        member = getattr(SDPBackend, kernel.sdp)

        def context() -> AbstractContextManager:
            return sdpa_kernel(member)

    if functions is None:
        def attend(q: Any, k: Any, v: Any, *, scale: float, mask: Any) -> Any:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    else:
        attend = functions["softmax"]
    ops = _torch_embedding(torch, attend, context)
    unsupported: dict[tuple[str, str], str] = {}
    options, longest = ATTENTION_OPTIONS, MAX_LENGTH
    if kernel is not None:
        measured = _measure(name, ops, base.to_device, base.synchronize, wired)
        unsupported, longest = measured.unsupported, measured.max_length
        options = ATTENTION_OPTIONS if measured.takes_mask else ("scale",)
    elif functions is not None:
        reason = torch_backend._not_differentiable(torch, "softmax", ops["softmax"], wired)
        unsupported = {("softmax_vjp", dtype): reason for dtype in DTYPES if reason}
    return _kernel_backend(
        base, name=name, version=str(torch.__version__), ops=ops, devices=wired, absent_devices=absent,
        unsupported=unsupported, options=options, max_length=longest,
        # A user's function declares its own (an attribute fully_masked of it, read by custom.wrap); torch's
        # SDPA, whichever kernel it picks on the cpu, gives 0 (measured).
        fully_masked=kernel.fully_masked if kernel else ("zero" if functions is None else "nan"))


def load_torch_attention(functions: Mapping[str, Callable[..., Any]] | None = None) -> Backend:
    """torch-attention: scaled_dot_product_attention as torch dispatches it, or a user's attention
    function on torch tensors (functions = {"softmax": attn}), through the embedding."""
    return _load_torch(None, functions)


# -- jax -------------------------------------------------------------------------------------------------

def load_jax_attention() -> Backend:
    """jax-attention: jax.nn.dot_product_attention (XLA's implementation), jitted, VJP through jax.vjp."""
    base = jax_backend.load()  # x64 on, the compilation cache; BackendUnavailable without jax
    import jax
    import jax.numpy as jnp

    def embedded(x: Any, axis: int, mask: Any) -> tuple[Any, Any, Any, tuple[int, ...]]:
        moved = jnp.moveaxis(x, axis, -1)
        shape = tuple(moved.shape)
        n, rows = shape[-1], math.prod(shape[:-1])
        q = moved.reshape(1, rows, 1, n)  # (batch, length, heads, head dim)
        keep = None
        if mask is not None:
            kept = jnp.moveaxis(jnp.broadcast_to(mask, x.shape), axis, -1).reshape(1, rows, 1, n)
            q = jnp.where(kept, q, jnp.zeros((), q.dtype))  # 0 under the mask, not inf or NaN
            keep = kept.reshape(1, 1, rows, n)  # (batch, heads, queries, keys)
        eye = jnp.eye(n, dtype=x.dtype).reshape(1, n, 1, n)
        return q, eye, keep, shape

    def attend(q: Any, eye: Any, keep: Any, scale: Any) -> Any:
        return jax.nn.dot_product_attention(q, eye, eye, mask=keep, scale=scale, implementation=None)

    def softmax(x: Any, axis: int, scale: Any, mask: Any) -> Any:
        q, eye, keep, shape = embedded(x, axis, mask)
        return jnp.moveaxis(attend(q, eye, keep, scale).reshape(shape), -1, axis)

    def softmax_vjp(x: Any, g: Any, axis: int, scale: Any, mask: Any) -> Any:
        q, eye, keep, shape = embedded(x, axis, mask)
        out, pullback = jax.vjp(lambda leaf: attend(leaf, eye, keep, scale), q)
        (dq,) = pullback(jnp.moveaxis(g, axis, -1).reshape(out.shape))
        return jnp.moveaxis(dq.reshape(shape), -1, axis)

    # The scale a traced argument (one compilation for every scale), the mask an argument (None or not
    # is part of the compiled structure).
    forward = jax.jit(softmax, static_argnames="axis")
    backward = jax.jit(softmax_vjp, static_argnames="axis")
    ops = {"softmax": lambda x, axis, *, scale=None, mask=None: forward(
               x, axis=axis, scale=1.0 if scale is None else scale, mask=mask),
           "softmax_vjp": lambda x, g, axis, *, scale=None, mask=None: backward(
               x, g, axis=axis, scale=1.0 if scale is None else scale, mask=mask)}
    # Measured, as the suite calls it (jitted): on the cpu, float16's dot with F16_F16_F32 precision is
    # refused at compilation (eager calls fall back to the default precision; jitted ones cannot).
    measured = _measure("jax-attention", ops, base.to_device, base.synchronize, base.devices)
    return _kernel_backend(
        base, name="jax-attention", version=jax.__version__, ops=ops, unsupported=measured.unsupported,
        options=ATTENTION_OPTIONS if measured.takes_mask else ("scale",), max_length=measured.max_length,
        # Measured: a fully masked row gives 1/n everywhere (XLA's implementation fills masked logits with
        # -0.7 * float32's max, so such a row is uniform), neither convention. "zero" is the nearer truth
        # (a finite row meant to be ignored, never NaN); the suite reports the 1/n as the failure it is.
        fully_masked="zero")


# -- mlx -------------------------------------------------------------------------------------------------

def load_mlx_attention() -> Backend:
    """mlx-attention: mlx.core.fast.scaled_dot_product_attention, VJP through mx.vjp."""
    base = mlx_backend.load()  # mlx's bit-exact conversions, streams; BackendUnavailable without mlx
    import mlx.core as mx

    fast = getattr(getattr(mx, "fast", None), "scaled_dot_product_attention", None)
    if fast is None:
        raise BackendUnavailable(f"mlx {mx.__version__} has no mlx.core.fast.scaled_dot_product_attention")

    def embedded(x: Any, axis: int, mask: Any) -> tuple[Any, Any, Any, tuple[int, ...]]:
        moved = mx.moveaxis(x, axis, -1)
        shape = tuple(moved.shape)
        n, rows = shape[-1], math.prod(shape[:-1])
        q = moved.reshape(1, 1, rows, n)
        keep = None
        if mask is not None:
            # A boolean mask, True = keep (measured: mlx takes part where True).
            keep = mx.moveaxis(mx.broadcast_to(mask, x.shape), axis, -1).reshape(1, 1, rows, n)
            q = mx.where(keep, q, mx.zeros((), dtype=q.dtype))  # 0 under the mask, not inf or NaN
        eye = mx.eye(n, dtype=x.dtype).reshape(1, 1, n, n)
        return q, eye, keep, shape

    def softmax(x: Any, axis: int, *, scale: float | None = None, mask: Any = None) -> Any:
        q, eye, keep, shape = embedded(x, axis, mask)
        out = fast(q, eye, eye, scale=1.0 if scale is None else scale, mask=keep)
        return mx.moveaxis(out.reshape(shape), -1, axis)

    def softmax_vjp(x: Any, g: Any, axis: int, *, scale: float | None = None, mask: Any = None) -> Any:
        q, eye, keep, shape = embedded(x, axis, mask)
        cotangent = mx.moveaxis(g, axis, -1).reshape(q.shape)
        _, (dq,) = mx.vjp(lambda leaf: fast(leaf, eye, eye, scale=1.0 if scale is None else scale,
                                            mask=keep), [q], [cotangent])
        return mx.moveaxis(dq.reshape(shape), -1, axis)

    def to_device(x: np.ndarray, device: str) -> Any:
        # mlx's adapter crosses floats as their bits; a boolean mask crosses as it is.
        return mx.array(x) if x.dtype == np.bool_ else base.to_device(x, device)

    ops = {"softmax": softmax, "softmax_vjp": softmax_vjp}
    measured = _measure("mlx-attention", ops, to_device, base.synchronize, base.devices)
    return _kernel_backend(
        base, name="mlx-attention", version=mx.__version__, ops=ops, unsupported=measured.unsupported,
        to_device=to_device, options=ATTENTION_OPTIONS if measured.takes_mask else ("scale",),
        max_length=measured.max_length,
        # Measured: a fully masked row gives 1/n everywhere (the masked scores are set to the format's
        # lowest finite value, so such a row is uniform), neither convention; "zero" is the nearer truth,
        # and the suite reports the 1/n.
        fully_masked="zero")


# -- the built-in names' loaders (softmax_suite.backends.builtin.BUILTIN: "module:function") -----------

KERNELS = {kernel.name: kernel for kernel in TORCH_KERNELS}


def load_torch_sdpa_math() -> Backend:
    """torch-sdpa-math: torch's MATH kernel of scaled_dot_product_attention."""
    return _load_torch(KERNELS["torch-sdpa-math"])


def load_torch_sdpa_flash() -> Backend:
    """torch-sdpa-flash: torch's FLASH_ATTENTION kernel (cpu and cuda)."""
    return _load_torch(KERNELS["torch-sdpa-flash"])


def load_torch_sdpa_efficient() -> Backend:
    """torch-sdpa-efficient: torch's EFFICIENT_ATTENTION kernel (cuda)."""
    return _load_torch(KERNELS["torch-sdpa-efficient"])


def load_torch_sdpa_cudnn() -> Backend:
    """torch-sdpa-cudnn: torch's CUDNN_ATTENTION kernel (cuda)."""
    return _load_torch(KERNELS["torch-sdpa-cudnn"])


# Its load(functions) makes its ops of a user's attention function through the embedding: the functions
# given are no softmax(x, axis) to put in place of its ops (read by custom.wrap).
load_torch_attention.embeds_functions = True  # type: ignore[attr-defined]
