"""triton (GPU only): an example @triton.jit row kernel, the pattern of Triton's fused-softmax tutorial,
for softmax, log_softmax and logsumexp on torch CUDA tensors. No gradients.

One program per row; BLOCK_SIZE is the next power of two of the row length, so a row must fit one
block (MAX_BLOCK); padding lanes load -inf. 16-bit inputs are computed in float32, float64 in float64.
"""

# No `from __future__ import annotations` here: Triton reads a kernel's annotations (tl.constexpr)
# as objects, not as strings.

import math
from typing import Any

import numpy as np

from softmax_suite.protocol import Backend, BackendUnavailable

try:
    import triton
    import triton.language as tl
except ImportError as error:
    triton = None
    TRITON_MISSING = str(error)
else:
    TRITON_MISSING = ""

    @triton.jit
    def row_kernel(out_ptr, in_ptr, n_cols, in_row_stride, out_row_stride,
                   OP: tl.constexpr, ACC: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_SIZE)
        mask = cols < n_cols
        # -inf in the padding lanes: max ignores them and exp(-inf - max) = 0 adds nothing to the sum.
        x = tl.load(in_ptr + row * in_row_stride + cols, mask=mask, other=-float("inf")).to(ACC)
        a = tl.max(x, axis=0)
        d = x - a
        e = tl.exp(d)
        s = tl.sum(e, axis=0)
        out_type = out_ptr.dtype.element_ty
        if OP == 0:
            tl.store(out_ptr + row * out_row_stride + cols, (e / s).to(out_type), mask=mask)
        elif OP == 1:
            tl.store(out_ptr + row * out_row_stride + cols, (d - tl.log(s)).to(out_type), mask=mask)
        else:
            # A max of +inf (a row holding +inf) or -inf (all -inf, or empty) is the row's logsumexp,
            # where d holds NaN; a NaN anywhere in the row makes it NaN (max may skip a NaN).
            infinite = (a == float("inf")) | (a == -float("inf"))
            lse = tl.where(infinite, a, a + tl.log(s))
            has_nan = tl.sum((x != x).to(tl.int32), axis=0) > 0
            tl.store(out_ptr + row, tl.where(has_nan, float("nan"), lse).to(out_type))

OP_CODES = {"softmax": 0, "log_softmax": 1, "logsumexp": 2}
# 65536 float32 values in one program already spill registers to local memory (slow, still right);
# longer rows need a looped (online) kernel, which this example is not.
MAX_BLOCK = 2**16


def num_warps(block: int) -> int:
    """The tutorial's choice: more warps for wider rows, so each thread holds fewer values."""
    return 16 if block >= 4096 else 8 if block >= 2048 else 4


def launch(op: str, x: Any, axis: int) -> Any:
    """op of x (a torch tensor) along axis through row_kernel: the axis moved last, rows contiguous."""
    import torch

    moved = x.movedim(axis, -1).contiguous()
    n = moved.shape[-1]
    block = triton.next_power_of_2(n) if n else 1
    if block > MAX_BLOCK:
        raise ValueError(f"a row of {n} entries needs a block of {block}, beyond this example kernel's "
                         f"single-block limit of {MAX_BLOCK}")
    rows = moved.reshape(math.prod(moved.shape[:-1]), n)
    reduced = op == "logsumexp"
    out = torch.empty(rows.shape[:1] if reduced else rows.shape, dtype=x.dtype, device=x.device)
    if rows.shape[0]:
        row_kernel[(rows.shape[0],)](
            out, rows, n, rows.stride(0), 1 if reduced else out.stride(0), OP=OP_CODES[op],
            ACC=tl.float64 if x.dtype == torch.float64 else tl.float32, BLOCK_SIZE=block,
            num_warps=num_warps(block))
    if reduced:
        return out.reshape(moved.shape[:-1])
    return out.reshape(moved.shape).movedim(-1, axis)


def load() -> Backend:
    try:
        import ml_dtypes
        import torch
    except ImportError as error:
        raise BackendUnavailable(f"torch is not installed ({error}); the triton backend runs its kernel "
                                 "on torch CUDA tensors") from None
    if triton is None:
        raise BackendUnavailable(f"triton is not installed ({TRITON_MISSING}); it comes with torch's CUDA "
                                 "wheels, or pip install triton (needs a CUDA GPU)")
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"triton {triton.__version__} needs a CUDA device: "
                                 "torch.cuda.is_available() is False (no GPU, or a CPU-only torch build)")

    def to_device(x: np.ndarray, device: str) -> Any:
        if x.dtype == ml_dtypes.bfloat16:
            tensor = torch.from_numpy(x.copy(order="C").view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(x.copy(order="C"))
        return tensor.to(device)

    def to_numpy(tensor: Any) -> np.ndarray:
        tensor = tensor.cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.numpy()

    def describe(device: str) -> dict[str, Any]:
        properties = torch.cuda.get_device_properties(device)
        return {"gpu": properties.name, "capability": f"{properties.major}.{properties.minor}",
                "cuda": torch.version.cuda, "triton": triton.__version__}

    return Backend(
        name="triton",
        version=triton.__version__,
        ops={op: (lambda x, axis, op=op: launch(op, x, axis)) for op in OP_CODES},
        to_device=to_device,
        to_numpy=to_numpy,
        devices=("cuda",),
        synchronize=lambda device, value: torch.cuda.synchronize(device),
        copy=torch.clone,
        describe=describe,
    )
