"""torch: torch.softmax, torch.log_softmax and torch.logsumexp on cpu, cuda and mps; their
VJPs through autograd (torch.autograd.grad with the cotangent as grad_outputs). load(functions) runs a
user's own functions on torch tensors the same way (`--backend torch:package.module:attr`), so that a
custom torch.autograd.Function's backward is what its VJP tests.

Attention's forms are composed as a torch user writes them: (x * scale).masked_fill(~mask, -inf),
then the op (torch's softmax has neither argument); their VJPs through autograd of that.
cross_entropy is torch.nn.functional.cross_entropy with every option (its VJP through autograd).

Inputs keep their strides on the cpu (torch.from_numpy shares the numpy buffer, so a
non-contiguous case stays non-contiguous); bfloat16 crosses as its 16-bit pattern, and the float8
formats (torch.float8_e4m3fn and float8_e5m2, ml_dtypes' on the numpy side) as their bytes.

torch's own ops are asked the float8 formats where they compute them: at load, each is called on a
float8 row on the cpu, and one that refuses (torch 2.13: "softmax_lastdim_kernel_impl" not
implemented for 'Float8_e4m3fn') is unsupported there, with torch's own message. A user's torch
functions declare the dtypes they take (`dtypes`: docs/backends.md).
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softmax_suite.ops import op_named
from softmax_suite.protocol import (
    ATTENTION_OPTIONS,
    DTYPES,
    FLOAT8_DTYPES,
    LOSS_OPTIONS,
    STANDARD_DTYPES,
    Backend,
    BackendUnavailable,
)

DEVICE_KINDS = ("cpu", "cuda", "mps")


def _absent_devices(torch: Any) -> dict[str, str]:
    absent = {}
    if not torch.cuda.is_available():
        absent["cuda"] = "torch.cuda.is_available() is False (no CUDA device or a CPU-only build)"
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        absent["mps"] = "torch.backends.mps.is_available() is False (not an Apple GPU)"
    return absent


def _describe(torch: Any, device: str) -> dict[str, Any]:
    """Threads torch uses on the CPU; the GPU's name, compute capability and CUDA version."""
    info: dict[str, Any] = {"threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    memory_bytes=properties.total_memory, cuda=torch.version.cuda,
                    driver=_nvidia_driver())
    return info


def _nvidia_driver() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (torch does not report it); None without it."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout.strip() else None


def _not_differentiable(torch: Any, op: str, function: Any, devices: tuple[str, ...]) -> str | None:
    """Why autograd cannot take the VJP of a user's function (its output has no grad_fn: a forward-only
    kernel), or None. Probed on a GPU first, where a kernel may only run; undecided (None) when the
    function fails on the probe, whose error the forward's own results then show."""
    for device in sorted(devices, key=lambda name: name == "cpu"):
        try:
            with torch.enable_grad():
                probe = torch.tensor([[0.5, 1.0, 2.0]], device=device, requires_grad=True)
                # A loss is called with its targets and reduction (softmax_suite.protocol).
                loss = {"target": torch.tensor([1], device=device), "reduction": "none"} \
                    if op_named(op).loss else {}
                out = function(probe, -1, **loss)
        except Exception:  # the forward's own results report it
            continue
        if isinstance(out, torch.Tensor) and not out.requires_grad:
            return (f"{op} is forward-only: torch.autograd cannot differentiate it (its output has no "
                    f"grad_fn); give it a backward (a torch.autograd.Function), or the object an "
                    f"{op}_vjp(x, g, axis{', target, reduction' if op_named(op).loss else ''}) method, to "
                    "test its VJP")
        return None
    return None


def load(functions: Mapping[str, Callable[..., Any]] | None = None,
         compiler: Callable[[Any], Any] | None = None, name: str = "torch") -> Backend:
    """torch's own ops, or the user's forward functions f(x, dim) on torch tensors (functions), with
    their VJPs through autograd; each forward passed through compiler where one is given
    (torch_compile_backend)."""
    try:
        import ml_dtypes
        import torch
    except ImportError as error:
        raise BackendUnavailable(
            f"torch is not installed ({error}); pip install torch (CPU wheel: see DEVELOPERS.md)"
        ) from None

    def to_device(x: np.ndarray, device: str) -> Any:
        # The suite hands out read-only inputs so that no backend can alter the bits the next
        # one sees; torch ops do not write to their inputs, so sharing the buffer is safe.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            if x.dtype == ml_dtypes.bfloat16:
                tensor = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
            elif x.dtype.name in FLOAT8_DTYPES:  # torch's names are ml_dtypes'
                tensor = torch.from_numpy(x.view(np.uint8)).view(getattr(torch, x.dtype.name))
            else:
                tensor = torch.from_numpy(x)
        return tensor.to(device)

    def to_numpy(tensor: Any) -> np.ndarray:
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        name = str(tensor.dtype).removeprefix("torch.")
        if name in FLOAT8_DTYPES:
            return tensor.view(torch.uint8).numpy().view(getattr(ml_dtypes, name))
        return tensor.numpy()

    def synchronize(device: str, value: Any) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        elif device == "mps":
            torch.mps.synchronize()

    def forward(function: Any) -> Any:
        return lambda x, axis, **options: function(x, axis, **options)

    def vjp(function: Any) -> Any:
        def pullback(x: Any, g: Any, axis: int, **options: Any) -> Any:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                (dx,) = torch.autograd.grad(function(leaf, axis, **options), leaf, g)
            return dx

        return pullback

    def composed(function: Any) -> Any:
        def call(x: Any, axis: int, scale: float | None = None, mask: Any = None) -> Any:
            if scale is not None:
                x = x * scale
            if mask is not None:
                x = x.masked_fill(~mask, float("-inf"))
            return function(x, axis)

        return call

    def cross_entropy(x: Any, axis: int, target: Any, reduction: str, ignore_index: int = -100,
                      label_smoothing: float = 0.0, weight: Any = None) -> Any:
        # torch takes the classes along dim 1.
        return torch.nn.functional.cross_entropy(x.movedim(axis, 1), target, weight=weight,
                                                 ignore_index=ignore_index, reduction=reduction,
                                                 label_smoothing=label_smoothing)

    absent = _absent_devices(torch)
    devices = tuple(d for d in DEVICE_KINDS if d not in absent)
    forwards = dict(functions) if functions is not None else {
        **{op: composed(f) for op, f in (("softmax", torch.softmax), ("log_softmax", torch.log_softmax),
                                         ("logsumexp", torch.logsumexp))},
        "cross_entropy": cross_entropy}
    unsupported = {}
    if functions is not None:
        for op, function in forwards.items():
            reason = _not_differentiable(torch, op, function, devices)
            unsupported.update({(f"{op}_vjp", dtype): reason for dtype in DTYPES if reason})
    dtypes = STANDARD_DTYPES
    if functions is None:  # the float8 formats, but where an op refuses them, in torch's words
        unsupported.update(_float8_refusals(torch, forwards))
        dtypes = DTYPES
    if compiler is not None:
        forwards = {op: compiler(function) for op, function in forwards.items()}
    return Backend(
        name=name,
        version=str(torch.__version__),
        ops={**{op: forward(f) for op, f in forwards.items()},
             **{f"{op}_vjp": vjp(f) for op, f in forwards.items()}},
        unsupported=unsupported,
        to_device=to_device,
        to_numpy=to_numpy,
        devices=devices,
        absent_devices=absent,
        synchronize=synchronize,
        describe=lambda device: _describe(torch, device),
        copy=torch.clone,
        options=(*ATTENTION_OPTIONS, *LOSS_OPTIONS) if functions is None else (),
        dtypes=dtypes,
    )


def _float8_refusals(torch: Any, forwards: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """{(op, dtype): torch's own message} for each of torch's ops (and its VJP) that refuses a float8
    row on the cpu: unsupported there, in torch's words. An op that takes it is asked (dtypes)."""
    refused = {}
    for dtype in FLOAT8_DTYPES:
        probe = torch.zeros((1, 2)).to(getattr(torch, dtype))
        for op, function in forwards.items():
            keywords = {"target": torch.zeros(1, dtype=torch.long), "reduction": "sum"} \
                if op_named(op).loss else {}
            try:
                function(probe, -1, **keywords)
            except Exception as error:  # whatever torch raises is its answer
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                reason = (f"torch {torch.__version__} cannot compute {op} in {dtype} on the cpu "
                          f"({type(error).__name__}: {first})")
                refused[(op, dtype)] = refused[(f"{op}_vjp", dtype)] = reason
    return refused
