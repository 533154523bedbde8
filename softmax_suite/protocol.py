"""The one small protocol every backend adapter fills in: what it is and one callable per op.

Forward ops are called as op(x, axis) and VJPs as op(x, g, axis), on the backend's native
arrays (made by to_device from numpy, read back by to_numpy). An op the backend lacks is
simply absent from `ops`; the suite reports it as unsupported rather than faking it.

Attention's forms of the ops add keyword arguments, passed only where a case asks for them and
only to a backend that lists them in `options`: scale=s (a Python float: the op is of s * x) and
mask=m (a boolean array of the backend's kind, broadcastable to x, True = keep). `fully_masked`
declares what the forward ops give on a row whose every entry is masked (FULLY_MASKED).

The loss ops (cross_entropy and its VJP) take logits x of shape (N, C), classes along axis, and
always target= (N integer class indices, an array of the backend's kind) and reduction= ("none",
"mean" or "sum"); the loss's cotangent g of cross_entropy_vjp is one per row for "none" and a
scalar otherwise. Where a case sets them, they also take ignore_index= (an int), label_smoothing=
(a float) and weight= (C class weights, an array of the backend's kind in x's dtype), with the
semantics of torch.nn.functional.cross_entropy; a backend lists those it takes in `options`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from softmax_suite.dtypes import DTYPES, FLOAT8_DTYPES, STANDARD_DTYPES
from softmax_suite.ops import FORWARD_OPS, OPS, VJP_OPS

__all__ = [
    "ATTENTION_OPTIONS",
    "DTYPES",
    "FLOAT8_DTYPES",
    "FORWARD_OPS",
    "FULLY_MASKED",
    "LOSS_OPTIONS",
    "OPS",
    "OPTIONS",
    "STANDARD_DTYPES",
    "VJP_OPS",
    "Backend",
    "BackendUnavailable",
]

ATTENTION_OPTIONS = ("scale", "mask")
LOSS_OPTIONS = ("ignore_index", "label_smoothing", "weight")
OPTIONS = (*ATTENTION_OPTIONS, *LOSS_OPTIONS)
# A fully masked row's forward ops: "nan" (IEEE: 0/0; softmax and log_softmax NaN) or "zero"
# (softmax 0, log_softmax -inf: FlashAttention's and torch's SDPA's); logsumexp of an empty sum is
# -inf under both, and every VJP is 0 (a masked entry's gradient: softmax_suite.suites.masking).
FULLY_MASKED = ("nan", "zero")


class BackendUnavailable(Exception):
    """Raised by an adapter's load() when its framework is not installed or cannot start."""


def _no_sync(device: str, value: Any) -> None:
    return None


def _nothing_to_say(device: str) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class Backend:
    """A loaded backend. `devices` are present; `absent_devices` are wired but missing, with why."""

    name: str
    version: str
    ops: Mapping[str, Callable[..., Any]]
    to_device: Callable[[np.ndarray, str], Any]
    to_numpy: Callable[[Any], np.ndarray]
    devices: tuple[str, ...] = ("cpu",)
    absent_devices: Mapping[str, str] = field(default_factory=dict)
    # The dtypes it computes: the four IEEE ones unless it declares more (the float8 formats: DTYPES).
    dtypes: tuple[str, ...] = STANDARD_DTYPES
    unsupported: Mapping[tuple[str, str], str] = field(default_factory=dict)
    synchronize: Callable[[str, Any], None] = _no_sync
    copy: Callable[[Any], Any] | None = None
    # What a throughput record says of the device: threads used, GPU model and driver.
    describe: Callable[[str], Mapping[str, Any]] = _nothing_to_say
    options: tuple[str, ...] = ()
    fully_masked: str = "nan"
    # The longest row (the reduced axis) its ops take: a fused attention kernel's head dimension.
    max_length: int | None = None
    # Only finite kept entries (an exact embedding into a matmul, where 0 * inf is NaN).
    finite_only: bool = False

    def why_unsupported(self, op: str, dtype: str) -> str | None:
        """None when (op, dtype) can run; otherwise the reason, phrased for a report (the backend's own
        where it gives one)."""
        if (op, dtype) in self.unsupported:
            return self.unsupported[(op, dtype)]
        if op not in self.ops:
            return f"{self.name} has no {op}"
        if dtype not in self.dtypes:
            return f"{self.name} does not support {dtype}"
        return None

    def why_not_length(self, length: int) -> str | None:
        """None when the ops take rows of this length; otherwise the reason."""
        if self.max_length is None or length <= self.max_length:
            return None
        return f"{self.name} takes rows of at most {self.max_length} entries"

    def why_not_finite(self, finite: bool) -> str | None:
        """None when the ops take the case's kept entries (finite, or anything); otherwise the reason."""
        return None if finite or not self.finite_only else f"{self.name} takes only finite kept entries"

    def why_not_with(self, options: tuple[str, ...]) -> str | None:
        """None when the ops take these keyword arguments (OPTIONS); otherwise the reason."""
        missing = [option for option in options if option not in self.options]
        if not missing:
            return None
        return f"{self.name} takes no {' or '.join(missing)} (its adapter lists none in its options)"
