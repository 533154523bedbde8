"""torch: torch.softmax, torch.log_softmax and torch.logsumexp on cpu, cuda and mps; their
VJPs through autograd (torch.autograd.grad with the cotangent as grad_outputs).

Inputs keep their strides on the cpu (torch.from_numpy shares the numpy buffer, so a
non-contiguous case stays non-contiguous); bfloat16 crosses as its 16-bit pattern.
"""

from __future__ import annotations

import subprocess
import warnings
from typing import Any

import numpy as np

from softmax_suite.protocol import Backend, BackendUnavailable

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


def load() -> Backend:
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
            else:
                tensor = torch.from_numpy(x)
        return tensor.to(device)

    def to_numpy(tensor: Any) -> np.ndarray:
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()

    def synchronize(device: str, value: Any) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        elif device == "mps":
            torch.mps.synchronize()

    def vjp(forward: Any) -> Any:
        def pullback(x: Any, g: Any, axis: int) -> Any:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                (dx,) = torch.autograd.grad(forward(leaf, dim=axis), leaf, g)
            return dx

        return pullback

    absent = _absent_devices(torch)
    return Backend(
        name="torch",
        version=str(torch.__version__),
        ops={
            "softmax": lambda x, axis: torch.softmax(x, dim=axis),
            "log_softmax": lambda x, axis: torch.log_softmax(x, dim=axis),
            "logsumexp": lambda x, axis: torch.logsumexp(x, dim=axis),
            "softmax_vjp": vjp(torch.softmax),
            "log_softmax_vjp": vjp(torch.log_softmax),
            "logsumexp_vjp": vjp(torch.logsumexp),
        },
        to_device=to_device,
        to_numpy=to_numpy,
        devices=tuple(d for d in DEVICE_KINDS if d not in absent),
        absent_devices=absent,
        synchronize=synchronize,
        describe=lambda device: _describe(torch, device),
        copy=torch.clone,
    )
